//! Training: datasets, augmentation, validation, the loop, checkpoints.

pub mod config;
pub mod dataset;
pub mod fit;
pub mod patch;
pub mod plot;
pub mod run;
pub mod validate;

pub use crate::metrics::instances::{score_instances, InstanceScores, InstanceTruth, InstanceValidation, Role};
pub use fit::{epoch_rng, fit, random_batch, FitSettings};
pub use patch::{dilate, foreground_iou, random_patch, Augment, Sample, Vol};
pub use plot::{plot_curves, EpochRecord};
pub use validate::{predict_volume, tile_starts, validate_sample, ValScores};
