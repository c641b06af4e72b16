//! Driver for element-wise kernels: splits tensors of any size into windows
//! that fit one storage binding and dispatches a kernel per window.
//!
//! Kernel contract (see `shaders/elementwise.wgsl`): bindings `a`, `b` (read),
//! `out` (read_write), uniform `{n, base_a, base_b, base_out}`, workgroup size
//! override `WG`, 1-D grid folded by [`crate::gpu::grid`].

use crate::error::{Error, Result};
use crate::gpu::{grid, Arg, GpuContext, GpuTensor, ShaderSource};

/// Element-wise kernels: activations and arithmetic (`shaders/elementwise.wgsl`).
pub const SHADER: ShaderSource = crate::shader!("elementwise");

/// Workgroup size of every element-wise kernel.
pub const WG: u32 = 64;
/// Elements per invocation (amortises per-invocation cost, which dominates
/// on software rasterisers).
pub const PER: u32 = 8;

uniform_params! {
    struct Params {
        n: u32,
        base_a: u32,
        base_b: u32,
        base_out: u32,
    }
}

/// Runs `entry` of `src` element-wise: `out[i] = f(a[i], b[i])`. `b` may be
/// `None` for unary kernels. All tensors must have the same number of elements.
pub fn map(
    ctx: &GpuContext,
    src: &ShaderSource,
    entry: &str,
    a: &GpuTensor,
    b: Option<&GpuTensor>,
    out: &GpuTensor,
) -> Result<()> {
    let n = out.numel();
    if a.numel() != n || b.is_some_and(|b| b.numel() != n) {
        return Err(Error::shape(
            entry,
            format!("element counts differ: a {}, b {:?}, out {}", a.shape, b.map(|b| b.shape), out.shape),
        ));
    }
    let pipeline = ctx.pipeline(src, entry, &[("WG", WG as f64), ("PER", PER as f64)])?;
    let b = b.unwrap_or(a);
    let chunk = ctx.max_window_elems().min(u32::MAX as usize / 2);
    let label = format!("{entry} {}", out.shape);
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let wa = a.window(ctx, start, len)?;
        let wb = b.window(ctx, start, len)?;
        let wo = out.window(ctx, start, len)?;
        let params = Params { n: len as u32, base_a: wa.base, base_b: wb.base, base_out: wo.base };
        ctx.dispatch(
            &label,
            &pipeline,
            &[Arg::Buf(&wa), Arg::Buf(&wb), Arg::Buf(&wo), Arg::Uniform(bytemuck::bytes_of(&params))],
            grid((len as u64).div_ceil((WG * PER) as u64)),
        )?;
        start += len;
    }
    Ok(())
}

/// `a + b` element-wise (same shape).
pub fn add(ctx: &GpuContext, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
    if a.shape != b.shape {
        return Err(Error::shape("add", format!("{} + {}", a.shape, b.shape)));
    }
    let out = ctx.empty(a.shape, "add")?;
    map(ctx, &SHADER, "add", a, Some(b), &out)?;
    Ok(out)
}

/// Plain-Rust reference.
pub mod reference {
    use crate::tensor::CpuTensor;

    /// `a + b` element-wise.
    pub fn add(a: &CpuTensor, b: &CpuTensor) -> CpuTensor {
        assert_eq!(a.shape, b.shape, "reference add: shapes differ");
        CpuTensor {
            shape: a.shape,
            data: a.data.iter().zip(&b.data).map(|(&x, &y)| (x as f64 + y as f64) as f32).collect(),
        }
    }
}
