//! End-to-end inference: sliding-window tiles, blending, post-processing, outputs.
//!
//! - [`tiles`]: the [`Predictor`] trait, tile planning and blended sliding-window prediction.
//! - [`pipeline`]: one volume through QCANet (isotropic z, normalisation, NSN, NDN,
//!   threshold, marker watershed, criteria) and the NSN-only baseline.
//! - [`tta`]: test-time augmentation (mirror images of each tile, averaged).
//! - [`predictors`]: networks as predictors, loading with an architecture check, finding weights.
//! - [`job`]: inputs, shards, output names, skipping complete outputs, atomic writes, the job driver.
//! - [`figure`]: the method-comparison figure.

pub mod calibrate;
pub mod figure;
pub mod job;
pub mod pipeline;
pub mod predictors;
pub mod tiles;
pub mod tta;

pub use job::{run_job, JobOptions, JobReport, Outputs, Shard};
pub use pipeline::{segment, SegmentOptions, Segmentation, Stage};
pub use tiles::{predict_sliding, AxisPlan, Predictor, TilePlan};
