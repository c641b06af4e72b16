//! Shared test helpers: one GPU context per test binary, random tensors,
//! NaN-poisoned outputs, the relative-error check, central finite
//! differences, checks not run for lack of a capability, median timings,
//! a folder's file names, the program to run.
#![allow(dead_code)]

use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use qcanet_gpu::gpu::{median, ContextOptions, GpuContext, GpuTensor};
use qcanet_gpu::ops::variants::Need;
use qcanet_gpu::tensor::{rel_err, CpuTensor, Shape5};

/// A context from `o` whose new tensors are NaN-poisoned when `poison` is
/// set, so an output element a kernel fails to write shows up as NaN.
pub fn context(o: &ContextOptions, poison: bool) -> GpuContext {
    let c =
        GpuContext::new(o).unwrap_or_else(|e| panic!("GPU tests need an adapter (install mesa-vulkan-drivers): {e}"));
    c.set_poison_new_tensors(poison);
    c
}

/// The GPU context for this test binary (adapter from `QCANET_ADAPTER`),
/// with NaN-poisoned new tensors.
pub fn ctx() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| context(&ContextOptions::from_env(), true))
}

/// A context whose storage bindings are capped at `bytes`, to force the
/// split path for tensors larger than one binding on small shapes (new
/// tensors NaN-poisoned).
pub fn capped_ctx(bytes: u64) -> GpuContext {
    let mut o = ContextOptions::from_env();
    o.max_binding_bytes = Some(bytes);
    context(&o, true)
}

/// A fresh context without NaN poisoning, for timings (so the shared
/// [`ctx`] stays poisoned).
pub fn unpoisoned_ctx() -> GpuContext {
    context(&ContextOptions::from_env(), false)
}

/// A tensor of `shape` filled with NaN, to pass as an output that a kernel
/// must overwrite completely.
pub fn poisoned(ctx: &GpuContext, shape: Shape5) -> GpuTensor {
    ctx.filled(shape, f32::NAN, "poisoned").expect("poisoned tensor")
}

/// Says that a check is not run because `ctx` lacks `need`, and fails
/// where that would skip a check silently: a CPU adapter (lavapipe, where
/// the tests run) offers every capability but cooperative matrices, and is
/// by definition not a GPU adapter (variants that prefer one are refused
/// there, which the caller checks).
#[track_caller]
pub fn not_run_for_lack_of(ctx: &GpuContext, need: Need, what: &str) {
    assert!(
        !ctx.is_cpu_adapter() || matches!(need, Need::CoopMatrix16F16 | Need::GpuAdapter),
        "{what}: not run, {} lacks {need} (a CPU adapter must lack only cooperative matrices)",
        ctx.describe()
    );
    println!("{what}: not run, the adapter lacks {need}");
}

/// Random values in [-1, 1), reproducible from `seed`.
pub fn rand(shape: Shape5, seed: u64) -> CpuTensor {
    CpuTensor::random(shape, seed, -1.0, 1.0)
}

pub fn up(ctx: &GpuContext, t: &CpuTensor) -> GpuTensor {
    ctx.upload(t).expect("upload")
}

pub fn down(ctx: &GpuContext, t: &GpuTensor) -> CpuTensor {
    ctx.download(t).expect("download")
}

/// Asserts `‖gpu − ref‖ / ‖ref‖ < tol` (NaN fails), and that the reference
/// is not trivially zero so the comparison means something.
#[track_caller]
pub fn assert_close(what: &str, gpu: &CpuTensor, reference: &CpuTensor, tol: f64) {
    assert_eq!(gpu.shape, reference.shape, "{what}: shapes differ");
    assert!(reference.data.iter().any(|&v| v != 0.0), "{what}: reference is all zeros, the test would prove nothing");
    let e = rel_err(&gpu.data, &reference.data);
    assert!(e < tol, "{what}: relative error {e:.3e} (tolerance {tol:.1e})");
}

/// Checks the analytic gradient `grad` of the scalar `f` at `x` against
/// central differences in f64: element i of the numerical gradient is
/// `(f(x⁺) − f(x⁻)) / (x⁺ᵢ − x⁻ᵢ)` with `x±ᵢ = xᵢ ± step` rounded to f32 (the
/// step actually taken, so rounding of `xᵢ ± step` biases nothing). Asserts
/// `‖grad − fd‖ / ‖fd‖ < tol` (NaN fails, an all-zero `fd` fails); the panic
/// names `what` and the element with the largest difference.
#[track_caller]
pub fn fd_check(what: &str, grad: &CpuTensor, x: &CpuTensor, step: f32, tol: f64, f: impl Fn(&CpuTensor) -> f64) {
    assert_eq!(grad.shape, x.shape, "{what}: gradient and argument shapes differ");
    let fd: Vec<f64> = (0..x.data.len())
        .map(|i| {
            let (mut p, mut m) = (x.clone(), x.clone());
            p.data[i] += step;
            m.data[i] -= step;
            let h = p.data[i] as f64 - m.data[i] as f64;
            assert!(h > 0.0, "{what}: step {step} vanishes at element {i} (value {})", x.data[i]);
            (f(&p) - f(&m)) / h
        })
        .collect();
    let diff = |i: usize| (grad.data[i] as f64 - fd[i]).abs();
    let num: f64 = (0..fd.len()).map(|i| diff(i).powi(2)).sum();
    let den: f64 = fd.iter().map(|v| v * v).sum();
    assert!(den != 0.0, "{what}: finite differences are all zero, the test would prove nothing");
    let e = (num / den).sqrt();
    if e.is_nan() || e >= tol {
        let worst = (0..fd.len()).max_by(|&a, &b| diff(a).total_cmp(&diff(b))).unwrap();
        panic!(
            "{what}: finite-difference relative error {e:.3e} (tolerance {tol:.1e}, step {step:e}); largest \
             difference at element {worst} of {}: analytic {} vs central difference {:.7e}",
            x.shape, grad.data[worst], fd[worst]
        );
    }
}

/// Median wall time in seconds of `reps` runs of `f`, each followed by
/// `ctx.sync()`, after one untimed warm-up run (pipelines built, buffers
/// allocated).
pub fn time_median(ctx: &GpuContext, reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    ctx.sync().unwrap();
    let times = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            ctx.sync().unwrap();
            s.elapsed().as_secs_f64()
        })
        .collect();
    median(times)
}

/// The names in folder `d`, sorted (hidden and temporary files included).
pub fn files_in(d: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

/// Runs the op-table cases that `pick` selects at `dims` on `ctx` (NaN
/// poisoned or not, as `ctx` is), twice, and asserts each case's tolerance;
/// returns how many ran, so a caller can assert it picked some.
#[track_caller]
pub fn assert_table_cases(
    ctx: &GpuContext,
    dims: qcanet_gpu::ops::table::Dims,
    pick: impl Fn(&qcanet_gpu::ops::table::OpCase) -> bool,
) -> usize {
    let mut n = 0;
    for case in qcanet_gpu::ops::table::table().into_iter().filter(|c| pick(c)) {
        let r = case.compare(ctx, dims, true).unwrap_or_else(|e| panic!("{} at {dims}: {e}", case.name()));
        assert!(
            r.passes(case.tol),
            "{} at {dims}: relative errors {:?} (tolerance {:.1e}) {}",
            case.name(),
            r.errors,
            case.tol,
            r.problems.join("; ")
        );
        n += 1;
    }
    n
}

/// The `qcanet-gpu` executable for tests that run the command line: cargo's
/// build of it, or `$QCANET_TEST_BIN` where the test binaries were carried
/// without their build tree (`tools/device-check.sh` on a lent GPU).
pub fn exe() -> std::path::PathBuf {
    std::env::var_os("QCANET_TEST_BIN").map_or_else(|| env!("CARGO_BIN_EXE_qcanet-gpu").into(), Into::into)
}
