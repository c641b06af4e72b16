//! Training: datasets, augmentation, validation, the loop, checkpoints.

pub mod average;
pub mod centres;
pub mod config;
pub mod dataset;
pub mod fit;
pub mod objects;
pub mod patch;
pub mod plot;
pub mod prefetch;
pub mod run;
pub mod separation;
pub mod small_nuclei;
pub mod touching;
pub mod validate;

pub use crate::metrics::instances::{score_instances, InstanceScores, InstanceTruth, InstanceValidation, Role};
pub use average::WeightAverage;
pub use fit::{epoch_rng, fit, random_batch, Centring, FitSettings};
pub use objects::Objects;
pub use patch::{dilate, foreground_iou, random_patch, random_patch_near, Augment, Patch, Sample, Vol};
pub use plot::{plot_curves, EpochRecord};
pub use separation::{loss_target, separation_weights, weighted_target, Separation};
pub use small_nuclei::{small_nucleus_weights, SmallNuclei};
pub use touching::separated_nuclei;
pub use validate::{predict_volume, tile_starts, validate_sample, ValScores};
