//! Batch normalisation over (N, D, H, W) per channel (`shaders/batchnorm.wgsl`),
//! training and inference forward, and backward.
//!
//! A frozen batch norm ([`forward_frozen`]) normalises with the running
//! statistics, as inference does, and its backward treats them as constants
//! (fine-tuning with small batches: PyTorch's `eval()` batch norm, or
//! detectron2's `FrozenBatchNorm2d`, with gamma and beta still learnt).
//!
//! Batch statistics are two-pass (mean, then the centred sum of squares,
//! itself corrected by the residual mean) with fixed-order chunk sums and
//! workgroup trees: accurate for large offsets (values 1000 + N(0, 1)) and
//! bit-identical from run to run (no float atomics). Tensors larger than one
//! storage binding are processed in windows; a channel larger than one
//! binding is split into runs of chunks.
//!
//! Semantics follow PyTorch's `BatchNorm3d`: biased variance to normalise,
//! unbiased variance in the running average,
//! `running = (1 - momentum) * running + momentum * batch`.

use crate::error::{Error, Result};
use crate::gpu::{grid, Arg, GpuContext, GpuTensor, ShaderSource};
use crate::ops::reduce::{chunk_plan, first_pass, flat_windows, new_output};
use crate::tensor::{CpuTensor, Shape5};

pub const SHADER: ShaderSource = crate::shader!("batchnorm", prelude);

/// The vec4 form of `shaders/batchnorm.wgsl`: its partials and element-wise
/// kernels load vec4s (element alias `V`), for tensors whose channels and
/// windows start on 4 elements (built once).
pub fn shader_vec4() -> &'static ShaderSource {
    static S: std::sync::OnceLock<ShaderSource> = std::sync::OnceLock::new();
    S.get_or_init(|| SHADER.form("batchnorm_vec4", "", &super::VEC4_FORM))
}
/// Workgroup size of the reduction kernels (partials and finish).
pub const RED_WG: u32 = 128;
/// Workgroup size of the element-wise kernels.
pub const WG: u32 = 256;
/// Elements per invocation of the element-wise kernels (a workgroup covers
/// a run of `WG * APPLY_PER` elements of one channel).
pub const APPLY_PER: u32 = 4;

/// Batch-norm settings. `momentum` is PyTorch's (weight of the new batch).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BnConfig {
    pub eps: f32,
    pub momentum: f32,
    /// A ReLU fused after the normalisation (forward: `max(y, 0)` in the
    /// same pass; backward: [`backward_through_relu`]). Default false.
    #[serde(default)]
    pub relu: bool,
}

impl Default for BnConfig {
    /// eps 2e-5, momentum 0.1 (running-average decay 0.9), as in the original
    /// QCANet (Chainer).
    fn default() -> Self {
        BnConfig { eps: 2e-5, momentum: 0.1, relu: false }
    }
}

/// Statistics of a training forward pass, kept for backward.
#[derive(Clone, Debug)]
pub struct BnSaved {
    /// Per-channel batch mean, shape (1, C, 1, 1, 1). The buffer written by
    /// [`forward_train`] holds 2·C values: the f32 means, then their
    /// low-order parts (the mean is `hi + lo` in double-float), which
    /// [`backward`] uses when present; a plain (1, C, 1, 1, 1) tensor works too.
    pub mean: GpuTensor,
    /// Per-channel `1 / sqrt(biased var + eps)`, shape (1, C, 1, 1, 1).
    pub invstd: GpuTensor,
    /// The statistics are constants (the running ones, [`forward_frozen`]),
    /// not functions of the batch: the backward drops their terms.
    pub frozen: bool,
}

uniform_params! {
    struct PartParams {
        spatial: u32,
        chunk: u32,
        nchunks: u32,
        nc: u32,
        j0: u32,
        nj: u32,
        c0: u32,
        part_base: u32,
        base_x: u32,
        base_y: u32,
        mode: u32,
        lo_at: u32,
        base_r: u32,
        _pad: [u32; 3],
    }
}

const NO_LO: u32 = u32::MAX;

/// Whether `mean`'s buffer carries the low-order parts of a double-float mean
/// after its C values (as [`forward_train`] writes it).
fn has_lo(mean: &GpuTensor) -> bool {
    mean.buf.size() >= 2 * mean.bytes()
}

uniform_params! {
    struct FinishParams {
        channels: u32,
        samples: u32,
        nchunks: u32,
        one: f32,
        count: f32,
        eps: f32,
        momentum: f32,
        unbias: f32,
        frozen: u32,
        _pad: [u32; 3],
    }
}

uniform_params! {
    struct CoefParams {
        channels: u32,
        eps: f32,
        _pad: [u32; 2],
    }
}

uniform_params! {
    struct ApplyParams {
        n: u32,
        start: u32,
        spatial: u32,
        channels: u32,
        base_x: u32,
        base_y: u32,
        base_out: u32,
        relu: u32,
        base_r: u32,
        _pad: [u32; 3],
    }
}

const MODE_RAW: u32 = 0;
const MODE_CENTRED: u32 = 1;
const MODE_BACKWARD: u32 = 2;
const MODE_BACKWARD_RELU: u32 = 3;

fn channel_shape(c: usize) -> Shape5 {
    Shape5::new(1, c, 1, 1, 1)
}

fn check_params(op: &str, x: &GpuTensor, params: &[(&str, &GpuTensor)]) -> Result<()> {
    let want = channel_shape(x.shape.c);
    for (name, t) in params {
        if t.shape != want {
            return Err(Error::shape(
                op,
                format!("{name} has shape {}, expected {want} for input {}", t.shape, x.shape),
            ));
        }
    }
    if x.numel() == 0 {
        return Err(Error::shape(op, format!("empty input {}", x.shape)));
    }
    if x.numel() > u32::MAX as usize / 2 {
        return Err(Error::shape(op, format!("input {} has too many elements for 32-bit indexing", x.shape)));
    }
    Ok(())
}

/// Whether every value is a multiple of 4: the element-wise and partials
/// kernels then run in the vec4 form ([`shader_vec4`], counts in vec4s).
fn by_vec4(values: &[usize]) -> bool {
    values.iter().all(|v| v % 4 == 0)
}

/// Records the chunk partials of `x` (and `dy` in the backward modes, masked
/// by the fused ReLU output `r > 0` in [`MODE_BACKWARD_RELU`]) into a new
/// (N, C, nchunks) vec4 buffer; returns it and the number of chunks per channel.
fn partials(
    ctx: &GpuContext,
    x: &GpuTensor,
    dy: Option<&GpuTensor>,
    r: Option<&GpuTensor>,
    mean: &GpuTensor,
    mode: u32,
    label: &str,
) -> Result<(GpuTensor, usize)> {
    let s = x.shape;
    let (wg, chunk) = first_pass(ctx, RED_WG);
    let plan = chunk_plan(s.n, s.c, s.spatial(), chunk, ctx.max_window_elems());
    let part = new_output(ctx, Shape5::new(s.n, s.c, 1, plan.nchunks, 4), 0, "batchnorm partials")?;
    let dy = dy.unwrap_or(x);
    let r = r.unwrap_or(dy);
    for seg in &plan.segs {
        let (start, len) = (plan.start(seg), plan.len(seg));
        let wx = x.window(ctx, start, len)?;
        let wy = dy.window(ctx, start, len)?;
        let wr = r.window(ctx, start, len)?;
        let bases = [wx.base, wy.base, wr.base].map(|b| b as usize);
        let v = if by_vec4(&[plan.spatial, plan.chunk]) && by_vec4(&bases) { 4 } else { 1 };
        let p = ctx.pipeline(if v == 4 { shader_vec4() } else { &SHADER }, "bn_partials", &[("WG", wg as f64)])?;
        let pp = PartParams {
            spatial: (plan.spatial / v) as u32,
            chunk: (plan.chunk / v) as u32,
            nchunks: plan.nchunks as u32,
            nc: seg.nc as u32,
            j0: seg.j0 as u32,
            nj: seg.nj as u32,
            c0: seg.c0 as u32,
            part_base: ((seg.n * s.c + seg.c0) * plan.nchunks) as u32,
            base_x: wx.base / v as u32,
            base_y: wy.base / v as u32,
            mode,
            lo_at: if mode >= MODE_BACKWARD && has_lo(mean) { s.c as u32 } else { NO_LO },
            base_r: wr.base / v as u32,
            _pad: [0; 3],
        };
        ctx.dispatch(
            label,
            &p,
            &[
                Arg::Buf(&wx),
                Arg::Buf(&wy),
                Arg::Whole(&mean.buf),
                Arg::Whole(&part.buf),
                Arg::Uniform(bytemuck::bytes_of(&pp)),
                Arg::Buf(&wr),
            ],
            grid((seg.nc * seg.nj) as u64),
        )?;
    }
    Ok((part, plan.nchunks))
}

/// Records `entry` (`bn_normalize` or `bn_dx`) over every element of `out`,
/// with the fused ReLU where `relu` (`bn_dx`: masked by `r > 0`, `r` the
/// fused forward's output).
#[allow(clippy::too_many_arguments)]
fn apply(
    ctx: &GpuContext,
    entry: &str,
    x: &GpuTensor,
    dy: Option<&GpuTensor>,
    r: Option<&GpuTensor>,
    coef: &GpuTensor,
    out: &GpuTensor,
    relu: bool,
    label: &str,
) -> Result<()> {
    let s = x.shape;
    let dy = dy.unwrap_or(x);
    let rt = r.unwrap_or(x);
    let spatial = s.spatial().max(1);
    for r in flat_windows(s.numel(), 4, ctx.max_window_elems()) {
        let wx = x.window(ctx, r.start, r.len())?;
        let wy = dy.window(ctx, r.start, r.len())?;
        let wr = rt.window(ctx, r.start, r.len())?;
        let wo = out.window(ctx, r.start, r.len())?;
        let bases = [wx.base, wy.base, wr.base, wo.base].map(|b| b as usize);
        let v = if by_vec4(&[spatial, r.start, r.len()]) && by_vec4(&bases) { 4 } else { 1 };
        let shader = if v == 4 { shader_vec4() } else { &SHADER };
        let p = ctx.pipeline(shader, entry, &[("WG", WG as f64), ("PER", APPLY_PER as f64)])?;
        let ap = ApplyParams {
            n: (r.len() / v) as u32,
            start: (r.start / v) as u32,
            spatial: (spatial / v) as u32,
            channels: s.c as u32,
            base_x: wx.base / v as u32,
            base_y: wy.base / v as u32,
            base_out: wo.base / v as u32,
            relu: relu as u32,
            base_r: wr.base / v as u32,
            _pad: [0; 3],
        };
        // Each (sample, channel) row the window touches, in runs of
        // WG * APPLY_PER units.
        let rows = (r.end - 1) / spatial - r.start / spatial + 1;
        let runs_per_row = (spatial / v).div_ceil((WG * APPLY_PER) as usize);
        ctx.dispatch(
            label,
            &p,
            &[
                Arg::Buf(&wx),
                Arg::Buf(&wy),
                Arg::Buf(&wo),
                Arg::Whole(&coef.buf),
                Arg::Uniform(bytemuck::bytes_of(&ap)),
                Arg::Buf(&wr),
            ],
            grid((rows * runs_per_row) as u64),
        )?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn finish(
    ctx: &GpuContext,
    entry: &str,
    part: &GpuTensor,
    nchunks: usize,
    x: Shape5,
    bufs: [&GpuTensor; 7],
    cfg: &BnConfig,
    frozen: bool,
    label: &str,
) -> Result<()> {
    // bn_finish_bwd reads `eps` as the flag "mean has low-order parts".
    let eps = if entry == "bn_finish_bwd" {
        if has_lo(bufs[2]) {
            1.0
        } else {
            0.0
        }
    } else {
        cfg.eps
    };
    let count = (x.n * x.spatial()) as f64;
    let fp = FinishParams {
        channels: x.c as u32,
        samples: x.n as u32,
        nchunks: nchunks as u32,
        one: 1.0,
        count: count as f32,
        eps,
        momentum: cfg.momentum,
        unbias: if count > 1.0 { (count / (count - 1.0)) as f32 } else { 1.0 },
        frozen: frozen as u32,
        _pad: [0; 3],
    };
    let p = ctx.pipeline(&SHADER, entry, &[("WG", RED_WG as f64)])?;
    let [gamma, beta, mean, invstd, a, b, coef] = bufs;
    ctx.dispatch(
        label,
        &p,
        &[
            Arg::Whole(&part.buf),
            Arg::Whole(&gamma.buf),
            Arg::Whole(&beta.buf),
            Arg::Whole(&mean.buf),
            Arg::Whole(&invstd.buf),
            Arg::Whole(&a.buf),
            Arg::Whole(&b.buf),
            Arg::Whole(&coef.buf),
            Arg::Uniform(bytemuck::bytes_of(&fp)),
        ],
        grid(x.c as u64),
    )
}

/// Training forward: normalises `x` with its batch statistics (biased
/// variance), updates `running_mean` and `running_var` in place (unbiased
/// variance), and returns `y` (`max(y, 0)` with `cfg.relu`) and the saved
/// statistics. Needs more than one
/// value per channel (N·D·H·W > 1), as PyTorch does.
pub fn forward_train(
    ctx: &GpuContext,
    x: &GpuTensor,
    gamma: &GpuTensor,
    beta: &GpuTensor,
    running_mean: &GpuTensor,
    running_var: &GpuTensor,
    cfg: &BnConfig,
) -> Result<(GpuTensor, BnSaved)> {
    let op = "batchnorm forward_train";
    check_params(
        op,
        x,
        &[("gamma", gamma), ("beta", beta), ("running_mean", running_mean), ("running_var", running_var)],
    )?;
    let s = x.shape;
    if s.n * s.spatial() < 2 {
        return Err(Error::shape(op, format!("input {s} has one value per channel; batch statistics need more")));
    }
    if std::sync::Arc::ptr_eq(&running_mean.buf, &running_var.buf) {
        return Err(Error::shape(op, "running_mean and running_var are the same buffer"));
    }
    let label = format!("{op} {s}");
    let mean = new_output(ctx, channel_shape(s.c), 2 * s.c, "batchnorm mean")?;
    let invstd = new_output(ctx, channel_shape(s.c), 0, "batchnorm invstd")?;
    let coef = new_output(ctx, Shape5::new(1, s.c, 1, 1, 4), 0, "batchnorm coef")?;
    // Pass 1: mean.
    let (part, nchunks) = partials(ctx, x, None, None, &mean, MODE_RAW, &label)?;
    let bufs = [gamma, beta, &mean, &invstd, running_mean, running_var, &coef];
    finish(ctx, "bn_finish_mean", &part, nchunks, s, bufs, cfg, false, &label)?;
    // Pass 2: centred sums -> variance, invstd, running stats, coefficients.
    let (part, nchunks) = partials(ctx, x, None, None, &mean, MODE_CENTRED, &label)?;
    finish(ctx, "bn_finish_var", &part, nchunks, s, bufs, cfg, false, &label)?;
    let y = new_output(ctx, s, 0, "batchnorm y")?;
    apply(ctx, "bn_normalize", x, None, None, &coef, &y, cfg.relu, &label)?;
    Ok((y, BnSaved { mean, invstd, frozen: false }))
}

/// Inference forward: normalises with the running statistics (then the
/// ReLU with `cfg.relu`).
pub fn forward_infer(
    ctx: &GpuContext,
    x: &GpuTensor,
    gamma: &GpuTensor,
    beta: &GpuTensor,
    running_mean: &GpuTensor,
    running_var: &GpuTensor,
    cfg: &BnConfig,
) -> Result<GpuTensor> {
    let op = "batchnorm forward_infer";
    Ok(running_forward(ctx, op, x, gamma, beta, running_mean, running_var, cfg, false)?.0)
}

/// Frozen batch norm for fine-tuning: the inference forward (running
/// statistics; then the ReLU with `cfg.relu`), saving the running mean and
/// `1 / sqrt(running var + eps)` as constants, so [`backward`] (or
/// [`backward_through_relu`]) gives `dx = gamma · invstd · dy` and the
/// gradients of gamma and beta. The running statistics are not changed.
pub fn forward_frozen(
    ctx: &GpuContext,
    x: &GpuTensor,
    gamma: &GpuTensor,
    beta: &GpuTensor,
    running_mean: &GpuTensor,
    running_var: &GpuTensor,
    cfg: &BnConfig,
) -> Result<(GpuTensor, BnSaved)> {
    let (y, saved) =
        running_forward(ctx, "batchnorm forward_frozen", x, gamma, beta, running_mean, running_var, cfg, true)?;
    Ok((y, saved.expect("running_forward saves the statistics when asked")))
}

/// The forward with running statistics ([`forward_infer`]; with `save`, also
/// the frozen statistics of [`forward_frozen`]).
#[allow(clippy::too_many_arguments)]
fn running_forward(
    ctx: &GpuContext,
    op: &str,
    x: &GpuTensor,
    gamma: &GpuTensor,
    beta: &GpuTensor,
    running_mean: &GpuTensor,
    running_var: &GpuTensor,
    cfg: &BnConfig,
    save: bool,
) -> Result<(GpuTensor, Option<BnSaved>)> {
    check_params(
        op,
        x,
        &[("gamma", gamma), ("beta", beta), ("running_mean", running_mean), ("running_var", running_var)],
    )?;
    let s = x.shape;
    let label = format!("{op} {s}");
    let coef = new_output(ctx, Shape5::new(1, s.c, 1, 1, 4), 0, "batchnorm coef")?;
    let cp = CoefParams { channels: s.c as u32, eps: cfg.eps, _pad: [0; 2] };
    let mut args = vec![
        Arg::Whole(&gamma.buf),
        Arg::Whole(&beta.buf),
        Arg::Whole(&running_mean.buf),
        Arg::Whole(&running_var.buf),
        Arg::Whole(&coef.buf),
        Arg::Uniform(bytemuck::bytes_of(&cp)),
    ];
    // A plain (1, C) mean: no low-order parts (`has_lo` is false).
    let saved = if save {
        Some(BnSaved {
            mean: new_output(ctx, channel_shape(s.c), 0, "batchnorm frozen mean")?,
            invstd: new_output(ctx, channel_shape(s.c), 0, "batchnorm frozen invstd")?,
            frozen: true,
        })
    } else {
        None
    };
    if let Some(sv) = &saved {
        args.push(Arg::Whole(&sv.mean.buf));
        args.push(Arg::Whole(&sv.invstd.buf));
    }
    let entry = if save { "bn_frozen_coef" } else { "bn_infer_coef" };
    let p = ctx.pipeline(&SHADER, entry, &[("WG", RED_WG as f64)])?;
    ctx.dispatch(&label, &p, &args, grid((s.c as u64).div_ceil(RED_WG as u64)))?;
    let y = new_output(ctx, s, 0, "batchnorm y")?;
    apply(ctx, "bn_normalize", x, None, None, &coef, &y, cfg.relu, &label)?;
    Ok((y, saved))
}

/// Batch norm with running statistics folded into the convolution before it
/// (inference only): with `s = gamma / sqrt(running_var + eps)` per output
/// channel, `bn(conv(x, w) + b) = conv(x, w·s) + (b − running_mean)·s + beta`.
/// `w` is (C_out, …) with its output channel in dim 0 (a conv's weights),
/// the others (1, C_out, 1, 1, 1). Host-side, in f64, rounded once to f32;
/// done once when a network is prepared for inference
/// ([`crate::model::Net::fold_bn`]). Returns the folded `(w, b)`.
pub fn fold_into_conv(
    w: &CpuTensor,
    b: &CpuTensor,
    gamma: &CpuTensor,
    beta: &CpuTensor,
    running_mean: &CpuTensor,
    running_var: &CpuTensor,
    eps: f32,
) -> Result<(CpuTensor, CpuTensor)> {
    let c = w.shape.n;
    let ch = channel_shape(c);
    for (name, t) in
        [("bias", b), ("gamma", gamma), ("beta", beta), ("running_mean", running_mean), ("running_var", running_var)]
    {
        if t.shape != ch {
            return Err(Error::shape(
                "batchnorm fold_into_conv",
                format!("{name} {} must be {ch} for conv weights {}", t.shape, w.shape),
            ));
        }
    }
    let scale: Vec<f64> =
        (0..c).map(|o| gamma.data[o] as f64 / (running_var.data[o] as f64 + eps as f64).sqrt()).collect();
    let row = w.shape.numel() / c;
    let mut wf = w.clone();
    for (i, v) in wf.data.iter_mut().enumerate() {
        *v = (*v as f64 * scale[i / row]) as f32;
    }
    let bf: Vec<f32> = (0..c)
        .map(|o| ((b.data[o] as f64 - running_mean.data[o] as f64) * scale[o] + beta.data[o] as f64) as f32)
        .collect();
    Ok((wf, CpuTensor::from_vec(ch, bf)))
}

/// Backward of the training forward (or of [`forward_frozen`], as
/// `saved.frozen` says): `(dx, dgamma, dbeta)`.
pub fn backward(
    ctx: &GpuContext,
    x: &GpuTensor,
    gamma: &GpuTensor,
    saved: &BnSaved,
    dy: &GpuTensor,
) -> Result<(GpuTensor, GpuTensor, GpuTensor)> {
    backward_impl(ctx, x, gamma, saved, None, dy)
}

/// Backward of the training forward with the fused ReLU (`cfg.relu`), from
/// its output `r` and the gradient `dy` w.r.t. `r`: [`backward`] of
/// `dy · [r > 0]`, without writing that product out.
pub fn backward_through_relu(
    ctx: &GpuContext,
    x: &GpuTensor,
    gamma: &GpuTensor,
    saved: &BnSaved,
    r: &GpuTensor,
    dy: &GpuTensor,
) -> Result<(GpuTensor, GpuTensor, GpuTensor)> {
    backward_impl(ctx, x, gamma, saved, Some(r), dy)
}

fn backward_impl(
    ctx: &GpuContext,
    x: &GpuTensor,
    gamma: &GpuTensor,
    saved: &BnSaved,
    r: Option<&GpuTensor>,
    dy: &GpuTensor,
) -> Result<(GpuTensor, GpuTensor, GpuTensor)> {
    let op = if r.is_some() { "batchnorm backward through relu" } else { "batchnorm backward" };
    check_params(op, x, &[("gamma", gamma), ("saved mean", &saved.mean), ("saved invstd", &saved.invstd)])?;
    if dy.shape != x.shape {
        return Err(Error::shape(op, format!("dy has shape {}, x has {}", dy.shape, x.shape)));
    }
    if let Some(r) = r.filter(|r| r.shape != x.shape) {
        return Err(Error::shape(op, format!("the ReLU output has shape {}, x has {}", r.shape, x.shape)));
    }
    let s = x.shape;
    let label = format!("{op} {s}");
    let dgamma = new_output(ctx, channel_shape(s.c), 0, "batchnorm dgamma")?;
    let dbeta = new_output(ctx, channel_shape(s.c), 0, "batchnorm dbeta")?;
    let coef = new_output(ctx, Shape5::new(1, s.c, 1, 1, 4), 0, "batchnorm coef")?;
    let mode = if r.is_some() { MODE_BACKWARD_RELU } else { MODE_BACKWARD };
    let (part, nchunks) = partials(ctx, x, Some(dy), r, &saved.mean, mode, &label)?;
    // bn_finish_bwd reads gamma, mean, invstd and writes dgamma, dbeta into the
    // running-stat slots; beta is unused (gamma stands in for the binding).
    let bufs = [gamma, gamma, &saved.mean, &saved.invstd, &dgamma, &dbeta, &coef];
    finish(ctx, "bn_finish_bwd", &part, nchunks, s, bufs, &BnConfig::default(), saved.frozen, &label)?;
    let dx = new_output(ctx, s, 0, "batchnorm dx")?;
    apply(ctx, "bn_dx", x, Some(dy), r, &coef, &dx, r.is_some(), &label)?;
    Ok((dx, dgamma, dbeta))
}

/// Plain-Rust references (f64 accumulation).
pub mod reference {
    use super::BnConfig;
    use crate::tensor::{CpuTensor, Shape5};

    fn per_channel(v: Vec<f64>) -> CpuTensor {
        CpuTensor::from_vec(Shape5::new(1, v.len(), 1, 1, 1), v.into_iter().map(|x| x as f32).collect())
    }

    /// Per-channel (mean, biased variance) in f64, two-pass.
    pub fn batch_stats(x: &CpuTensor) -> (Vec<f64>, Vec<f64>) {
        let s = x.shape;
        let m = (s.n * s.spatial()) as f64;
        let mut mean = vec![0f64; s.c];
        let mut var = vec![0f64; s.c];
        for c in 0..s.c {
            for n in 0..s.n {
                mean[c] += x.channel(n, c).iter().map(|&v| v as f64).sum::<f64>();
            }
            mean[c] /= m;
            for n in 0..s.n {
                var[c] += x.channel(n, c).iter().map(|&v| (v as f64 - mean[c]).powi(2)).sum::<f64>();
            }
            var[c] /= m;
        }
        (mean, var)
    }

    fn normalise(x: &CpuTensor, mean: &[f64], scale: &[f64], beta: &CpuTensor, relu: bool) -> CpuTensor {
        let s = x.shape;
        let mut y = CpuTensor::zeros(s);
        let sp = s.spatial();
        for (i, (o, &v)) in y.data.iter_mut().zip(&x.data).enumerate() {
            let c = (i / sp) % s.c;
            let v = (v as f64 - mean[c]) * scale[c] + beta.data[c] as f64;
            *o = if relu { v.max(0.0) } else { v } as f32;
        }
        y
    }

    /// Returns `(y, mean, invstd, new_running_mean, new_running_var)`.
    pub fn forward_train(
        x: &CpuTensor,
        gamma: &CpuTensor,
        beta: &CpuTensor,
        running_mean: &CpuTensor,
        running_var: &CpuTensor,
        cfg: &BnConfig,
    ) -> (CpuTensor, CpuTensor, CpuTensor, CpuTensor, CpuTensor) {
        let s = x.shape;
        let (mean, var) = batch_stats(x);
        let m = (s.n * s.spatial()) as f64;
        let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + cfg.eps as f64).sqrt()).collect();
        let scale: Vec<f64> = (0..s.c).map(|c| gamma.data[c] as f64 * invstd[c]).collect();
        let y = normalise(x, &mean, &scale, beta, cfg.relu);
        let mom = cfg.momentum as f64;
        let rm: Vec<f64> = (0..s.c).map(|c| (1.0 - mom) * running_mean.data[c] as f64 + mom * mean[c]).collect();
        let rv: Vec<f64> =
            (0..s.c).map(|c| (1.0 - mom) * running_var.data[c] as f64 + mom * var[c] * m / (m - 1.0)).collect();
        (y, per_channel(mean), per_channel(invstd), per_channel(rm), per_channel(rv))
    }

    pub fn forward_infer(
        x: &CpuTensor,
        gamma: &CpuTensor,
        beta: &CpuTensor,
        running_mean: &CpuTensor,
        running_var: &CpuTensor,
        cfg: &BnConfig,
    ) -> CpuTensor {
        let c = x.shape.c;
        let mean: Vec<f64> = running_mean.data.iter().map(|&v| v as f64).collect();
        let scale: Vec<f64> =
            (0..c).map(|i| gamma.data[i] as f64 / (running_var.data[i] as f64 + cfg.eps as f64).sqrt()).collect();
        normalise(x, &mean, &scale, beta, cfg.relu)
    }

    /// The statistics [`super::forward_frozen`] saves: the running mean and
    /// `1 / sqrt(running var + eps)`.
    pub fn frozen_stats(running_mean: &CpuTensor, running_var: &CpuTensor, eps: f32) -> (CpuTensor, CpuTensor) {
        let invstd = running_var.data.iter().map(|&v| 1.0 / (v as f64 + eps as f64).sqrt()).collect();
        (running_mean.clone(), per_channel(invstd))
    }

    /// `(dx, dgamma, dbeta)` of the frozen forward ([`forward_infer`] with
    /// the statistics constant): `dx = gamma · invstd · dy`,
    /// `dgamma = Σ dy · (x − mean) · invstd`, `dbeta = Σ dy`.
    pub fn backward_frozen(
        x: &CpuTensor,
        gamma: &CpuTensor,
        mean: &CpuTensor,
        invstd: &CpuTensor,
        dy: &CpuTensor,
    ) -> (CpuTensor, CpuTensor, CpuTensor) {
        let s = x.shape;
        let sp = s.spatial();
        let mut dbeta = vec![0f64; s.c];
        let mut dgamma = vec![0f64; s.c];
        let mut dx = CpuTensor::zeros(s);
        for (i, ((&v, &g), o)) in x.data.iter().zip(&dy.data).zip(dx.data.iter_mut()).enumerate() {
            let c = (i / sp) % s.c;
            let inv = invstd.data[c] as f64;
            dbeta[c] += g as f64;
            dgamma[c] += g as f64 * (v as f64 - mean.data[c] as f64) * inv;
            *o = (gamma.data[c] as f64 * inv * g as f64) as f32;
        }
        (dx, per_channel(dgamma), per_channel(dbeta))
    }

    /// The backward for what a forward saved: `(dx, dgamma, dbeta)` of the
    /// training forward ([`backward`]) or, with `frozen`, of the frozen one
    /// ([`backward_frozen`]); through the fused ReLU when its output
    /// `relu_out` is given.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_saved(
        x: &CpuTensor,
        gamma: &CpuTensor,
        mean: &CpuTensor,
        invstd: &CpuTensor,
        frozen: bool,
        relu_out: Option<&CpuTensor>,
        dy: &CpuTensor,
    ) -> (CpuTensor, CpuTensor, CpuTensor) {
        let masked;
        let dy = match relu_out {
            Some(r) => {
                masked = crate::ops::activation::reference::relu_backward(r, dy);
                &masked
            }
            None => dy,
        };
        if frozen {
            backward_frozen(x, gamma, mean, invstd, dy)
        } else {
            backward(x, gamma, mean, invstd, dy)
        }
    }

    /// `(dx, dgamma, dbeta)` of the training forward, from its saved mean and invstd.
    pub fn backward(
        x: &CpuTensor,
        gamma: &CpuTensor,
        mean: &CpuTensor,
        invstd: &CpuTensor,
        dy: &CpuTensor,
    ) -> (CpuTensor, CpuTensor, CpuTensor) {
        let s = x.shape;
        let sp = s.spatial();
        let m = (s.n * sp) as f64;
        let mut dbeta = vec![0f64; s.c];
        let mut dgamma = vec![0f64; s.c];
        for (i, (&v, &g)) in x.data.iter().zip(&dy.data).enumerate() {
            let c = (i / sp) % s.c;
            let xhat = (v as f64 - mean.data[c] as f64) * invstd.data[c] as f64;
            dbeta[c] += g as f64;
            dgamma[c] += g as f64 * xhat;
        }
        let mut dx = CpuTensor::zeros(s);
        for (i, o) in dx.data.iter_mut().enumerate() {
            let c = (i / sp) % s.c;
            let inv = invstd.data[c] as f64;
            let xhat = (x.data[i] as f64 - mean.data[c] as f64) * inv;
            *o = (gamma.data[c] as f64 * inv / m * (m * dy.data[i] as f64 - dbeta[c] - xhat * dgamma[c])) as f32;
        }
        (dx, per_channel(dgamma), per_channel(dbeta))
    }

    /// [`backward`] through a ReLU after the batch norm: `r` is the fused
    /// forward's output, `dy` the gradient w.r.t. it.
    pub fn backward_through_relu(
        x: &CpuTensor,
        gamma: &CpuTensor,
        mean: &CpuTensor,
        invstd: &CpuTensor,
        r: &CpuTensor,
        dy: &CpuTensor,
    ) -> (CpuTensor, CpuTensor, CpuTensor) {
        backward(x, gamma, mean, invstd, &crate::ops::activation::reference::relu_backward(r, dy))
    }
}
