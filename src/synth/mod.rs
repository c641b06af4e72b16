//! Synthetic embryo generator: nuclei, ground truth, noise.
