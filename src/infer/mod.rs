//! End-to-end inference: sliding-window tiles, blending, post-processing, outputs.
