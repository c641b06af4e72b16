//! Training: datasets, augmentation, losses, optimizers, loop, checkpoints.
