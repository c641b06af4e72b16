//! One module per command: its clap arguments and a `run` that calls the library.

pub mod bench;
pub mod calibrate;
pub mod devices;
pub mod eval;
pub mod figure;
pub mod infer;
pub mod postprocess;
pub mod synth;
pub mod train;

use qcanet_gpu::gpu::{ContextOptions, GpuContext};

/// Options shared by every command.
pub struct Global {
    pub adapter: Option<String>,
}

impl Global {
    /// Opens the GPU chosen by `--adapter`, else `QCANET_ADAPTER`, else the
    /// high-performance adapter.
    pub fn context(&self) -> anyhow::Result<GpuContext> {
        let mut o = ContextOptions::from_env();
        if self.adapter.is_some() {
            o.adapter = self.adapter.clone();
        }
        let ctx = GpuContext::new(&o)?;
        log::info!("using {}", ctx.describe());
        Ok(ctx)
    }
}
