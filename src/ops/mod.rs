//! Neural-network ops. Each op module holds its WGSL kernel (a file under
//! `shaders/`), its GPU forward and backward, its shape rules, and a
//! `reference` module: a plain-Rust CPU version (f64 accumulation) that the
//! tests hold the kernels to. Ops know nothing of any network.

pub mod activation;
pub mod batchnorm;
pub mod concat;
pub mod conv3d;
pub mod conv_transpose3d;
pub mod elementwise;
pub mod loss;
pub mod optim;
pub mod pool;
pub mod reduce;
pub mod softmax;

use crate::gpu::ShaderSource;

/// Every op shader as its pipelines compile it (prelude included where a
/// shader uses one), for checks that need no GPU (`tests/shaders_naga.rs`).
pub const SHADERS: &[ShaderSource] = &[
    batchnorm::SHADER,
    conv3d::SHADER,
    conv_transpose3d::SHADER,
    elementwise::SHADER,
    loss::SHADER,
    optim::SHADER,
    pool::SHADER,
    reduce::SHADER,
    softmax::SHADER,
];
