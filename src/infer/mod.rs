//! End-to-end inference: sliding-window tiles, blending, post-processing, outputs.
//!
//! - [`tiles`]: the [`Predictor`] trait, tile planning and blended sliding-window prediction.

pub mod tiles;

pub use tiles::{predict_sliding, AxisPlan, Predictor, TilePlan};
