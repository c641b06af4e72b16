//! Deterministic per-channel sums over (N, D, H, W) (`shaders/reduce.wgsl`):
//! fixed-order strided sums and workgroup trees, no float atomics, so the
//! result is bit-identical from run to run. Used for bias gradients and batch
//! statistics.

use crate::error::Result;
use crate::gpu::{grid, split_units, Arg, GpuContext, GpuTensor, ShaderSource};
use crate::tensor::Shape5;

pub const SHADER: ShaderSource = crate::shader!("reduce");
/// Workgroup size and values summed per invocation in pass 1.
pub const WG: u32 = 256;
pub const PER_THREAD: u32 = 16;
/// Voxels of one channel summed by one workgroup in pass 1.
pub const CHUNK: usize = (WG * PER_THREAD) as usize;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PartialParams {
    spatial: u32,
    nchunks: u32,
    channels: u32,
    base_x: u32,
    part_base: u32,
    _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct FinishParams {
    channels: u32,
    samples: u32,
    nchunks: u32,
    _pad: u32,
}

/// Sum of each channel over N, D, H, W: shape (1, C, 1, 1, 1).
pub fn channel_sum(ctx: &GpuContext, x: &GpuTensor) -> Result<GpuTensor> {
    let s = x.shape;
    let spatial = s.spatial();
    let nchunks = spatial.div_ceil(CHUNK);
    let consts = [("WG", WG as f64), ("PER_THREAD", PER_THREAD as f64)];
    let p1 = ctx.pipeline(&SHADER, "channel_partials", &consts)?;
    let p2 = ctx.pipeline(&SHADER, "channel_finish", &consts[..1])?;
    let part = ctx.empty(Shape5::new(s.n, s.c, 1, 1, nchunks), "channel_sum partials")?;
    let label = format!("channel_sum {s}");
    for n in 0..s.n {
        for group in split_units(s.c, spatial, ctx.max_window_elems(), "channel_sum")? {
            let wx = ctx.window(&x.buf, s.idx(n, group.start, 0, 0, 0), group.len() * spatial)?;
            let part_base = ((n * s.c + group.start) * nchunks) as u32;
            let wp = part.full_window(ctx)?;
            let pp = PartialParams {
                spatial: spatial as u32,
                nchunks: nchunks as u32,
                channels: group.len() as u32,
                base_x: wx.base,
                part_base: part_base + wp.base,
                _pad: [0; 3],
            };
            ctx.dispatch(
                &label,
                &p1,
                &[Arg::Buf(&wx), Arg::Buf(&wp), Arg::Uniform(bytemuck::bytes_of(&pp))],
                grid((group.len() * nchunks) as u64),
            )?;
        }
    }
    let out = ctx.empty(Shape5::new(1, s.c, 1, 1, 1), "channel_sum")?;
    let fp = FinishParams { channels: s.c as u32, samples: s.n as u32, nchunks: nchunks as u32, _pad: 0 };
    ctx.dispatch(
        &label,
        &p2,
        &[Arg::Whole(&part.buf), Arg::Whole(&out.buf), Arg::Uniform(bytemuck::bytes_of(&fp))],
        grid(s.c as u64),
    )?;
    Ok(out)
}

/// Plain-Rust reference.
pub mod reference {
    use crate::tensor::{CpuTensor, Shape5};

    /// Per-channel sum over N, D, H, W accumulated in f64.
    pub fn channel_sum(x: &CpuTensor) -> CpuTensor {
        let s = x.shape;
        let mut out = vec![0f64; s.c];
        for n in 0..s.n {
            for (c, o) in out.iter_mut().enumerate() {
                *o += x.channel(n, c).iter().map(|&v| v as f64).sum::<f64>();
            }
        }
        CpuTensor::from_vec(Shape5::new(1, s.c, 1, 1, 1), out.into_iter().map(|v| v as f32).collect())
    }
}
