//! [`Backend`] on the GPU: the WGSL ops.

use super::backend::{Backend, LossSpec};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTensor, ShaderSource};
use crate::ops::{activation, batchnorm, concat, conv3d, conv_transpose3d, elementwise, loss, optim, pool, softmax};
use crate::tensor::{CpuTensor, Shape5};

/// Element-wise sum kernel (gradient accumulation at skip connections).
pub const ADD_SHADER: ShaderSource = ShaderSource { name: "model_add", wgsl: include_str!("add.wgsl") };

/// The GPU backend: every op runs as a WGSL kernel on `ctx`.
pub struct Gpu<'a> {
    pub ctx: &'a GpuContext,
}

fn bn_cfg(eps: f32, momentum: f32) -> batchnorm::BnConfig {
    batchnorm::BnConfig { eps, momentum }
}

impl Backend for Gpu<'_> {
    type T = GpuTensor;
    type PoolIdx = pool::MaxPoolIndices;
    type BnSaved = batchnorm::BnSaved;
    type Opt = optim::Optimizer;

    fn shape(&self, t: &GpuTensor) -> Shape5 {
        t.shape
    }
    fn upload(&self, t: &CpuTensor) -> Result<GpuTensor> {
        self.ctx.upload(t)
    }
    fn download(&self, t: &GpuTensor) -> Result<CpuTensor> {
        self.ctx.download(t)
    }
    fn scalar(&self, t: &GpuTensor) -> Result<f64> {
        let v = self.ctx.read_f32(&t.buf, 0, 1)?;
        Ok(v[0] as f64)
    }
    fn conv(&self, x: &GpuTensor, w: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        conv3d::forward(self.ctx, x, w, b)
    }
    fn conv_backward(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        dy: &GpuTensor,
        need_dx: bool,
    ) -> Result<(Option<GpuTensor>, GpuTensor, GpuTensor)> {
        let dx = if need_dx { Some(conv3d::backward_input(self.ctx, dy, w)?) } else { None };
        let dw = conv3d::backward_weight(self.ctx, x, dy, w.shape.d)?;
        let db = conv3d::backward_bias(self.ctx, dy)?;
        Ok((dx, dw, db))
    }
    fn up(&self, x: &GpuTensor, w: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        conv_transpose3d::forward(self.ctx, x, w, b)
    }
    fn up_backward(&self, x: &GpuTensor, w: &GpuTensor, dy: &GpuTensor) -> Result<(GpuTensor, GpuTensor, GpuTensor)> {
        Ok((
            conv_transpose3d::backward_input(self.ctx, dy, w)?,
            conv_transpose3d::backward_weight(self.ctx, x, dy)?,
            conv_transpose3d::backward_bias(self.ctx, dy)?,
        ))
    }
    fn pool(&self, x: &GpuTensor) -> Result<(GpuTensor, pool::MaxPoolIndices)> {
        pool::forward(self.ctx, x)
    }
    fn pool_backward(&self, idx: &pool::MaxPoolIndices, _x_shape: Shape5, dy: &GpuTensor) -> Result<GpuTensor> {
        pool::backward(self.ctx, idx, dy)
    }
    fn concat(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        concat::forward(self.ctx, a, b)
    }
    fn concat_backward(&self, dy: &GpuTensor, c_a: usize) -> Result<(GpuTensor, GpuTensor)> {
        concat::backward(self.ctx, dy, c_a)
    }
    fn bn_train(
        &self,
        x: &GpuTensor,
        gamma: &GpuTensor,
        beta: &GpuTensor,
        rm: &GpuTensor,
        rv: &GpuTensor,
        eps: f32,
        momentum: f32,
    ) -> Result<(GpuTensor, batchnorm::BnSaved, GpuTensor, GpuTensor)> {
        let (y, saved) = batchnorm::forward_train(self.ctx, x, gamma, beta, rm, rv, &bn_cfg(eps, momentum))?;
        Ok((y, saved, rm.clone(), rv.clone()))
    }
    fn bn_infer(
        &self,
        x: &GpuTensor,
        gamma: &GpuTensor,
        beta: &GpuTensor,
        rm: &GpuTensor,
        rv: &GpuTensor,
        eps: f32,
    ) -> Result<GpuTensor> {
        batchnorm::forward_infer(self.ctx, x, gamma, beta, rm, rv, &bn_cfg(eps, 0.1))
    }
    fn bn_backward(
        &self,
        x: &GpuTensor,
        gamma: &GpuTensor,
        saved: &batchnorm::BnSaved,
        dy: &GpuTensor,
    ) -> Result<(GpuTensor, GpuTensor, GpuTensor)> {
        batchnorm::backward(self.ctx, x, gamma, saved, dy)
    }
    fn relu(&self, x: &GpuTensor) -> Result<GpuTensor> {
        activation::relu_forward(self.ctx, x)
    }
    fn relu_backward(&self, x: &GpuTensor, dy: &GpuTensor) -> Result<GpuTensor> {
        activation::relu_backward(self.ctx, x, dy)
    }
    fn softmax(&self, x: &GpuTensor) -> Result<GpuTensor> {
        softmax::forward(self.ctx, x)
    }
    fn softmax_backward(&self, y: &GpuTensor, dy: &GpuTensor) -> Result<GpuTensor> {
        softmax::backward(self.ctx, y, dy)
    }
    fn sigmoid(&self, x: &GpuTensor) -> Result<GpuTensor> {
        activation::sigmoid_forward(self.ctx, x)
    }
    fn sigmoid_backward(&self, y: &GpuTensor, dy: &GpuTensor) -> Result<GpuTensor> {
        activation::sigmoid_backward(self.ctx, y, dy)
    }
    fn add(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        if a.shape != b.shape {
            return Err(Error::shape("add", format!("{} + {}", a.shape, b.shape)));
        }
        let out = self.ctx.empty(a.shape, "add")?;
        elementwise::map(self.ctx, &ADD_SHADER, "add", a, Some(b), &out)?;
        Ok(out)
    }
    fn loss(&self, spec: &LossSpec, logits: &GpuTensor, target: &GpuTensor) -> Result<(GpuTensor, GpuTensor)> {
        match spec {
            LossSpec::Ce { class_weights } => loss::softmax_cross_entropy(self.ctx, logits, target, class_weights),
            LossSpec::Bce { pos_weight } => loss::bce_with_logits(self.ctx, logits, target, *pos_weight),
            LossSpec::Dice { smooth } => {
                if logits.shape.c == 1 {
                    let p = self.sigmoid(logits)?;
                    let (l, dp) = loss::soft_dice(self.ctx, &p, target, 0, *smooth)?;
                    Ok((l, self.sigmoid_backward(&p, &dp)?))
                } else {
                    let p = self.softmax(logits)?;
                    let (l, dp) = loss::soft_dice(self.ctx, &p, target, logits.shape.c - 1, *smooth)?;
                    Ok((l, self.softmax_backward(&p, &dp)?))
                }
            }
        }
    }
    fn opt_step(&self, opt: &mut optim::Optimizer, params: &mut [GpuTensor], grads: &[GpuTensor]) -> Result<()> {
        opt.step(self.ctx, params, grads)
    }
}
