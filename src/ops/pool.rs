//! Max-pool 2×2×2 with stride 2 (`shaders/pool.wgsl`), like PyTorch's
//! `MaxPool3d(2)`: each output side is `floor(side / 2)`, so on an odd side
//! the last input plane/row/column is dropped (its gradient is 0). A side
//! smaller than 2 is an error. The forward pass keeps the argmax tap
//! (0..8, `a*4 + b*2 + c` for window offset (a, b, c) in z, y, x) of every
//! output voxel for the backward pass. Ties: the first maximum in z, y, x
//! order wins, on the GPU and in the reference alike.
//!
//! Tensors larger than one storage binding are processed in groups of whole
//! (sample, channel) volumes.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{grid, split_units, Arg, GpuContext, GpuTensor, ShaderSource};
use crate::tensor::Shape5;

pub const SHADER: ShaderSource = crate::shader!("pool");
/// Workgroup size of both kernels.
pub const WG: u32 = 256;

/// The argmax of every output voxel of a max-pool forward pass (u32 per
/// output voxel, N, C, D, H, W order), with the shapes it belongs to.
#[derive(Clone, Debug)]
pub struct MaxPoolIndices {
    pub buf: Arc<wgpu::Buffer>,
    pub in_shape: Shape5,
    pub out_shape: Shape5,
}

uniform_params! {
    #[derive(Default)]
    struct Params {
        planes: u32,
        d: u32,
        h: u32,
        w: u32,
        od: u32,
        oh: u32,
        ow: u32,
        x_base: u32,
        y_base: u32,
        i_base: u32,
        _pad: [u32; 2],
    }
}

/// `(N, C, floor(D/2), floor(H/2), floor(W/2))`; an error if a side is below 2.
pub fn output_shape(x: Shape5) -> Result<Shape5> {
    if x.d < 2 || x.h < 2 || x.w < 2 || x.n == 0 || x.c == 0 {
        return Err(Error::shape(
            "max_pool 2x2x2",
            format!("input {x} needs every spatial side >= 2 (and non-empty N, C) to pool by 2"),
        ));
    }
    Ok(Shape5::new(x.n, x.c, x.d / 2, x.h / 2, x.w / 2))
}

fn params(x: Shape5, y: Shape5, planes: usize, bases: [u32; 3]) -> Params {
    Params {
        planes: planes as u32,
        d: x.d as u32,
        h: x.h as u32,
        w: x.w as u32,
        od: y.d as u32,
        oh: y.h as u32,
        ow: y.w as u32,
        x_base: bases[0],
        y_base: bases[1],
        i_base: bases[2],
        _pad: [0; 2],
    }
}

/// Max-pool forward: the pooled tensor and the argmax of each output voxel.
pub fn forward(ctx: &GpuContext, x: &GpuTensor) -> Result<(GpuTensor, MaxPoolIndices)> {
    let xs = x.shape;
    let ys = output_shape(xs)?;
    let y = ctx.empty(ys, "max_pool y")?;
    let ibuf = ctx.create_storage_uncleared(ys.numel() as u64 * 4, &format!("max_pool indices {ys}"))?;
    if ctx.poison_new_tensors() {
        // No tap (0..8): an index the kernel fails to write shows up.
        ctx.fill_pattern(&ibuf, u32::MAX.to_le_bytes())?;
    }
    let pipeline = ctx.pipeline(&SHADER, "forward", &[("WG", WG as f64)])?;
    let (si, so) = (xs.spatial(), ys.spatial());
    let label = format!("max_pool forward {xs} -> {ys}");
    for g in split_units(xs.n * xs.c, si, ctx.max_window_elems(), "max_pool forward")? {
        let wx = x.window(ctx, g.start * si, g.len() * si)?;
        let wy = y.window(ctx, g.start * so, g.len() * so)?;
        let wi = ctx.window(&ibuf, g.start * so, g.len() * so)?;
        let p = params(xs, ys, g.len(), [wx.base, wy.base, wi.base]);
        ctx.dispatch(
            &label,
            &pipeline,
            &[Arg::Buf(&wx), Arg::Buf(&wy), Arg::Buf(&wi), Arg::Uniform(bytemuck::bytes_of(&p))],
            grid(((g.len() * so) as u64).div_ceil(WG as u64)),
        )?;
    }
    Ok((y, MaxPoolIndices { buf: ibuf, in_shape: xs, out_shape: ys }))
}

/// Max-pool backward: `dx` has `idx.in_shape`; each output gradient goes to
/// the voxel that was the maximum of its window, every other voxel gets 0.
pub fn backward(ctx: &GpuContext, idx: &MaxPoolIndices, dy: &GpuTensor) -> Result<GpuTensor> {
    let (xs, ys) = (idx.in_shape, idx.out_shape);
    if dy.shape != ys || output_shape(xs)? != ys {
        return Err(Error::shape(
            "max_pool backward",
            format!("gradient {} does not match the pooled shape {ys} of input {xs}", dy.shape),
        ));
    }
    let dx = ctx.empty(xs, "max_pool dx")?;
    let pipeline = ctx.pipeline(&SHADER, "backward", &[("WG", WG as f64)])?;
    let (si, so) = (xs.spatial(), ys.spatial());
    let label = format!("max_pool backward {ys} -> {xs}");
    for g in split_units(xs.n * xs.c, si, ctx.max_window_elems(), "max_pool backward")? {
        let wdx = dx.window(ctx, g.start * si, g.len() * si)?;
        let wdy = dy.window(ctx, g.start * so, g.len() * so)?;
        let wi = ctx.window(&idx.buf, g.start * so, g.len() * so)?;
        let p = params(xs, ys, g.len(), [wdx.base, wdy.base, wi.base]);
        ctx.dispatch(
            &label,
            &pipeline,
            &[
                Arg::Buf(&wdy),
                Arg::Buf(&wdy),
                Arg::Buf(&wi),
                Arg::Uniform(bytemuck::bytes_of(&p)),
                Arg::Buf(&wdy),
                Arg::Buf(&wi),
                Arg::Buf(&wdx),
            ],
            grid(((g.len() * so) as u64).div_ceil(WG as u64)),
        )?;
    }
    Ok(dx)
}

/// Plain-Rust reference.
pub mod reference {
    use crate::tensor::{CpuTensor, Shape5};

    /// Pooled tensor and argmax taps (first maximum in z, y, x order wins).
    pub fn forward(x: &CpuTensor) -> (CpuTensor, Vec<u32>) {
        let xs = x.shape;
        let ys = super::output_shape(xs).expect("max_pool reference shape");
        let mut y = CpuTensor::zeros(ys);
        let mut idx = vec![0u32; ys.numel()];
        for n in 0..ys.n {
            for c in 0..ys.c {
                for z in 0..ys.d {
                    for yy in 0..ys.h {
                        for xx in 0..ys.w {
                            let mut best = x.at(n, c, 2 * z, 2 * yy, 2 * xx);
                            let mut arg = 0u32;
                            for t in 1..8usize {
                                let v = x.at(n, c, 2 * z + (t >> 2), 2 * yy + ((t >> 1) & 1), 2 * xx + (t & 1));
                                if v > best {
                                    best = v;
                                    arg = t as u32;
                                }
                            }
                            let o = ys.idx(n, c, z, yy, xx);
                            y.data[o] = best;
                            idx[o] = arg;
                        }
                    }
                }
            }
        }
        (y, idx)
    }

    /// Routes each output gradient to its argmax voxel; 0 elsewhere.
    pub fn backward(idx: &[u32], in_shape: Shape5, dy: &CpuTensor) -> CpuTensor {
        let ys = dy.shape;
        assert_eq!(idx.len(), ys.numel());
        let mut dx = CpuTensor::zeros(in_shape);
        for n in 0..ys.n {
            for c in 0..ys.c {
                for z in 0..ys.d {
                    for yy in 0..ys.h {
                        for xx in 0..ys.w {
                            let o = ys.idx(n, c, z, yy, xx);
                            let t = idx[o] as usize;
                            dx.data[in_shape.idx(n, c, 2 * z + (t >> 2), 2 * yy + ((t >> 1) & 1), 2 * xx + (t & 1))] =
                                dy.data[o];
                        }
                    }
                }
            }
        }
        dx
    }
}
