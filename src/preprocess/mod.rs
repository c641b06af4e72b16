//! Volume preprocessing shared by training and inference: z-resampling to isotropic voxels, intensity normalisation.
