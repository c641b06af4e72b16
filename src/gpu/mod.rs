//! The GPU runtime: adapter and device, buffers and tensors, the pipeline
//! cache and dispatch, and the field layouts of uniform-parameter structs
//! ([`params`]: `uniform_params!`). It knows nothing of any op or network.

// `#[macro_use]`: `uniform_params!` stays in textual scope after this module.
#[macro_use]
pub mod params;
pub mod buffer;
pub mod context;
pub mod pipeline;
pub mod pool;
pub mod profile;
pub mod timer;

pub use buffer::{split_units, DType, GpuTensor, Window};
pub use context::{list_adapters, no_adapter_help, AdapterSummary, ContextOptions, GpuContext, Traffic};
pub(crate) use params::{layout, UniformParams};
pub use params::{Field, ParamLayout};
pub use pipeline::{grid, Arg, Pipeline, ShaderSource, MAX_GRID_DIM};
pub use pool::BufferStats;
pub use profile::{KernelShare, KernelTime};
pub use timer::{median, GpuTimer, TimerKind};
