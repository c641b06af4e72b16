//! Connected-component labelling of a 3-D mask, 6- or 26-connected
//! (`shaders/ccl.wgsl`).
//!
//! GPU: union-find with atomicMin linking of roots (Playne & Hawick 2018):
//! one pass unites every foreground voxel with its lower-index foreground
//! neighbours, so each component's root is its lowest linear index. Then
//! roots are numbered 1..n in increasing index order (per-chunk counts, a
//! sequential scan, per-chunk assignment) and every voxel takes its root's
//! number. No workgroup barriers, no iteration to convergence.
//!
//! Numbering rule (GPU and reference alike): components are numbered 1..n in
//! order of their lowest linear (z-major) index; background is 0. The GPU
//! result therefore equals the reference exactly.

use super::{check_fits, launch, new_volume, upload_mask, Connectivity, GpuVolume};
use crate::error::{Error, Result};
use crate::gpu::{Arg, GpuContext, ShaderSource};

pub const SHADER: ShaderSource = crate::shader!("ccl");
/// Workgroup size of every labelling kernel.
pub const WG: u32 = 64;
/// Voxels per invocation in the renumbering passes.
pub const CHUNK: usize = 256;

uniform_params! {
    struct Params {
        d: u32,
        h: u32,
        w: u32,
        conn: u32,
        nchunks: u32,
        chunk: u32,
        _pad: [u32; 2],
    }
}

/// Labels a host mask (non-zero = foreground): (labels, number of components).
pub fn label(ctx: &GpuContext, mask: &[u8], dims: [usize; 3], conn: Connectivity) -> Result<(Vec<u32>, u32)> {
    super::Grid::isotropic(dims).validate("connected components")?;
    super::Grid::isotropic(dims).check_len("connected components", "mask", mask.len())?;
    let m = upload_mask(ctx, mask, dims, "ccl mask")?;
    let (l, n) = label_gpu(ctx, &m, conn)?;
    Ok((ctx.read_u32(&l.buf, 0, mask.len())?, n))
}

/// Labels a mask on the GPU (u32 per voxel, non-zero = foreground): returns
/// the u32 labels and the number of components (one small download).
pub fn label_gpu(ctx: &GpuContext, mask: &GpuVolume, conn: Connectivity) -> Result<(GpuVolume, u32)> {
    let dims = mask.dims;
    super::Grid::isotropic(dims).validate("connected components")?;
    check_fits(ctx, "connected components", dims, 1)?;
    let n: usize = dims.iter().product();
    let nchunks = n.div_ceil(CHUNK);
    let lab = new_volume(ctx, dims, 0, "ccl parents")?;
    let ids = new_volume(ctx, dims, 0, "ccl labels")?;
    let counts = ctx.create_storage(((nchunks + 1) * 4) as u64, "ccl chunk counts")?;
    let p = Params {
        d: dims[0] as u32,
        h: dims[1] as u32,
        w: dims[2] as u32,
        conn: conn.count(),
        nchunks: nchunks as u32,
        chunk: CHUNK as u32,
        _pad: [0; 2],
    };
    let label = format!("ccl{} {}x{}x{}", conn.count(), dims[0], dims[1], dims[2]);
    let args = [
        Arg::Whole(&mask.buf),
        Arg::Whole(&lab.buf),
        Arg::Whole(&counts),
        Arg::Whole(&ids.buf),
        Arg::Uniform(bytemuck::bytes_of(&p)),
    ];
    launch(ctx, &label, &SHADER, "ccl_init", WG, &args, n)?;
    launch(ctx, &label, &SHADER, "ccl_union", WG, &args, n)?;
    launch(ctx, &label, &SHADER, "ccl_count", WG, &args, nchunks)?;
    let scan = ctx.pipeline(&SHADER, "ccl_scan", &[("WG", WG as f64)])?;
    ctx.dispatch(&label, &scan, &args, [1, 1, 1])?;
    launch(ctx, &label, &SHADER, "ccl_assign", WG, &args, nchunks)?;
    launch(ctx, &label, &SHADER, "ccl_final", WG, &args, n)?;
    let total = ctx.read_u32(&counts, nchunks, 1)?[0];
    if total as usize > n {
        return Err(Error::Gpu { op: label, message: format!("{total} components in {n} voxels") });
    }
    Ok((ids, total))
}

/// Plain-Rust reference.
pub mod reference {
    use super::Connectivity;

    /// Breadth-first labelling; components numbered 1..n by lowest linear index.
    pub fn label(mask: &[u8], dims: [usize; 3], conn: Connectivity) -> (Vec<u32>, u32) {
        let offs = conn.offsets();
        let mut out = vec![0u32; mask.len()];
        let mut n = 0;
        let mut queue = std::collections::VecDeque::new();
        for start in 0..mask.len() {
            if mask[start] == 0 || out[start] != 0 {
                continue;
            }
            n += 1;
            out[start] = n;
            queue.push_back(start);
            while let Some(i) = queue.pop_front() {
                for j in Connectivity::neighbours(&offs, dims, i) {
                    if mask[j] != 0 && out[j] == 0 {
                        out[j] = n;
                        queue.push_back(j);
                    }
                }
            }
        }
        (out, n)
    }
}
