//! [`Backend`] on the CPU: the ops' plain-Rust references (f64 accumulation).
//! Slow; used to check the GPU network step by step.

use super::backend::{Backend, LossSpec};
use crate::error::{Error, Result};
use crate::ops::{
    activation, batchnorm, cast, concat, conv3d, conv_transpose3d, elementwise, loss, optim, pool, softmax,
};
use crate::tensor::{CpuTensor, Shape5};

/// The CPU reference backend.
pub struct Cpu;

fn scalar_tensor(v: f64) -> CpuTensor {
    CpuTensor::from_vec(Shape5::new(1, 1, 1, 1, 1), vec![v as f32])
}

impl Backend for Cpu {
    type Ctx = ();
    type T = CpuTensor;
    type PoolIdx = Vec<u32>;
    /// (mean, invstd) per channel.
    /// (mean, invstd, frozen).
    type BnSaved = (CpuTensor, CpuTensor, bool);
    type Opt = optim::reference::CpuOptimizer;

    fn shape(_: &(), t: &CpuTensor) -> Shape5 {
        t.shape
    }
    fn upload(_: &(), t: &CpuTensor) -> Result<CpuTensor> {
        Ok(t.clone())
    }
    fn download(_: &(), t: &CpuTensor) -> Result<CpuTensor> {
        Ok(t.clone())
    }
    fn scalar(_: &(), t: &CpuTensor) -> Result<f64> {
        Ok(t.data[0] as f64)
    }
    fn conv(_: &(), x: &CpuTensor, w: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        Ok(conv3d::reference::forward(x, w, b))
    }
    fn conv_fused(_: &(), xs: &[&CpuTensor], w: &CpuTensor, b: &CpuTensor, relu: bool) -> Result<CpuTensor> {
        Ok(conv3d::reference::forward_fused(xs, w, b, relu))
    }
    fn half_storage(_: &(), x: &CpuTensor) -> Result<CpuTensor> {
        Ok(cast::reference::round_f16(x))
    }
    fn full_precision(_: &(), x: &CpuTensor) -> Result<CpuTensor> {
        Ok(x.clone())
    }
    fn conv_backward(
        _: &(),
        x: &CpuTensor,
        w: &CpuTensor,
        dy: &CpuTensor,
        need_dx: bool,
    ) -> Result<(Option<CpuTensor>, CpuTensor, CpuTensor)> {
        let dx = if need_dx { Some(conv3d::reference::backward_input(dy, w)) } else { None };
        Ok((dx, conv3d::reference::backward_weight(x, dy, w.shape.d), conv3d::reference::backward_bias(dy)))
    }
    fn up(_: &(), x: &CpuTensor, w: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        Ok(conv_transpose3d::reference::forward(x, w, b))
    }
    fn up_backward(_: &(), x: &CpuTensor, w: &CpuTensor, dy: &CpuTensor) -> Result<(CpuTensor, CpuTensor, CpuTensor)> {
        Ok((
            conv_transpose3d::reference::backward_input(dy, w),
            conv_transpose3d::reference::backward_weight(x, dy),
            conv_transpose3d::reference::backward_bias(dy),
        ))
    }
    fn pool(_: &(), x: &CpuTensor) -> Result<(CpuTensor, Vec<u32>)> {
        Ok(pool::reference::forward(x))
    }
    fn pool_backward(_: &(), idx: &Vec<u32>, x_shape: Shape5, dy: &CpuTensor) -> Result<CpuTensor> {
        Ok(pool::reference::backward(idx, x_shape, dy))
    }
    fn concat(_: &(), a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        Ok(concat::reference::forward(a, b))
    }
    fn concat_backward(_: &(), dy: &CpuTensor, c_a: usize) -> Result<(CpuTensor, CpuTensor)> {
        Ok(concat::reference::backward(dy, c_a))
    }
    fn bn_train(
        _: &(),
        x: &CpuTensor,
        gamma: &CpuTensor,
        beta: &CpuTensor,
        rm: &CpuTensor,
        rv: &CpuTensor,
        eps: f32,
        momentum: f32,
        relu: bool,
    ) -> Result<(CpuTensor, (CpuTensor, CpuTensor, bool), CpuTensor, CpuTensor)> {
        let cfg = batchnorm::BnConfig { eps, momentum, relu };
        let (y, mean, invstd, nrm, nrv) = batchnorm::reference::forward_train(x, gamma, beta, rm, rv, &cfg);
        Ok((y, (mean, invstd, false), nrm, nrv))
    }
    fn bn_infer(
        _: &(),
        x: &CpuTensor,
        gamma: &CpuTensor,
        beta: &CpuTensor,
        rm: &CpuTensor,
        rv: &CpuTensor,
        eps: f32,
        relu: bool,
    ) -> Result<CpuTensor> {
        let cfg = batchnorm::BnConfig { eps, momentum: 0.1, relu };
        Ok(batchnorm::reference::forward_infer(x, gamma, beta, rm, rv, &cfg))
    }
    fn bn_frozen(
        _: &(),
        x: &CpuTensor,
        gamma: &CpuTensor,
        beta: &CpuTensor,
        rm: &CpuTensor,
        rv: &CpuTensor,
        eps: f32,
        relu: bool,
    ) -> Result<(CpuTensor, (CpuTensor, CpuTensor, bool))> {
        let cfg = batchnorm::BnConfig { eps, momentum: 0.1, relu };
        let y = batchnorm::reference::forward_infer(x, gamma, beta, rm, rv, &cfg);
        let (mean, invstd) = batchnorm::reference::frozen_stats(rm, rv, eps);
        Ok((y, (mean, invstd, true)))
    }
    fn bn_backward(
        _: &(),
        x: &CpuTensor,
        gamma: &CpuTensor,
        saved: &(CpuTensor, CpuTensor, bool),
        relu_out: Option<&CpuTensor>,
        dy: &CpuTensor,
    ) -> Result<(CpuTensor, CpuTensor, CpuTensor)> {
        let (mean, invstd, frozen) = saved;
        Ok(batchnorm::reference::backward_saved(x, gamma, mean, invstd, *frozen, relu_out, dy))
    }
    fn relu(_: &(), x: &CpuTensor) -> Result<CpuTensor> {
        Ok(activation::reference::relu_forward(x))
    }
    fn relu_backward(_: &(), x: &CpuTensor, dy: &CpuTensor) -> Result<CpuTensor> {
        Ok(activation::reference::relu_backward(x, dy))
    }
    fn softmax(_: &(), x: &CpuTensor) -> Result<CpuTensor> {
        Ok(softmax::reference::forward(x))
    }
    fn softmax_backward(_: &(), y: &CpuTensor, dy: &CpuTensor) -> Result<CpuTensor> {
        Ok(softmax::reference::backward(y, dy))
    }
    fn sigmoid(_: &(), x: &CpuTensor) -> Result<CpuTensor> {
        Ok(activation::reference::sigmoid_forward(x))
    }
    fn sigmoid_backward(_: &(), y: &CpuTensor, dy: &CpuTensor) -> Result<CpuTensor> {
        Ok(activation::reference::sigmoid_backward(y, dy))
    }
    fn add(_: &(), a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        if a.shape != b.shape {
            return Err(Error::shape("add", format!("{} + {}", a.shape, b.shape)));
        }
        Ok(elementwise::reference::add(a, b))
    }
    fn loss(_: &(), spec: &LossSpec, logits: &CpuTensor, target: &CpuTensor) -> Result<(CpuTensor, CpuTensor)> {
        let (l, d) = match spec {
            LossSpec::Ce { class_weights } => loss::reference::softmax_cross_entropy(logits, target, class_weights)?,
            LossSpec::Bce { pos_weight } => loss::reference::bce_with_logits(logits, target, *pos_weight),
            LossSpec::Dice { smooth } => {
                if logits.shape.c == 1 {
                    let p = activation::reference::sigmoid_forward(logits);
                    let (l, dp) = loss::reference::soft_dice(&p, target, 0, *smooth);
                    (l, activation::reference::sigmoid_backward(&p, &dp))
                } else {
                    let p = softmax::reference::forward(logits);
                    let (l, dp) = loss::reference::soft_dice(&p, target, logits.shape.c - 1, *smooth);
                    (l, softmax::reference::backward(&p, &dp))
                }
            }
        };
        Ok((scalar_tensor(l), d))
    }
    fn opt_step(
        _: &(),
        opt: &mut optim::reference::CpuOptimizer,
        params: &mut [CpuTensor],
        grads: &[CpuTensor],
    ) -> Result<()> {
        opt.step(params, grads);
        Ok(())
    }
    fn average(_: &(), avg: &mut [CpuTensor], current: &[CpuTensor], weight: f32) -> Result<()> {
        optim::reference::average(avg, current, weight)
    }
    fn set_lr(opt: &mut optim::reference::CpuOptimizer, lr: f32) -> Result<()> {
        opt.set_lr(lr)
    }
}
