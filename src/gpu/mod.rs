//! The GPU runtime: adapter and device, buffers and tensors, the pipeline
//! cache and dispatch. It knows nothing of any op or network.

pub mod buffer;
pub mod context;
pub mod pipeline;
pub mod timer;

pub use buffer::{split_units, GpuTensor, Window};
pub use context::{list_adapters, no_adapter_help, AdapterSummary, ContextOptions, GpuContext};
pub use pipeline::{grid, Arg, Pipeline, ShaderSource, MAX_GRID_DIM};
pub use timer::{median, GpuTimer, TimerKind};
