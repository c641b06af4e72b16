//! qcanet-gpu: QCANet 3-D nuclear instance segmentation on any Vulkan, Metal
//! or DX12 GPU through hand-written WGSL kernels.
//!
//! Modules, each depending only on those above it:
//! - [`error`], [`tensor`], [`progress`]: error type, shapes and host tensors,
//!   progress bars or log lines for long loops
//! - [`gpu`]: runtime (device, buffers, pipeline cache, dispatch); knows no op
//! - [`ops`]: each op's WGSL kernel, CPU reference and backward; knows no network
//! - [`io`], [`preprocess`], [`synth`]: files, volume preprocessing, synthetic data
//! - [`model`]: the networks; [`train`]: losses, optimizers, loop, checkpoints
//! - [`postprocess`], [`metrics`]: instance labelling and scores
//! - [`infer`]: the end-to-end job
//! - [`bench`](mod@bench): times the op table ([`ops::table`]), the instance stage and
//!   whole networks
//!
//! The library knows no command line: `src/main.rs` and `src/cli/` do.

pub mod bench;
pub mod error;
// `#[macro_use]`: `uniform_params!` (gpu::params) is in scope in the modules below.
#[macro_use]
pub mod gpu;
pub mod infer;
pub mod io;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod postprocess;
pub mod preprocess;
pub mod progress;
pub mod synth;
pub mod tensor;
pub mod train;

pub use error::{Error, Result};
