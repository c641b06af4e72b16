//! Shared test helpers: one GPU context per test binary, random tensors,
//! NaN-poisoned outputs, the relative-error check, a folder's file names.
#![allow(dead_code)]

use std::path::Path;
use std::sync::OnceLock;

use qcanet_gpu::gpu::{ContextOptions, GpuContext, GpuTensor};
use qcanet_gpu::tensor::{rel_err, CpuTensor, Shape5};

/// The GPU context for this test binary (adapter from `QCANET_ADAPTER`).
pub fn ctx() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| {
        let c = GpuContext::new(&ContextOptions::from_env())
            .unwrap_or_else(|e| panic!("GPU tests need an adapter (install mesa-vulkan-drivers): {e}"));
        c.set_poison_new_tensors(true);
        c
    })
}

/// A context whose storage bindings are capped at `bytes`, to force the
/// split path for tensors larger than one binding on small shapes.
pub fn capped_ctx(bytes: u64) -> GpuContext {
    let mut o = ContextOptions::from_env();
    o.max_binding_bytes = Some(bytes);
    let c = GpuContext::new(&o).expect("GPU adapter");
    c.set_poison_new_tensors(true);
    c
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

/// The names in folder `d`, sorted (hidden and temporary files included).
pub fn files_in(d: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}
