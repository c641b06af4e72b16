//! Element-type conversion of GPU tensors between f32 and f16
//! (`shaders/cast_f16.wgsl`): the way into and out of the f16 storage that
//! f16 kernel variants read. Needs the adapter's `shader-f16` feature
//! ([`NEEDS`]); without it both directions are an error that says so, and
//! the f32 kernels (which never load this shader) run as before.
//!
//! f32 → f16 rounds to one of the two nearest f16 values (WGSL leaves the
//! choice to the implementation; the reference rounds to nearest, ties to
//! even), values beyond f16's range (±65504) are not supported; f16 → f32
//! is exact.

use super::variants::{require, Kernels, Need, Variant};
use crate::error::Result;
use crate::gpu::{grid, Arg, DType, GpuContext, GpuTensor, ShaderSource};

pub const SHADER: ShaderSource = crate::shader!("cast_f16");

/// What the adapter must offer.
pub const NEEDS: &[Need] = &[Need::ShaderF16];

/// How a folded inference pass stores its activations between layers: f16
/// where the adapter has shader-f16 (the convolutions read and write f16
/// and sum in f32; pooling, the transposed convolution and the head take
/// f32, cast on the way), else f32; `--gpu-kernel activations=f32` forces
/// f32. f16 is first because it was measured as accurate (all 11 Emb11
/// volumes: the same F1) and faster (`infer` on the 16-cell example on
/// lavapipe: 64-66 s against 78-80 s), see `weights/README.md`.
pub static ACTIVATIONS: Kernels<DType> = Kernels {
    op: "activations",
    variants: &[
        Variant {
            name: "f16",
            needs: NEEDS,
            about: "activations stored as f16 between layers, sums in f32 (inference)",
            kernel: DType::F16,
        },
        Variant { name: "f32", needs: &[], about: "activations stored as f32", kernel: DType::F32 },
    ],
};

/// Workgroup size.
pub const WG: u32 = 256;

uniform_params! {
    struct Params {
        n: u32,
        base_src: u32,
        base_dst: u32,
        _pad: u32,
    }
}

/// `x` as a tensor of `dtype`: `x` itself (the same buffer) when it already
/// is one, else a converted copy.
pub fn to(ctx: &GpuContext, x: &GpuTensor, dtype: DType) -> Result<GpuTensor> {
    if x.dtype == dtype {
        return Ok(x.clone());
    }
    let op = match dtype {
        DType::F16 => "cast to f16",
        DType::F32 => "cast to f32",
    };
    require(ctx, op, NEEDS)?;
    let (entry, src_t) = match dtype {
        DType::F16 => ("to_f16", DType::F32),
        DType::F32 => ("to_f32", DType::F16),
    };
    let out = ctx.empty_as(x.shape, dtype, op)?;
    let pipeline = ctx.pipeline(&SHADER, entry, &[("WG", WG as f64)])?;
    let n = x.numel();
    let chunk = ctx.max_window_elems_of(4).min(u32::MAX as usize / 2);
    let label = format!("{op} {}", x.shape);
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let ws = x.window_as(ctx, src_t, start, len)?;
        let wd = out.window_as(ctx, dtype, start, len)?;
        let p = Params { n: len as u32, base_src: ws.base, base_dst: wd.base, _pad: 0 };
        let u = Arg::Uniform(bytemuck::bytes_of(&p));
        let args = match dtype {
            DType::F16 => [Arg::Buf(&ws), Arg::Buf(&wd), Arg::Buf(&ws), Arg::Buf(&wd), u],
            DType::F32 => [Arg::Buf(&wd), Arg::Buf(&ws), Arg::Buf(&ws), Arg::Buf(&wd), u],
        };
        ctx.dispatch(&label, &pipeline, &args, grid((len as u64).div_ceil(WG as u64)))?;
        start += len;
    }
    Ok(out)
}

/// Plain-Rust reference.
pub mod reference {
    use crate::tensor::CpuTensor;

    /// Each value rounded to the nearest f16 (ties to even), as f32.
    pub fn round_f16(x: &CpuTensor) -> CpuTensor {
        CpuTensor { shape: x.shape, data: x.data.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect() }
    }
}
