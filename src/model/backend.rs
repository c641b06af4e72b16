//! The small set of tensor operations a network needs, as a trait with two
//! implementations: [`super::gpu::Gpu`] (the WGSL ops) and
//! [`super::cpu::Cpu`] (the ops' plain-Rust references). The network code in
//! [`super::unet`] is written once against this trait, so a training step can
//! be run on both and compared.

use crate::error::Result;
use crate::tensor::{CpuTensor, Shape5};

/// The training loss on the network's logits.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum LossSpec {
    /// Softmax cross-entropy (2-class head), mean over voxels weighted by
    /// class weights (one per class), and by each voxel's own weight when
    /// the target has a second channel ([`crate::ops::loss::softmax_cross_entropy`]).
    Ce { class_weights: Vec<f32> },
    /// Binary cross-entropy with logits (1-class head), positive voxels
    /// weighted by `pos_weight`.
    Bce { pos_weight: f32 },
    /// Soft Dice on the foreground probability (either head).
    Dice { smooth: f32 },
}

impl LossSpec {
    pub fn name(&self) -> &'static str {
        match self {
            LossSpec::Ce { .. } => "ce",
            LossSpec::Bce { .. } => "bce",
            LossSpec::Dice { .. } => "dice",
        }
    }
}

/// Tensor operations of one device. Tensors are N, C, D, H, W, f32 except
/// the f16 activations of a folded inference pass ([`Backend::half_storage`]).
#[allow(clippy::type_complexity)]
pub trait Backend {
    /// A tensor on this device (cheap to clone on the GPU: a shared buffer).
    type T: Clone;
    /// Argmax indices saved by max pooling.
    type PoolIdx;
    /// Batch statistics saved by batch norm in training mode.
    type BnSaved;
    /// Optimizer state.
    type Opt;
    /// What every operation runs on (the GPU context; `()` on the CPU).
    type Ctx;

    fn shape(cx: &Self::Ctx, t: &Self::T) -> Shape5;
    fn upload(cx: &Self::Ctx, t: &CpuTensor) -> Result<Self::T>;
    fn download(cx: &Self::Ctx, t: &Self::T) -> Result<CpuTensor>;
    /// The single value of a (1,1,1,1,1) tensor (waits for the device).
    fn scalar(cx: &Self::Ctx, t: &Self::T) -> Result<f64>;

    /// k³ convolution, stride 1, same padding, with bias.
    fn conv(cx: &Self::Ctx, x: &Self::T, w: &Self::T, b: &Self::T) -> Result<Self::T>;
    /// Inference form of [`Backend::conv`]: the input is the channel
    /// concatenation of `xs` (not materialised on the GPU), and ReLU is
    /// applied to the result when `relu` (conv + folded batch norm + ReLU).
    fn conv_fused(cx: &Self::Ctx, xs: &[&Self::T], w: &Self::T, b: &Self::T, relu: bool) -> Result<Self::T>;
    /// `x` in half-precision storage for [`Backend::conv_fused`] (the
    /// folded inference pass with f16 activations): f16 on the GPU
    /// (unchanged if it already is); on the CPU the values rounded to f16,
    /// kept as f32, so the CPU pass rounds where the GPU stores.
    fn half_storage(cx: &Self::Ctx, x: &Self::T) -> Result<Self::T>;
    /// `x` as f32 for the ops that take only f32 (pooling, the transposed
    /// conv, the head): a conversion on the GPU if it is f16, else `x`.
    fn full_precision(cx: &Self::Ctx, x: &Self::T) -> Result<Self::T>;
    /// Gradients of [`Backend::conv`]: (dx if `need_dx`, dw, db).
    fn conv_backward(
        cx: &Self::Ctx,
        x: &Self::T,
        w: &Self::T,
        dy: &Self::T,
        need_dx: bool,
    ) -> Result<(Option<Self::T>, Self::T, Self::T)>;
    /// Transposed convolution, kernel 2, stride 2, with bias.
    fn up(cx: &Self::Ctx, x: &Self::T, w: &Self::T, b: &Self::T) -> Result<Self::T>;
    /// Gradients of [`Backend::up`]: (dx, dw, db).
    fn up_backward(cx: &Self::Ctx, x: &Self::T, w: &Self::T, dy: &Self::T) -> Result<(Self::T, Self::T, Self::T)>;
    /// 2×2×2 max pooling, stride 2.
    fn pool(cx: &Self::Ctx, x: &Self::T) -> Result<(Self::T, Self::PoolIdx)>;
    fn pool_backward(cx: &Self::Ctx, idx: &Self::PoolIdx, x_shape: Shape5, dy: &Self::T) -> Result<Self::T>;
    /// Channel concatenation [a, b].
    fn concat(cx: &Self::Ctx, a: &Self::T, b: &Self::T) -> Result<Self::T>;
    fn concat_backward(cx: &Self::Ctx, dy: &Self::T, c_a: usize) -> Result<(Self::T, Self::T)>;
    /// Batch norm with batch statistics, then a ReLU if `relu` (fused):
    /// (y, saved, new running mean, new running var).
    #[allow(clippy::too_many_arguments)]
    fn bn_train(
        cx: &Self::Ctx,
        x: &Self::T,
        gamma: &Self::T,
        beta: &Self::T,
        rm: &Self::T,
        rv: &Self::T,
        eps: f32,
        momentum: f32,
        relu: bool,
    ) -> Result<(Self::T, Self::BnSaved, Self::T, Self::T)>;
    /// Batch norm with running statistics, then a ReLU if `relu` (fused).
    #[allow(clippy::too_many_arguments)]
    fn bn_infer(
        cx: &Self::Ctx,
        x: &Self::T,
        gamma: &Self::T,
        beta: &Self::T,
        rm: &Self::T,
        rv: &Self::T,
        eps: f32,
        relu: bool,
    ) -> Result<Self::T>;
    /// Frozen batch norm (fine-tuning): the [`Backend::bn_infer`] forward,
    /// with the running statistics kept as constants for
    /// [`Backend::bn_backward`]; nothing is updated. (y, saved).
    #[allow(clippy::too_many_arguments)]
    fn bn_frozen(
        cx: &Self::Ctx,
        x: &Self::T,
        gamma: &Self::T,
        beta: &Self::T,
        rm: &Self::T,
        rv: &Self::T,
        eps: f32,
        relu: bool,
    ) -> Result<(Self::T, Self::BnSaved)>;
    /// Gradients of [`Backend::bn_train`] or [`Backend::bn_frozen`]: (dx, dgamma, dbeta). `relu_out`:
    /// the forward's output when it fused the ReLU (`dy` is then the
    /// gradient w.r.t. that output).
    fn bn_backward(
        cx: &Self::Ctx,
        x: &Self::T,
        gamma: &Self::T,
        saved: &Self::BnSaved,
        relu_out: Option<&Self::T>,
        dy: &Self::T,
    ) -> Result<(Self::T, Self::T, Self::T)>;
    fn relu(cx: &Self::Ctx, x: &Self::T) -> Result<Self::T>;
    /// `dy` where `x > 0` (x may be the ReLU's input or its output).
    fn relu_backward(cx: &Self::Ctx, x: &Self::T, dy: &Self::T) -> Result<Self::T>;
    /// Softmax over channels.
    fn softmax(cx: &Self::Ctx, x: &Self::T) -> Result<Self::T>;
    fn softmax_backward(cx: &Self::Ctx, y: &Self::T, dy: &Self::T) -> Result<Self::T>;
    fn sigmoid(cx: &Self::Ctx, x: &Self::T) -> Result<Self::T>;
    fn sigmoid_backward(cx: &Self::Ctx, y: &Self::T, dy: &Self::T) -> Result<Self::T>;
    /// Element-wise sum.
    fn add(cx: &Self::Ctx, a: &Self::T, b: &Self::T) -> Result<Self::T>;
    /// Loss on the logits and its gradient: (loss (1,1,1,1,1), dlogits).
    /// `target` is (N,1,D,H,W): class indices (CE) or 0/1 (BCE, Dice).
    fn loss(cx: &Self::Ctx, spec: &LossSpec, logits: &Self::T, target: &Self::T) -> Result<(Self::T, Self::T)>;
    /// One optimizer update of `params` from `grads` (same order).
    fn opt_step(cx: &Self::Ctx, opt: &mut Self::Opt, params: &mut [Self::T], grads: &[Self::T]) -> Result<()>;
    /// One update of a running average of weights, in place:
    /// `avg += weight * (current - avg)` ([`crate::ops::optim::average`]).
    fn average(cx: &Self::Ctx, avg: &mut [Self::T], current: &[Self::T], weight: f32) -> Result<()>;
    /// Sets the learning rate of later steps (schedules); state is kept.
    fn set_lr(opt: &mut Self::Opt, lr: f32) -> Result<()>;
}
