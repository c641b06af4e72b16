//! End-to-end inference: sliding-window tiles, blending, post-processing, outputs.
//!
//! - [`tiles`]: the [`Predictor`] trait, tile planning and blended sliding-window prediction.
//! - [`job`]: inputs, shards, output names, skipping complete outputs, atomic writes.
//! - [`figure`]: the method-comparison figure.

pub mod figure;
pub mod job;
pub mod tiles;

pub use job::{Outputs, Shard};
pub use tiles::{predict_sliding, AxisPlan, Predictor, TilePlan};
