//! ReLU and sigmoid, forward and backward (kernels in `shaders/elementwise.wgsl`).

use super::elementwise;
use crate::error::Result;
use crate::gpu::{GpuContext, GpuTensor, ShaderSource};

pub const SHADER: ShaderSource = elementwise::SHADER;

fn unary(ctx: &GpuContext, entry: &str, a: &GpuTensor, b: Option<&GpuTensor>) -> Result<GpuTensor> {
    let out = ctx.empty(a.shape, entry)?;
    elementwise::map(ctx, &SHADER, entry, a, b, &out)?;
    Ok(out)
}

/// `max(x, 0)`.
pub fn relu_forward(ctx: &GpuContext, x: &GpuTensor) -> Result<GpuTensor> {
    unary(ctx, "relu_forward", x, None)
}
/// `dy` where the forward input `x` was positive, else 0.
pub fn relu_backward(ctx: &GpuContext, x: &GpuTensor, dy: &GpuTensor) -> Result<GpuTensor> {
    unary(ctx, "relu_backward", x, Some(dy))
}
/// `1 / (1 + exp(-x))`.
pub fn sigmoid_forward(ctx: &GpuContext, x: &GpuTensor) -> Result<GpuTensor> {
    unary(ctx, "sigmoid_forward", x, None)
}
/// `dy · y · (1 − y)` from the forward output `y`.
pub fn sigmoid_backward(ctx: &GpuContext, y: &GpuTensor, dy: &GpuTensor) -> Result<GpuTensor> {
    unary(ctx, "sigmoid_backward", y, Some(dy))
}

/// Plain-Rust references.
pub mod reference {
    use crate::tensor::CpuTensor;

    fn map(a: &CpuTensor, f: impl Fn(f64) -> f64) -> CpuTensor {
        CpuTensor { shape: a.shape, data: a.data.iter().map(|&v| f(v as f64) as f32).collect() }
    }
    fn zip(a: &CpuTensor, b: &CpuTensor, f: impl Fn(f64, f64) -> f64) -> CpuTensor {
        assert_eq!(a.shape, b.shape);
        CpuTensor {
            shape: a.shape,
            data: a.data.iter().zip(&b.data).map(|(&x, &y)| f(x as f64, y as f64) as f32).collect(),
        }
    }
    pub fn relu_forward(x: &CpuTensor) -> CpuTensor {
        map(x, |v| v.max(0.0))
    }
    pub fn relu_backward(x: &CpuTensor, dy: &CpuTensor) -> CpuTensor {
        zip(x, dy, |x, g| if x > 0.0 { g } else { 0.0 })
    }
    pub fn sigmoid_forward(x: &CpuTensor) -> CpuTensor {
        map(x, |v| 1.0 / (1.0 + (-v).exp()))
    }
    pub fn sigmoid_backward(y: &CpuTensor, dy: &CpuTensor) -> CpuTensor {
        zip(y, dy, |y, g| g * y * (1.0 - y))
    }
}
