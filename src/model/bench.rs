//! Whole-network timings for `qcanet-gpu bench`: inference forward and one
//! training step (forward, loss, backward, Adam) at a given cube side.

use std::time::Instant;

use super::backend::LossSpec;
use super::config::NetConfig;
use super::gpu::Gpu;
use super::unet::Net;
use crate::error::Result;
use crate::gpu::{median, GpuContext, KernelTime};
use crate::ops::optim;
use crate::tensor::{CpuTensor, Shape5};

/// Medians over repetitions, after one warm-up run (pipeline compilation).
#[derive(Clone, Debug, serde::Serialize)]
pub struct NetBench {
    pub config: NetConfig,
    pub params: usize,
    /// Input (N, 1, side, side, side).
    pub batch: usize,
    pub side: usize,
    /// Inference forward op by op (batch norm with running statistics).
    pub forward_s: f64,
    /// The forward `infer` runs: batch norm folded into the convolutions
    /// ([`Net::fold_bn`], once, not timed), one fused kernel per conv + BN +
    /// ReLU, skip concatenations read in place.
    pub fused_forward_s: f64,
    pub train_step_s: f64,
    /// Convolution FLOPs of one forward pass.
    pub forward_flops: f64,
    /// Forward GFLOP/s (op by op, and fused).
    pub forward_gflops: f64,
    pub fused_forward_gflops: f64,
    /// Training step GFLOP/s, counting a step as 3 forward passes (forward,
    /// input gradient, weight gradient).
    pub train_step_gflops: f64,
    /// One more run each of the forward, the fused forward and the training
    /// step with every dispatch timestamped ([`GpuContext::start_kernel_profile`]):
    /// the kernels' own GPU time against that run's wall time. `None` where
    /// the adapter has no timestamps.
    pub kernel_time: Option<[ProfiledRun; 3]>,
    /// What the last timed forward, fused forward and training step asked
    /// of the runtime: buffers created and reused, submissions and reads.
    /// After the warm-up a run at the same shape should create none.
    pub counts: [RunCounts; 3],
}

/// Buffers and host traffic of one run (see [`GpuContext::buffer_stats`] and
/// [`GpuContext::traffic`]).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct RunCounts {
    pub buffers_created: u64,
    pub buffers_reused: u64,
    pub submits: u64,
    pub reads: u64,
}

impl RunCounts {
    fn measure(ctx: &GpuContext, f: impl FnOnce() -> Result<()>) -> Result<RunCounts> {
        let (b0, t0) = (ctx.buffer_stats(), ctx.traffic());
        f()?;
        let (b, t) = (ctx.buffer_stats().since(&b0), ctx.traffic().since(&t0));
        Ok(RunCounts { buffers_created: b.created, buffers_reused: b.reused, submits: t.submits, reads: t.reads })
    }
}

/// A run whose dispatches were timed: their summed GPU time and the run's
/// wall time (start to finished work), in seconds.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProfiledRun {
    pub kernels: KernelTime,
    pub wall_s: f64,
}

/// Times inference and one training step of a network built from `cfg`
/// (random init, random input, CE or BCE loss) at `side`³, `reps` times each.
pub fn bench_network(ctx: &GpuContext, cfg: &NetConfig, side: usize, batch: usize, reps: usize) -> Result<NetBench> {
    let shape = Shape5::new(batch, cfg.in_channels, side, side, side);
    cfg.check_input(shape)?;
    let mut net = Net::<Gpu>::init(ctx, cfg.clone(), 0)?;
    let x = ctx.upload(&CpuTensor::random(shape, 1, 0.0, 1.0))?;
    let tshape = shape.with_c(1);
    let t = CpuTensor::random(tshape, 2, 0.0, 1.0);
    let t = ctx.upload(&CpuTensor::from_vec(tshape, t.data.iter().map(|&v| (v > 0.9) as u8 as f32).collect()))?;
    let spec = if cfg.classes == 1 {
        LossSpec::Bce { pos_weight: 1.0 }
    } else {
        LossSpec::Ce { class_weights: vec![1.0, 1.0] }
    };
    let mut opt = optim::Optimizer::new(
        ctx,
        optim::OptimizerConfig::Adam(optim::AdamConfig { lr: 1e-4, ..Default::default() }),
        &net.params.iter().collect::<Vec<_>>(),
    )?;
    let reps = reps.max(1);
    let mut counts = [RunCounts::default(); 3];
    let mut fwd = Vec::new();
    for i in 0..=reps {
        let t0 = Instant::now();
        counts[0] = RunCounts::measure(ctx, || {
            let _y = net.predict(ctx, &x)?;
            ctx.sync()
        })?;
        if i > 0 {
            fwd.push(t0.elapsed().as_secs_f64());
        }
    }
    let folded = net.fold_bn(ctx)?;
    let mut fused = Vec::new();
    for i in 0..=reps {
        let t0 = Instant::now();
        counts[1] = RunCounts::measure(ctx, || {
            let _y = net.predict_folded(ctx, &folded, &x)?;
            ctx.sync()
        })?;
        if i > 0 {
            fused.push(t0.elapsed().as_secs_f64());
        }
    }
    drop(folded);
    let mut step = Vec::new();
    for i in 0..=reps {
        let t0 = Instant::now();
        counts[2] = RunCounts::measure(ctx, || {
            let l = net.train_step(ctx, &x, &t, &spec, &mut opt)?;
            ctx.read_f32(&l.buf, 0, 1).map(drop)
        })?;
        if i > 0 {
            step.push(t0.elapsed().as_secs_f64());
        }
    }
    let kernel_time = if ctx.has_timestamps() {
        let forward = profiled(ctx, || net.predict(ctx, &x).map(drop))?;
        let folded = net.fold_bn(ctx)?;
        let fused = profiled(ctx, || net.predict_folded(ctx, &folded, &x).map(drop))?;
        drop(folded);
        let step = profiled(ctx, || net.train_step(ctx, &x, &t, &spec, &mut opt).map(drop))?;
        Some([forward, fused, step])
    } else {
        None
    };
    let flops = cfg.forward_flops(shape);
    let (f, ff, s) = (median(fwd), median(fused), median(step));
    Ok(NetBench {
        config: cfg.clone(),
        params: cfg.param_count(),
        batch,
        side,
        forward_s: f,
        fused_forward_s: ff,
        train_step_s: s,
        forward_flops: flops,
        forward_gflops: flops / f / 1e9,
        fused_forward_gflops: flops / ff / 1e9,
        train_step_gflops: 3.0 * flops / s / 1e9,
        kernel_time,
        counts,
    })
}

/// The kernels' own GPU time of the work `f` records, and the wall time
/// from its start to the finished work (earlier work waited for first).
fn profiled(ctx: &GpuContext, f: impl FnOnce() -> Result<()>) -> Result<ProfiledRun> {
    ctx.sync()?;
    let t0 = Instant::now();
    ctx.start_kernel_profile()?;
    let run = f();
    let time = ctx.stop_kernel_profile();
    let wall_s = t0.elapsed().as_secs_f64();
    run?;
    Ok(ProfiledRun { kernels: time?, wall_s })
}
