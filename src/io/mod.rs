//! File formats: TIFF stacks (read/write, voxel size), weights (safetensors), atomic writes.
