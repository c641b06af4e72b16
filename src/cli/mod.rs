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
use qcanet_gpu::ops::variants::{self, Need};

/// Refuses to write over an input or, without `overwrite`, over an existing
/// file (`postprocess` and `figure`; `infer`, `calibrate`, `synth` and
/// `train` write folders and have rules of their own).
pub fn check_output(out: &std::path::Path, inputs: &[&std::path::Path], overwrite: bool) -> anyhow::Result<()> {
    qcanet_gpu::io::refuse_input(out, inputs)?;
    if out.exists() && !overwrite {
        anyhow::bail!("{} exists; pass --overwrite to replace it", out.display());
    }
    Ok(())
}

/// Environment variable with kernel choices, as `--gpu-kernel` (read here,
/// once, when a command opens the GPU).
pub const ENV_GPU_KERNEL: &str = "QCANET_GPU_KERNEL";

/// Options shared by every command.
pub struct Global {
    pub adapter: Option<String>,
    /// `--gpu-kernel OP=VARIANT` choices.
    pub gpu_kernel: Vec<String>,
}

impl Global {
    /// Opens the GPU chosen by `--adapter`, else `QCANET_ADAPTER`, else the
    /// high-performance adapter, with the kernel variants forced by
    /// `QCANET_GPU_KERNEL` and then `--gpu-kernel` (checked here: a wrong
    /// name fails before any work).
    pub fn context(&self) -> anyhow::Result<GpuContext> {
        let mut o = ContextOptions::from_env();
        if self.adapter.is_some() {
            o.adapter = self.adapter.clone();
        }
        let env = std::env::var(ENV_GPU_KERNEL).unwrap_or_default();
        for s in std::iter::once(env.as_str()).chain(self.gpu_kernel.iter().map(String::as_str)) {
            for (op, v) in variants::parse_choices(s)? {
                o.kernels.retain(|(o2, _)| *o2 != op);
                o.kernels.push((op, v));
            }
        }
        // A forced variant that needs cooperative matrices opens the device with them.
        o.cooperative_matrix |=
            o.kernels.iter().any(|(op, v)| variants::needs_of(op, v).contains(&Need::CoopMatrix16F16));
        let ctx = GpuContext::new(&o)?;
        variants::check_choices(&ctx)?;
        log::info!("using {}", ctx.describe());
        let chosen: Vec<String> = variants::chosen(&ctx)?.iter().map(|(op, v)| format!("{op} {v}")).collect();
        log::info!("kernel variants: {}", chosen.join(", "));
        Ok(ctx)
    }
}

/// Numbers separated by commas (or spaces), e.g. "0.2,0.3"; `what` names the
/// setting in the error.
pub fn numbers<T: std::str::FromStr>(s: &str, what: &str) -> anyhow::Result<Vec<T>> {
    s.split([',', ' '])
        .filter(|p| !p.trim().is_empty())
        .map(|p| p.trim().parse::<T>().map_err(|_| anyhow::anyhow!("{what}: '{p}' is not a number")))
        .collect()
}

/// `--min-volume`: a finite number of µm³, 0 or more.
pub fn parse_min_volume(s: &str) -> Result<f64, String> {
    let v = s.trim().parse::<f64>().map_err(|_| format!("'{s}': expected a volume in µm³, 0 or more"))?;
    qcanet_gpu::postprocess::check_min_volume(v).map_err(|e| format!("{e} (0 keeps every object)"))?;
    Ok(v)
}
