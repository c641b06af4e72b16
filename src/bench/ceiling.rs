//! The adapter's f32 FMA ceiling: the rate of a kernel that does nothing but
//! independent fused multiply-adds (`shaders/fma_ceiling.wgsl`), the most any
//! f32 kernel can reach on this adapter and driver right now. `bench`
//! reports each whole network's rate as a fraction of it, so a figure from
//! lavapipe on 2 shared cores and one from a data-centre GPU read the same
//! way.

use crate::error::Result;
use crate::gpu::{median, Arg, GpuContext, GpuTimer, ShaderSource};
use crate::shader;

/// The ceiling kernel.
pub const SHADER: ShaderSource = shader!("fma_ceiling");

/// Invocations per workgroup.
const WG: u32 = 64;
/// fma iterations per invocation (64 FLOPs each, see the shader).
const ITERS: u32 = 1024;
/// FLOPs of one invocation.
const FLOPS_PER_INVOCATION: f64 = ITERS as f64 * 64.0;
/// The dispatch grows until one run lasts at least this long, so launch
/// overhead does not count.
const MIN_RUN_S: f64 = 0.05;
/// Most workgroups in one dimension of a dispatch (WebGPU's default limit).
const MAX_GROUPS: u32 = 65_535;

/// The measured ceiling.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Ceiling {
    /// Median rate in GFLOP/s.
    pub gflops: f64,
    /// Workgroups of the measured dispatch.
    pub workgroups: u32,
    /// Median time of one dispatch in ms.
    pub run_ms: f64,
}

/// Measures the f32 FMA ceiling: doubles the dispatch from 64 workgroups
/// until one run takes at least 50 ms (or the dispatch reaches 65,535
/// workgroups), then reports the median rate of `repeats` runs.
pub fn fma_ceiling(ctx: &GpuContext, repeats: usize) -> Result<Ceiling> {
    let p = pipeline(ctx)?;
    let out = ctx.create_storage(MAX_GROUPS as u64 * WG as u64 * 4, "fma_ceiling out")?;
    let mut timer = GpuTimer::new(ctx);
    let mut run = |groups: u32| -> Result<f64> {
        timer.start(ctx)?;
        ctx.dispatch("fma_ceiling", &p, &[Arg::Whole(&out)], [groups, 1, 1])?;
        timer.stop(ctx)
    };
    let mut groups = 64u32;
    run(groups)?; // warm-up: pipeline built
    while groups < MAX_GROUPS && run(groups)? < MIN_RUN_S {
        groups = (groups * 2).min(MAX_GROUPS);
    }
    let times: Vec<f64> = (0..repeats.max(1)).map(|_| run(groups)).collect::<Result<_>>()?;
    let t = median(times);
    let flops = groups as f64 * WG as f64 * FLOPS_PER_INVOCATION;
    Ok(Ceiling { gflops: flops / t / 1e9, workgroups: groups, run_ms: t * 1e3 })
}

fn pipeline(ctx: &GpuContext) -> Result<std::sync::Arc<crate::gpu::Pipeline>> {
    ctx.pipeline(&SHADER, "fma_ceiling", &[("WG", WG as f64), ("ITERS", ITERS as f64)])
}

/// Runs the ceiling kernel once over `groups` workgroups and returns each
/// invocation's output (for checking it against [`reference_value`]).
pub fn fma_values(ctx: &GpuContext, groups: u32) -> Result<Vec<f32>> {
    let p = pipeline(ctx)?;
    let n = groups as usize * WG as usize;
    let out = ctx.create_storage(n as u64 * 4, "fma_ceiling out")?;
    ctx.fill(&out, f32::NAN)?;
    ctx.dispatch("fma_ceiling", &p, &[Arg::Whole(&out)], [groups, 1, 1])?;
    ctx.read_f32(&out, 0, n)
}

/// What invocation `i` of the ceiling kernel writes, in f64.
pub fn reference_value(i: u32) -> f64 {
    let s = f64::from(i & 255) * 1e-3;
    let start = [s, s + 0.1, s + 0.2, s + 0.3];
    let chain =
        |offset: f64| -> [f64; 4] { start.map(|v| (0..2 * ITERS).fold(v + offset, |acc, _| acc * 0.999 + 0.5)) };
    let dot = |x: [f64; 4], y: [f64; 4]| x.iter().zip(&y).map(|(a, b)| a * b).sum::<f64>();
    dot(chain(0.0), chain(1.0)) + dot(chain(2.0), chain(3.0))
}
