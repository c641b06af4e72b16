//! qcanet-gpu: QCANet 3-D nuclear instance segmentation on any Vulkan, Metal
//! or DX12 GPU through hand-written WGSL kernels.
//!
//! Modules, lower ones knowing nothing of higher ones:
//! - [`gpu`]: runtime (device, buffers, pipeline cache, dispatch)
//! - [`tensor`]: shapes and host tensors
//! - [`ops`]: each op's WGSL kernel, CPU reference and backward

pub mod error;
pub mod gpu;
pub mod ops;
pub mod tensor;

pub use error::{Error, Result};
