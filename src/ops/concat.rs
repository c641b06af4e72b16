//! Concatenation along channels, `y = [a, b]` (the U-Net skip connection), and
//! its backward split. In N, C, D, H, W layout the channels of one sample are
//! one contiguous run, so both directions are `2·N` buffer-to-buffer copies
//! (one per sample and operand) recorded into the batched encoder: no kernel,
//! no binding-size limit, and every output element is written exactly once.

use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext, GpuTensor};

/// Records a copy of `count` f32 values between element offsets.
fn copy(
    ctx: &GpuContext,
    label: &str,
    src: &GpuTensor,
    at: usize,
    dst: &GpuTensor,
    to: usize,
    count: usize,
) -> Result<()> {
    // Buffer copies move whole 4-byte words at 4-byte offsets: f32 only.
    for t in [src, dst] {
        if t.dtype != DType::F32 {
            return Err(Error::shape(
                label,
                format!("a {} tensor {}: concatenation copies f32 tensors", t.dtype, t.shape),
            ));
        }
    }
    if count == 0 {
        return Ok(());
    }
    let e = DType::F32.size();
    ctx.record(label, |enc| {
        enc.copy_buffer_to_buffer(&src.buf, (at * e) as u64, &dst.buf, (to * e) as u64, (count * e) as u64)
    })
}

/// `[a, b]` along channels: (N, C_a + C_b, D, H, W).
pub fn forward(ctx: &GpuContext, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
    let (sa, sb) = (a.shape, b.shape);
    if (sa.n, sa.d, sa.h, sa.w) != (sb.n, sb.d, sb.h, sb.w) {
        return Err(Error::shape("concat", format!("{sa} and {sb} differ outside the channel axis")));
    }
    let ys = sa.with_c(sa.c + sb.c);
    let y = ctx.empty(ys, "concat y")?;
    let label = format!("concat {sa} + {sb}");
    let (la, lb) = (sa.c * sa.spatial(), sb.c * sb.spatial());
    for n in 0..sa.n {
        copy(ctx, &label, a, n * la, &y, n * (la + lb), la)?;
        copy(ctx, &label, b, n * lb, &y, n * (la + lb) + la, lb)?;
    }
    Ok(y)
}

/// Splits the gradient of `[a, b]` into `(da, db)`, `c_a` being the channels of `a`.
pub fn backward(ctx: &GpuContext, dy: &GpuTensor, c_a: usize) -> Result<(GpuTensor, GpuTensor)> {
    let s = dy.shape;
    if c_a == 0 || c_a >= s.c {
        return Err(Error::shape(
            "concat backward",
            format!("c_a = {c_a} must split the {} channels of gradient {s} into two non-empty parts", s.c),
        ));
    }
    let (sa, sb) = (s.with_c(c_a), s.with_c(s.c - c_a));
    let (da, db) = (ctx.empty(sa, "concat da")?, ctx.empty(sb, "concat db")?);
    let label = format!("concat backward {s} -> {} + {}", sa.c, sb.c);
    let (la, lb) = (sa.c * s.spatial(), sb.c * s.spatial());
    for n in 0..s.n {
        copy(ctx, &label, dy, n * (la + lb), &da, n * la, la)?;
        copy(ctx, &label, dy, n * (la + lb) + la, &db, n * lb, lb)?;
    }
    Ok((da, db))
}

/// Plain-Rust reference.
pub mod reference {
    use crate::tensor::CpuTensor;

    pub fn forward(a: &CpuTensor, b: &CpuTensor) -> CpuTensor {
        let (sa, sb) = (a.shape, b.shape);
        assert_eq!((sa.n, sa.d, sa.h, sa.w), (sb.n, sb.d, sb.h, sb.w));
        let mut y = CpuTensor::zeros(sa.with_c(sa.c + sb.c));
        let mut out = Vec::with_capacity(y.data.len());
        for n in 0..sa.n {
            for c in 0..sa.c {
                out.extend_from_slice(a.channel(n, c));
            }
            for c in 0..sb.c {
                out.extend_from_slice(b.channel(n, c));
            }
        }
        y.data = out;
        y
    }

    pub fn backward(dy: &CpuTensor, c_a: usize) -> (CpuTensor, CpuTensor) {
        let s = dy.shape;
        let (mut da, mut db) = (Vec::new(), Vec::new());
        for n in 0..s.n {
            for c in 0..s.c {
                if c < c_a { &mut da } else { &mut db }.extend_from_slice(dy.channel(n, c));
            }
        }
        (CpuTensor::from_vec(s.with_c(c_a), da), CpuTensor::from_vec(s.with_c(s.c - c_a), db))
    }
}
