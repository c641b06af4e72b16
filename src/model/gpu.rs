//! [`Backend`] on the GPU: the WGSL ops.

use super::backend::{Backend, LossSpec};
use crate::error::Result;
use crate::gpu::{DType, GpuContext, GpuTensor};
use crate::ops::{
    activation, batchnorm, cast, concat, conv3d, conv_transpose3d, elementwise, loss, optim, pool, softmax,
};
use crate::tensor::{CpuTensor, Shape5};

/// The GPU backend: every op runs as a WGSL kernel on `ctx`.
pub struct Gpu;

fn bn_cfg(eps: f32, momentum: f32, relu: bool) -> batchnorm::BnConfig {
    batchnorm::BnConfig { eps, momentum, relu }
}

impl Backend for Gpu {
    type Ctx = GpuContext;
    type T = GpuTensor;
    type PoolIdx = pool::MaxPoolIndices;
    type BnSaved = batchnorm::BnSaved;
    type Opt = optim::Optimizer;

    fn shape(_: &GpuContext, t: &GpuTensor) -> Shape5 {
        t.shape
    }
    fn upload(ctx: &GpuContext, t: &CpuTensor) -> Result<GpuTensor> {
        ctx.upload(t)
    }
    fn download(ctx: &GpuContext, t: &GpuTensor) -> Result<CpuTensor> {
        ctx.download(t)
    }
    fn scalar(ctx: &GpuContext, t: &GpuTensor) -> Result<f64> {
        let v = ctx.read_f32(&t.buf, 0, 1)?;
        Ok(v[0] as f64)
    }
    fn conv(ctx: &GpuContext, x: &GpuTensor, w: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        conv3d::forward(ctx, x, w, b)
    }
    fn conv_fused(ctx: &GpuContext, xs: &[&GpuTensor], w: &GpuTensor, b: &GpuTensor, relu: bool) -> Result<GpuTensor> {
        conv3d::forward_fused(ctx, xs, w, b, relu)
    }
    fn half_storage(ctx: &GpuContext, x: &GpuTensor) -> Result<GpuTensor> {
        cast::to(ctx, x, DType::F16)
    }
    fn full_precision(ctx: &GpuContext, x: &GpuTensor) -> Result<GpuTensor> {
        cast::to(ctx, x, DType::F32)
    }
    fn conv_backward(
        ctx: &GpuContext,
        x: &GpuTensor,
        w: &GpuTensor,
        dy: &GpuTensor,
        need_dx: bool,
    ) -> Result<(Option<GpuTensor>, GpuTensor, GpuTensor)> {
        let dx = if need_dx { Some(conv3d::backward_input(ctx, dy, w)?) } else { None };
        let dw = conv3d::backward_weight(ctx, x, dy, w.shape.d)?;
        let db = conv3d::backward_bias(ctx, dy)?;
        Ok((dx, dw, db))
    }
    fn up(ctx: &GpuContext, x: &GpuTensor, w: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        conv_transpose3d::forward(ctx, x, w, b)
    }
    fn up_backward(
        ctx: &GpuContext,
        x: &GpuTensor,
        w: &GpuTensor,
        dy: &GpuTensor,
    ) -> Result<(GpuTensor, GpuTensor, GpuTensor)> {
        Ok((
            conv_transpose3d::backward_input(ctx, dy, w)?,
            conv_transpose3d::backward_weight(ctx, x, dy)?,
            conv_transpose3d::backward_bias(ctx, dy)?,
        ))
    }
    fn pool(ctx: &GpuContext, x: &GpuTensor) -> Result<(GpuTensor, pool::MaxPoolIndices)> {
        pool::forward(ctx, x)
    }
    fn pool_backward(
        ctx: &GpuContext,
        idx: &pool::MaxPoolIndices,
        _x_shape: Shape5,
        dy: &GpuTensor,
    ) -> Result<GpuTensor> {
        pool::backward(ctx, idx, dy)
    }
    fn concat(ctx: &GpuContext, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        concat::forward(ctx, a, b)
    }
    fn concat_backward(ctx: &GpuContext, dy: &GpuTensor, c_a: usize) -> Result<(GpuTensor, GpuTensor)> {
        concat::backward(ctx, dy, c_a)
    }
    fn bn_train(
        ctx: &GpuContext,
        x: &GpuTensor,
        gamma: &GpuTensor,
        beta: &GpuTensor,
        rm: &GpuTensor,
        rv: &GpuTensor,
        eps: f32,
        momentum: f32,
        relu: bool,
    ) -> Result<(GpuTensor, batchnorm::BnSaved, GpuTensor, GpuTensor)> {
        // The op updates running statistics in place: update copies, so that
        // a forward pass commits nothing until the step does (as on the CPU).
        let (rm, rv) = (ctx.copy(rm)?, ctx.copy(rv)?);
        let (y, saved) = batchnorm::forward_train(ctx, x, gamma, beta, &rm, &rv, &bn_cfg(eps, momentum, relu))?;
        Ok((y, saved, rm, rv))
    }
    fn bn_infer(
        ctx: &GpuContext,
        x: &GpuTensor,
        gamma: &GpuTensor,
        beta: &GpuTensor,
        rm: &GpuTensor,
        rv: &GpuTensor,
        eps: f32,
        relu: bool,
    ) -> Result<GpuTensor> {
        batchnorm::forward_infer(ctx, x, gamma, beta, rm, rv, &bn_cfg(eps, 0.1, relu))
    }
    fn bn_frozen(
        ctx: &GpuContext,
        x: &GpuTensor,
        gamma: &GpuTensor,
        beta: &GpuTensor,
        rm: &GpuTensor,
        rv: &GpuTensor,
        eps: f32,
        relu: bool,
    ) -> Result<(GpuTensor, batchnorm::BnSaved)> {
        batchnorm::forward_frozen(ctx, x, gamma, beta, rm, rv, &bn_cfg(eps, 0.1, relu))
    }
    fn bn_backward(
        ctx: &GpuContext,
        x: &GpuTensor,
        gamma: &GpuTensor,
        saved: &batchnorm::BnSaved,
        relu_out: Option<&GpuTensor>,
        dy: &GpuTensor,
    ) -> Result<(GpuTensor, GpuTensor, GpuTensor)> {
        match relu_out {
            Some(r) => batchnorm::backward_through_relu(ctx, x, gamma, saved, r, dy),
            None => batchnorm::backward(ctx, x, gamma, saved, dy),
        }
    }
    fn relu(ctx: &GpuContext, x: &GpuTensor) -> Result<GpuTensor> {
        activation::relu_forward(ctx, x)
    }
    fn relu_backward(ctx: &GpuContext, x: &GpuTensor, dy: &GpuTensor) -> Result<GpuTensor> {
        activation::relu_backward(ctx, x, dy)
    }
    fn softmax(ctx: &GpuContext, x: &GpuTensor) -> Result<GpuTensor> {
        softmax::forward(ctx, x)
    }
    fn softmax_backward(ctx: &GpuContext, y: &GpuTensor, dy: &GpuTensor) -> Result<GpuTensor> {
        softmax::backward(ctx, y, dy)
    }
    fn sigmoid(ctx: &GpuContext, x: &GpuTensor) -> Result<GpuTensor> {
        activation::sigmoid_forward(ctx, x)
    }
    fn sigmoid_backward(ctx: &GpuContext, y: &GpuTensor, dy: &GpuTensor) -> Result<GpuTensor> {
        activation::sigmoid_backward(ctx, y, dy)
    }
    fn add(ctx: &GpuContext, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        elementwise::add(ctx, a, b)
    }
    fn loss(
        ctx: &GpuContext,
        spec: &LossSpec,
        logits: &GpuTensor,
        target: &GpuTensor,
    ) -> Result<(GpuTensor, GpuTensor)> {
        match spec {
            LossSpec::Ce { class_weights } => loss::softmax_cross_entropy(ctx, logits, target, class_weights),
            LossSpec::Bce { pos_weight } => loss::bce_with_logits(ctx, logits, target, *pos_weight),
            LossSpec::Dice { smooth } => {
                if logits.shape.c == 1 {
                    let p = Self::sigmoid(ctx, logits)?;
                    let (l, dp) = loss::soft_dice(ctx, &p, target, 0, *smooth)?;
                    Ok((l, Self::sigmoid_backward(ctx, &p, &dp)?))
                } else {
                    let p = Self::softmax(ctx, logits)?;
                    let (l, dp) = loss::soft_dice(ctx, &p, target, logits.shape.c - 1, *smooth)?;
                    Ok((l, Self::softmax_backward(ctx, &p, &dp)?))
                }
            }
        }
    }
    fn opt_step(
        ctx: &GpuContext,
        opt: &mut optim::Optimizer,
        params: &mut [GpuTensor],
        grads: &[GpuTensor],
    ) -> Result<()> {
        let p: Vec<&GpuTensor> = params.iter().collect();
        let g: Vec<&GpuTensor> = grads.iter().collect();
        opt.step(ctx, &p, &g)
    }
    fn average(ctx: &GpuContext, avg: &mut [GpuTensor], current: &[GpuTensor], weight: f32) -> Result<()> {
        let a: Vec<&GpuTensor> = avg.iter().collect();
        let c: Vec<&GpuTensor> = current.iter().collect();
        optim::average(ctx, &a, &c, weight)
    }
    fn set_lr(opt: &mut optim::Optimizer, lr: f32) -> Result<()> {
        opt.set_lr(lr)
    }
}
