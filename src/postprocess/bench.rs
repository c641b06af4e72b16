//! Timings of each GPU stage of the instance step against its CPU reference,
//! on a touching-spheres field (for `qcanet-gpu bench` and the report).
//!
//! GPU times are GPU-resident: inputs uploaded once, each repetition records
//! the stage and waits for it (`ctx.sync()`), no download (the watershed reads
//! back its small convergence flags, as it must). CPU times run the
//! `reference` functions. Medians over `reps`.

use std::time::Instant;

use super::edt::{self, EdtError, EdtMethod};
use super::{ccl, spheres, upload_mask, watershed, Connectivity, Grid, InstanceOptions};
use crate::error::Result;
use crate::gpu::{median, GpuContext};

/// One stage at one size.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StageTiming {
    pub stage: String,
    pub dims: [usize; 3],
    pub gpu_ms: f64,
    pub cpu_ms: f64,
    pub reps: usize,
}

/// All stages at one size, plus the JFA error against the exact EDT.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchReport {
    pub adapter: String,
    pub spheres: usize,
    pub timings: Vec<StageTiming>,
    pub jfa_error: EdtError,
}

fn time_ms(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(t))
}

/// The sphere field used by the benchmark: spacing z 1.75, y 0.8, x 0.8 µm,
/// radii 5–9 µm, as many spheres (≤ 400) as fit.
pub fn bench_field(size: usize, seed: u64) -> spheres::SphereField {
    let grid = Grid::new([size; 3], [1.75, 0.8, 0.8]);
    spheres::touching_spheres(&grid, 400, (5.0, 9.0), seed)
}

/// Times EDT (exact, JFA), labelling (26-connected) and watershed
/// (6-connected) and the whole stage at `size`³; `cpu_reps` may be smaller
/// than `reps` since the references are slow.
pub fn bench_stages(ctx: &GpuContext, size: usize, reps: usize, cpu_reps: usize) -> Result<BenchReport> {
    let f = bench_field(size, 7);
    let grid = f.grid;
    let dims = grid.dims;
    let gmask = upload_mask(ctx, &f.mask, dims, "bench mask")?;
    let gdet = upload_mask(ctx, &f.markers, dims, "bench markers")?;
    let mut timings = Vec::new();
    let mut push = |stage: &str, gpu_ms: f64, cpu_ms: f64| {
        log::info!("{stage} {dims:?}: GPU {gpu_ms:.1} ms, CPU {cpu_ms:.1} ms");
        timings.push(StageTiming { stage: stage.into(), dims, gpu_ms, cpu_ms, reps });
    };

    // Warm up pipelines once.
    let exact = edt::edt_gpu(ctx, &gmask, &grid, EdtMethod::Exact)?;
    ctx.sync()?;
    let g = time_ms(reps, || {
        edt::edt_gpu(ctx, &gmask, &grid, EdtMethod::Exact)?;
        ctx.sync()
    })?;
    let mut ref_edt = Vec::new();
    let c = time_ms(cpu_reps, || {
        ref_edt = edt::reference::edt(&f.mask, &grid);
        Ok(())
    })?;
    push("edt_exact", g, c);

    let jfa = edt::edt_gpu(ctx, &gmask, &grid, EdtMethod::Jfa)?;
    ctx.sync()?;
    let g = time_ms(reps, || {
        edt::edt_gpu(ctx, &gmask, &grid, EdtMethod::Jfa)?;
        ctx.sync()
    })?;
    push("edt_jfa", g, c);
    let jfa_host = ctx.read_f32(&jfa.buf, 0, grid.numel())?;
    let jfa_error = edt::compare(&jfa_host, &ref_edt, 1e-4);

    let (markers, _) = ccl::label_gpu(ctx, &gdet, Connectivity::TwentySix)?;
    let g = time_ms(reps, || {
        ccl::label_gpu(ctx, &gmask, Connectivity::TwentySix)?;
        ctx.sync()
    })?;
    let c = time_ms(cpu_reps, || {
        ccl::reference::label(&f.mask, dims, Connectivity::TwentySix);
        Ok(())
    })?;
    push("ccl26", g, c);

    let g = time_ms(reps, || {
        watershed::watershed_gpu(ctx, &exact, true, &markers, &gmask, Connectivity::Six)?;
        ctx.sync()
    })?;
    let (ref_markers, _) = ccl::reference::label(&f.markers, dims, Connectivity::TwentySix);
    let surface: Vec<f32> = ref_edt.iter().map(|&d| -d).collect();
    let c = time_ms(cpu_reps, || {
        watershed::reference::watershed(&surface, &ref_markers, &f.mask, dims, Connectivity::Six);
        Ok(())
    })?;
    push("watershed6", g, c);

    let opts = InstanceOptions::default();
    let g = time_ms(reps, || super::qcanet_instances(ctx, &f.mask, &f.markers, &grid, &opts).map(|_| ()))?;
    let c = time_ms(cpu_reps, || super::reference_instances(&f.mask, &f.markers, &grid, &opts).map(|_| ()))?;
    push("qcanet_instances (host to host)", g, c);

    Ok(BenchReport { adapter: ctx.describe(), spheres: f.count(), timings, jfa_error })
}
