//! `qcanet-gpu bench` and `cargo bench`: every op case of the op table
//! ([`crate::ops::table`]) that is marked for benchmarking, on the GPU
//! against its CPU reference at the layer shapes of the QCANet networks, plus
//! whole networks and the post-processing stage.
//!
//! GPU times are medians of repeated runs (device timestamps where the
//! adapter has them). The CPU reference runs at the same shape when that
//! costs less than a budget; otherwise it runs at a smaller "check" shape with
//! the same channels, its time is scaled by the work ratio (marked `~`), and
//! the relative error is measured at that check shape on both devices and
//! held to the case's tolerance from the table (the same one the tests use).

mod ceiling;

use serde::Serialize;

use crate::error::Result;
use crate::gpu::{median, GpuContext, GpuTensor, GpuTimer, TimerKind};
use crate::ops::table::{bench_cases, Dims, OpCase};

pub use crate::ops::table::Unit;
pub use ceiling::{
    fma_ceiling, fma_values as fma_ceiling_values, reference_value as ceiling_reference_value, Ceiling,
    SHADER as CEILING_SHADER,
};

/// Settings of a benchmark run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Cube sides to run at (32 and 64 by default; 128 with `--full`).
    pub sizes: Vec<usize>,
    /// GPU repetitions (the median is reported).
    pub repeats: usize,
    /// Most floating-point operations (or bytes) the CPU reference may spend
    /// per run before it moves to a smaller check shape.
    pub cpu_budget: f64,
    /// Run only cases whose name contains one of these comma-separated texts.
    pub filter: Option<String>,
    /// Include the largest layer shapes.
    pub full: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions { sizes: vec![32, 64], repeats: 5, cpu_budget: 4e9, filter: None, full: false }
    }
}

/// One line of the results table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub case: String,
    pub shape: String,
    pub gpu_ms: f64,
    pub cpu_ms: f64,
    /// True when the CPU time was measured at `check_shape` and scaled.
    pub cpu_scaled: bool,
    pub check_shape: String,
    pub rate: f64,
    pub unit: Unit,
    pub speedup: f64,
    /// Largest relative error of any output at the check shape (NaN if any is NaN).
    pub rel_err: f64,
    /// The case's tolerance from the op table.
    pub tol: f64,
    /// Every output within `tol`, none NaN, no all-zero reference.
    pub ok: bool,
    pub timer: TimerKind,
}

fn time_gpu(ctx: &GpuContext, case: &OpCase, inputs: &[GpuTensor], repeats: usize) -> Result<f64> {
    let mut timer = GpuTimer::new(ctx);
    // Warm-up builds pipelines and allocations.
    drop((case.gpu)(ctx, inputs)?);
    ctx.sync()?;
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        timer.start(ctx)?;
        let out = (case.gpu)(ctx, inputs)?;
        times.push(timer.stop(ctx)?);
        drop(out);
    }
    Ok(median(times))
}

/// Runs one case at cube side `s`.
pub fn run_case(ctx: &GpuContext, case: &OpCase, s: usize, opts: &BenchOptions) -> Result<Row> {
    let dims = Dims::cube(s);
    let inputs = (case.inputs)(dims);
    let g: Vec<GpuTensor> = inputs.iter().map(|t| ctx.upload(t)).collect::<Result<_>>()?;
    drop(inputs);
    let gpu_s = time_gpu(ctx, case, &g, opts.repeats)?;
    drop(g);
    let work = (case.work)(dims);
    // The CPU side: full shape within budget, else the largest check side that fits.
    let mut check = s;
    while check > case.min_side && (case.work)(Dims::cube(check)) > opts.cpu_budget {
        check = (check / 2).max(case.min_side);
    }
    let compared = case.compare(ctx, Dims::cube(check), false)?;
    let cpu_s = compared.cpu_s * work / (case.work)(Dims::cube(check));
    Ok(Row {
        case: case.name(),
        shape: (case.shape)(dims),
        gpu_ms: gpu_s * 1e3,
        cpu_ms: cpu_s * 1e3,
        cpu_scaled: check != s,
        check_shape: (case.shape)(Dims::cube(check)),
        rate: work * 1e-9 / gpu_s,
        unit: case.unit,
        speedup: cpu_s / gpu_s,
        rel_err: compared.max_error(),
        tol: case.tol,
        ok: compared.passes(case.tol),
        timer: GpuTimer::new(ctx).kind(),
    })
}

/// Runs every benchmark case of the op table at every size, calling `each`
/// as rows complete. A row over its tolerance is reported, not an error (see
/// [`Row::ok`]).
pub fn run_ops(ctx: &GpuContext, opts: &BenchOptions, mut each: impl FnMut(&Row)) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let cases = bench_cases(opts.full);
    for s in &opts.sizes {
        for case in &cases {
            let name = case.name();
            if opts.filter.as_ref().is_some_and(|f| !f.split(',').any(|p| name.contains(p.trim()))) {
                continue;
            }
            if *s < case.min_side {
                continue;
            }
            if let Some(n) = case.unmet_need(ctx) {
                log::warn!("{name}: not run, the adapter lacks {n}");
                continue;
            }
            let row = run_case(ctx, case, *s, opts)?;
            each(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Table header matching [`format_row`].
pub fn table_header() -> String {
    format!(
        "{:<34} {:<24} {:>10} {:>12} {:>10} {:>9} {:>9}\n{}",
        "case",
        "shape",
        "GPU ms",
        "CPU ref ms",
        "rate",
        "speed-up",
        "rel err",
        "-".repeat(119)
    )
}

/// One table line; `~` marks a CPU time scaled from a smaller check shape,
/// `FAIL` an error over the case's tolerance.
pub fn format_row(r: &Row) -> String {
    let unit = match r.unit {
        Unit::Flop => "GFLOP/s",
        Unit::Byte => "GB/s",
    };
    format!(
        "{:<34} {:<24} {:>10.2} {:>11.1}{} {:>5.1} {:<7} {:>8.1}x {:>9.1e}{}",
        r.case,
        r.shape,
        r.gpu_ms,
        r.cpu_ms,
        if r.cpu_scaled { "~" } else { " " },
        r.rate,
        unit,
        r.speedup,
        r.rel_err,
        if r.ok { "" } else { " FAIL" }
    )
}

/// The instance stage (EDT exact and JFA, labelling, watershed, whole stage)
/// on a touching-spheres field at each side in `sizes`, as table lines.
pub fn run_post(
    ctx: &GpuContext,
    sizes: &[usize],
    reps: usize,
    mut each: impl FnMut(&str),
) -> Result<Vec<crate::postprocess::bench::BenchReport>> {
    let mut out = Vec::new();
    for &s in sizes {
        let r = match crate::postprocess::bench::bench_stages(ctx, s, reps, reps.min(3)) {
            Ok(r) => r,
            Err(e) => {
                each(&format!("{s}^3: skipped: {e}"));
                continue;
            }
        };
        for t in &r.timings {
            each(&format!(
                "{:<34} {:<24} {:>10.1} {:>12.1} {:>20.1}x",
                t.stage,
                format!("{s}^3, {} spheres", r.spheres),
                t.gpu_ms,
                t.cpu_ms,
                t.cpu_ms / t.gpu_ms
            ));
        }
        each(&format!(
            "JFA error at {s}^3: {:.4} % of voxels wrong, max {:.3} µm",
            100.0 * r.jfa_error.frac_wrong,
            r.jfa_error.max_abs
        ));
        out.push(r);
    }
    Ok(out)
}

/// One whole-network line: forward and one training step.
#[derive(Clone, Debug, Serialize)]
pub struct NetRow {
    pub network: String,
    pub side: usize,
    pub params: usize,
    pub forward_ms: f64,
    pub forward_gflops: f64,
    /// The fused inference forward (`infer`'s; see [`crate::model::bench::NetBench`]).
    pub fused_forward_ms: f64,
    pub fused_forward_gflops: f64,
    pub train_step_ms: f64,
    pub train_step_gflops: f64,
    /// Forward and training-step rates as fractions of the mean of
    /// `ceiling_gflops`.
    pub forward_of_ceiling: f64,
    pub train_step_of_ceiling: f64,
    /// The adapter's f32 FMA ceiling (GFLOP/s, [`fma_ceiling`], median of
    /// [`NET_CEILING_RUNS`]) measured just before and just after this
    /// network's timed passes: on a shared host the load moves it between
    /// runs (20–56 GFLOP/s on a shared 2-core machine), so a network is held
    /// to the ceiling of its own minutes, not to one taken at the start.
    pub ceiling_gflops: [f64; 2],
    pub peak_gpu_mib: f64,
    /// One more run of each of the forward, fused forward and training step
    /// with every dispatch timestamped: the kernels' own GPU time, that
    /// run's wall time (ms) and its dispatches; NaN and 0 without
    /// timestamps. Wall minus kernels is the overhead (launches,
    /// submissions, allocations, waits).
    pub kernel_ms: [f64; 3],
    pub profiled_wall_ms: [f64; 3],
    pub dispatches: [usize; 3],
    /// The profiled training step's kernel time split by kernel
    /// (`shader::entry`), the longest first; empty without timestamps.
    pub step_kernels: Vec<crate::gpu::KernelShare>,
    /// Buffers created and reused, submissions and reads of the last timed
    /// forward, fused forward and training step.
    pub counts: [crate::model::bench::RunCounts; 3],
}

/// Runs of the FMA-ceiling kernel before and after each network.
pub const NET_CEILING_RUNS: usize = 3;

/// Forward and one training step of the NSN and the NDN (paper sizes) at
/// 64³ (and 128³ with `full`), with peak GPU memory and each rate as a
/// fraction of the adapter's f32 FMA ceiling measured beside it
/// ([`NetRow::ceiling_gflops`]).
pub fn run_networks(ctx: &GpuContext, opts: &BenchOptions, mut each: impl FnMut(&str)) -> Result<Vec<NetRow>> {
    use crate::model::{Arch, NetConfig};
    let sides: &[usize] = if opts.full { &[64, 128] } else { &[64] };
    each(&format!(
        "\n{:<10} {:>6} {:>11} {:>12} {:>9} {:>9} {:>10} {:>9} {:>14} {:>9} {:>9} {:>14}\n{}",
        "network",
        "side",
        "params",
        "forward ms",
        "GFLOP/s",
        "ceiling",
        "fused ms",
        "GFLOP/s",
        "train step ms",
        "GFLOP/s",
        "ceiling",
        "peak GPU MiB",
        "-".repeat(133)
    ));
    let mut rows = Vec::new();
    for arch in [Arch::Nsn, Arch::Ndn] {
        let cfg = NetConfig::preset(arch);
        for &side in sides {
            ctx.sync()?;
            let before = fma_ceiling(ctx, NET_CEILING_RUNS)?.gflops;
            ctx.reset_peak_bytes();
            let b = match crate::model::bench::bench_network(ctx, &cfg, side, 1, opts.repeats.min(3)) {
                Ok(b) => b,
                Err(e) => {
                    each(&format!("{arch:?} {side}^3: skipped: {e}"));
                    continue;
                }
            };
            let peak_gpu_mib = ctx.peak_bytes() as f64 / (1 << 20) as f64;
            let after = fma_ceiling(ctx, NET_CEILING_RUNS)?.gflops;
            let ceiling = (before + after) / 2.0;
            let row = NetRow {
                network: format!("{arch:?}"),
                side,
                params: b.params,
                forward_ms: b.forward_s * 1e3,
                forward_gflops: b.forward_gflops,
                fused_forward_ms: b.fused_forward_s * 1e3,
                fused_forward_gflops: b.fused_forward_gflops,
                train_step_ms: b.train_step_s * 1e3,
                train_step_gflops: b.train_step_gflops,
                forward_of_ceiling: b.forward_gflops / ceiling,
                train_step_of_ceiling: b.train_step_gflops / ceiling,
                ceiling_gflops: [before, after],
                peak_gpu_mib,
                kernel_ms: b
                    .kernel_time
                    .as_ref()
                    .map_or([f64::NAN; 3], |k| k.each_ref().map(|r| r.kernels.seconds * 1e3)),
                profiled_wall_ms: b
                    .kernel_time
                    .as_ref()
                    .map_or([f64::NAN; 3], |k| k.each_ref().map(|r| r.wall_s * 1e3)),
                dispatches: b.kernel_time.as_ref().map_or([0; 3], |k| k.each_ref().map(|r| r.kernels.dispatches)),
                step_kernels: b.kernel_time.as_ref().map_or(Vec::new(), |k| k[2].kernels.by_kernel.clone()),
                counts: b.counts,
            };
            each(&format!(
                "{:<10} {:>6} {:>11} {:>12.0} {:>9.2} {:>8.0}% {:>10.0} {:>9.2} {:>14.0} {:>9.2} {:>8.0}% {:>14.0}",
                row.network,
                row.side,
                row.params,
                row.forward_ms,
                row.forward_gflops,
                row.forward_of_ceiling * 100.0,
                row.fused_forward_ms,
                row.fused_forward_gflops,
                row.train_step_ms,
                row.train_step_gflops,
                row.train_step_of_ceiling * 100.0,
                row.peak_gpu_mib
            ));
            if let Some(k) = &b.kernel_time {
                let part = |i: usize| {
                    format!(
                        "{:.0} of {:.0} ms ({:.0} %, {} dispatches)",
                        row.kernel_ms[i],
                        row.profiled_wall_ms[i],
                        100.0 * row.kernel_ms[i] / row.profiled_wall_ms[i],
                        row.dispatches[i]
                    )
                };
                each(&format!(
                    "{:<10} kernels' own GPU time in a profiled run: forward {}; fused {}; train step {}",
                    "",
                    part(0),
                    part(1),
                    part(2)
                ));
                // Where the training step's GPU time goes: the kernels that
                // take 90 % of it, longest first.
                let total = k[2].kernels.seconds;
                let mut shown = 0.0;
                let mut top = Vec::new();
                for s in &row.step_kernels {
                    if shown >= 0.9 * total || top.len() == 8 {
                        break;
                    }
                    shown += s.seconds;
                    top.push(format!(
                        "{} {:.0} ms ({:.0} %, {}x)",
                        s.kernel,
                        s.seconds * 1e3,
                        100.0 * s.seconds / total,
                        s.dispatches
                    ));
                }
                each(&format!("{:<10} train step by kernel: {}", "", top.join("; ")));
            }
            let c = |i: usize| {
                let c = &row.counts[i];
                format!(
                    "{} buffers created, {} reused, {} submits, {} reads",
                    c.buffers_created, c.buffers_reused, c.submits, c.reads
                )
            };
            each(&format!("{:<10} last timed run: forward {}; fused {}; train step {}", "", c(0), c(1), c(2)));
            each(&format!(
                "{:<10} f32 FMA ceiling beside it: {before:.1} GFLOP/s before, {after:.1} after (median of {} runs \
                 each); the fractions are of their mean",
                "", NET_CEILING_RUNS
            ));
            rows.push(row);
        }
    }
    Ok(rows)
}
