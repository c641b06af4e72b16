//! Training: datasets, augmentation, validation, the loop, checkpoints.

pub mod patch;
pub mod plot;
pub mod validate;

pub use patch::{dilate, foreground_iou, random_patch, Augment, Sample, Vol};
pub use validate::{predict_volume, tile_starts, validate_sample};
