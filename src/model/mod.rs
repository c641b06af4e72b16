//! Networks built from ops: the NSN / NDN / 3-D U-Net family.
//!
//! One encoder–decoder ([`Layout`]) covers all three; [`NetConfig::preset`]
//! gives the published settings.

pub mod config;

pub use config::{Arch, Block, Cbr, Layout, NetConfig, TensorSpec};
pub mod backend;
pub mod bench;
pub mod cpu;
pub mod gpu;
pub mod safetensors_file;
pub mod unet;
pub mod weights;

pub use backend::{Backend, LossSpec};
pub use bench::{bench_network, NetBench};
pub use cpu::Cpu;
pub use gpu::Gpu;
pub use unet::{BlockTape, Folded, Net, Tape};
pub use weights::{Network, WeightsMeta};
