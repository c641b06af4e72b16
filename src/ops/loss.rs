//! Losses and their gradients w.r.t. the network output (`shaders/loss.wgsl`):
//! softmax cross-entropy with class weights, BCE with logits with a positive
//! weight, and soft Dice. Each returns `(loss, gradient)`: `loss` is a
//! (1, 1, 1, 1, 1) tensor (read it with `ctx.read_f32(&loss.buf, 0, 1)`), the
//! gradient has the input's shape. Reductions are deterministic chunk sums
//! and workgroup trees (no float atomics).

use crate::error::{Error, Result};
use crate::gpu::{grid, split_units, Arg, GpuContext, GpuTensor, ShaderSource};
use crate::ops::reduce::{flat_windows, new_output, REDUCE_CHUNK};
use crate::tensor::Shape5;

pub const SHADER: ShaderSource = crate::shader!("loss", prelude);
/// Workgroup size of the reduction kernels.
pub const RED_WG: u32 = 128;
/// Workgroup size of the gradient kernels.
pub const WG: u32 = 256;

uniform_params! {
    #[derive(Default)]
    struct Params {
        n: u32,
        spatial: u32,
        classes: u32,
        chunk: u32,
        nchunks: u32,
        part_base: u32,
        base_a: u32,
        base_b: u32,
        base_out: u32,
        tc: u32,
        pos_weight: f32,
        _pad1: u32,
    }
}

uniform_params! {
    struct FinishParams {
        count: u32,
        mode: u32,
        numel: f32,
        smoothing: f32,
    }
}

const MODE_CE: u32 = 0;
const MODE_BCE: u32 = 1;
const MODE_DICE: u32 = 2;

fn scalar_shape() -> Shape5 {
    Shape5::new(1, 1, 1, 1, 1)
}

fn check_target(op: &str, x: &GpuTensor, target: &GpuTensor) -> Result<()> {
    check_target_channels(op, x, target, 1)
}

/// [`check_target`] for a target of `channels` channels.
fn check_target_channels(op: &str, x: &GpuTensor, target: &GpuTensor, channels: usize) -> Result<()> {
    let want = x.shape.with_c(channels);
    if target.shape != want {
        return Err(Error::shape(
            op,
            format!("target has shape {}, expected {want} for input {}", target.shape, x.shape),
        ));
    }
    if x.numel() == 0 {
        return Err(Error::shape(op, format!("empty input {}", x.shape)));
    }
    if x.numel() > u32::MAX as usize / 2 {
        return Err(Error::shape(op, format!("input {} has too many elements for 32-bit indexing", x.shape)));
    }
    Ok(())
}

/// Sums `count` partials into the loss and its sums (see `loss_finish`).
fn finish(
    ctx: &GpuContext,
    part: &GpuTensor,
    count: usize,
    fp: FinishParams,
    label: &str,
) -> Result<(GpuTensor, GpuTensor)> {
    let loss = new_output(ctx, scalar_shape(), 0, "loss")?;
    let sums = new_output(ctx, Shape5::new(1, 1, 1, 1, 4), 0, "loss sums")?;
    let p = ctx.pipeline(&SHADER, "loss_finish", &[("WG", RED_WG as f64)])?;
    let fp = FinishParams { count: count as u32, ..fp };
    ctx.dispatch(
        label,
        &p,
        &[Arg::Whole(&part.buf), Arg::Whole(&loss.buf), Arg::Whole(&sums.buf), Arg::Uniform(bytemuck::bytes_of(&fp))],
        [1, 1, 1],
    )?;
    Ok((loss, sums))
}

/// PyTorch `CrossEntropyLoss(weight = class_weights, reduction = 'mean')` over
/// logits (N, K, D, H, W) and class indices stored as f32 in `target`
/// (N, 1, D, H, W): `Σ_i w[t_i]·(−log softmax(z_i)[t_i]) / Σ_i w[t_i]`, and its
/// gradient w.r.t. the logits. A target of two channels (N, 2, D, H, W)
/// holds each voxel's class index and then its own weight `v_i` (a weight
/// map, e.g. [`crate::train::separation`]'s): the loss is then
/// `Σ_i v_i·w[t_i]·(−log softmax(z_i)[t_i]) / Σ_i v_i·w[t_i]`. A target that
/// is not an integer in `0..K`, or a voxel weight that is negative or not
/// finite, makes the loss NaN (and its voxel's gradient 0): checked on the
/// GPU and seen when the caller reads the loss, so a training step never
/// waits for the GPU in the middle (the CPU reference errors instead). If
/// every voxel's weight is 0 the loss is NaN, as in PyTorch.
pub fn softmax_cross_entropy(
    ctx: &GpuContext,
    logits: &GpuTensor,
    target: &GpuTensor,
    class_weights: &[f32],
) -> Result<(GpuTensor, GpuTensor)> {
    let op = "softmax_cross_entropy";
    let tc = if target.shape.c == 2 { 2 } else { 1 };
    check_target_channels(op, logits, target, tc)?;
    let s = logits.shape;
    let k = s.c;
    if class_weights.len() != k {
        return Err(Error::shape(op, format!("{} class weights for {k} classes (logits {s})", class_weights.len())));
    }
    if let Some(w) = class_weights.iter().find(|w| !w.is_finite() || **w < 0.0) {
        return Err(Error::invalid(format!("{op}: class weight {w} is not a finite non-negative number")));
    }
    let label = format!("{op} {s}");
    let spatial = s.spatial();
    let max = ctx.max_window_elems();
    // Each voxel needs all K classes, so windows hold whole samples.
    let groups = split_units(s.n, k.max(tc) * spatial, max, op)?;
    let chunk = REDUCE_CHUNK.min(spatial);
    let nchunks = spatial.div_ceil(chunk);
    let weights = ctx.upload_slice(Shape5::new(1, k, 1, 1, 1), class_weights)?;
    let part = new_output(ctx, Shape5::new(s.n, 1, 1, nchunks, 4), 0, "cross-entropy partials")?;
    let pp = ctx.pipeline(&SHADER, "ce_partials", &[("WG", RED_WG as f64)])?;
    let windows = |g: &std::ops::Range<usize>| -> Result<_> {
        let wz = logits.window(ctx, g.start * k * spatial, g.len() * k * spatial)?;
        let wt = target.window(ctx, g.start * tc * spatial, g.len() * tc * spatial)?;
        let params = Params {
            n: g.len() as u32,
            spatial: spatial as u32,
            classes: k as u32,
            chunk: chunk as u32,
            nchunks: nchunks as u32,
            part_base: (g.start * nchunks) as u32,
            base_a: wz.base,
            base_b: wt.base,
            tc: tc as u32,
            ..Default::default()
        };
        Ok((wz, wt, params))
    };
    for g in &groups {
        let (wz, wt, params) = windows(g)?;
        ctx.dispatch(
            &label,
            &pp,
            &[
                Arg::Buf(&wz),
                Arg::Buf(&wt),
                Arg::Whole(&weights.buf),
                Arg::Whole(&part.buf),
                Arg::Whole(&part.buf),
                Arg::Whole(&part.buf),
                Arg::Uniform(bytemuck::bytes_of(&params)),
            ],
            grid((g.len() * nchunks) as u64),
        )?;
    }
    let fp = FinishParams { count: 0, mode: MODE_CE, numel: 0.0, smoothing: 0.0 };
    let (loss, sums) = finish(ctx, &part, s.n * nchunks, fp, &label)?;
    let grad = new_output(ctx, s, 0, "cross-entropy gradient")?;
    let pg = ctx.pipeline(&SHADER, "ce_grad", &[("WG", WG as f64)])?;
    for g in &groups {
        let (wz, wt, mut params) = windows(g)?;
        let wg = grad.window(ctx, g.start * k * spatial, g.len() * k * spatial)?;
        params.base_out = wg.base;
        ctx.dispatch(
            &label,
            &pg,
            &[
                Arg::Buf(&wz),
                Arg::Buf(&wt),
                Arg::Whole(&weights.buf),
                Arg::Whole(&part.buf),
                Arg::Buf(&wg),
                Arg::Whole(&sums.buf),
                Arg::Uniform(bytemuck::bytes_of(&params)),
            ],
            grid(((g.len() * spatial) as u64).div_ceil(WG as u64)),
        )?;
    }
    Ok((loss, grad))
}

/// Partials of a two-input element-wise reduction (`bce_partials`,
/// `dice_partials`) over the contiguous runs `runs` = (start in a, start in
/// b, length); returns the partials and their count.
fn pair_partials(
    ctx: &GpuContext,
    entry: &str,
    a: &GpuTensor,
    b: &GpuTensor,
    runs: &[(usize, usize, usize)],
    pos_weight: f32,
    label: &str,
) -> Result<(GpuTensor, usize)> {
    let max = ctx.max_window_elems();
    let chunk = REDUCE_CHUNK.min(max);
    let mut plan = Vec::new();
    let mut count = 0;
    for &(sa, sb, len) in runs {
        for r in flat_windows(len, chunk, max) {
            let nch = r.len().div_ceil(chunk);
            plan.push((sa + r.start, sb + r.start, r.len(), count, nch));
            count += nch;
        }
    }
    let part = new_output(ctx, Shape5::new(1, 1, 1, count, 4), 0, "loss partials")?;
    let p = ctx.pipeline(&SHADER, entry, &[("WG", RED_WG as f64)])?;
    for (sa, sb, len, base, nch) in plan {
        let wa = a.window(ctx, sa, len)?;
        let wb = b.window(ctx, sb, len)?;
        let params = Params {
            n: len as u32,
            chunk: chunk as u32,
            nchunks: nch as u32,
            part_base: base as u32,
            base_a: wa.base,
            base_b: wb.base,
            pos_weight,
            ..Default::default()
        };
        ctx.dispatch(
            label,
            &p,
            &[
                Arg::Buf(&wa),
                Arg::Buf(&wb),
                Arg::Whole(&part.buf),
                Arg::Whole(&part.buf),
                Arg::Whole(&part.buf),
                Arg::Whole(&part.buf),
                Arg::Uniform(bytemuck::bytes_of(&params)),
            ],
            grid(nch as u64),
        )?;
    }
    Ok((part, count))
}

#[allow(clippy::too_many_arguments)]
/// Records a gradient kernel (`bce_grad`, `dice_grad`, `fill_zero`) over the
/// runs (start in a, start in b, start in out, length).
fn pair_grad(
    ctx: &GpuContext,
    entry: &str,
    a: &GpuTensor,
    b: &GpuTensor,
    out: &GpuTensor,
    sums: &GpuTensor,
    runs: &[(usize, usize, usize, usize)],
    pos_weight: f32,
    label: &str,
) -> Result<()> {
    let max = ctx.max_window_elems();
    let p = ctx.pipeline(&SHADER, entry, &[("WG", WG as f64)])?;
    for &(sa, sb, so, len) in runs {
        for r in flat_windows(len, 1, max) {
            let wa = a.window(ctx, sa + r.start, r.len())?;
            let wb = b.window(ctx, sb + r.start, r.len())?;
            let wo = out.window(ctx, so + r.start, r.len())?;
            let params = Params {
                n: r.len() as u32,
                base_a: wa.base,
                base_b: wb.base,
                base_out: wo.base,
                pos_weight,
                ..Default::default()
            };
            ctx.dispatch(
                label,
                &p,
                &[
                    Arg::Buf(&wa),
                    Arg::Buf(&wb),
                    Arg::Whole(&sums.buf),
                    Arg::Whole(&sums.buf),
                    Arg::Buf(&wo),
                    Arg::Whole(&sums.buf),
                    Arg::Uniform(bytemuck::bytes_of(&params)),
                ],
                grid((r.len() as u64).div_ceil(WG as u64)),
            )?;
        }
    }
    Ok(())
}

/// PyTorch `BCEWithLogitsLoss(pos_weight, reduction = 'mean')` on a 1-channel
/// output (N, 1, D, H, W) with targets in [0, 1] of the same shape, in the
/// stable log-sum-exp form; and its gradient w.r.t. the logits.
pub fn bce_with_logits(
    ctx: &GpuContext,
    logits: &GpuTensor,
    target: &GpuTensor,
    pos_weight: f32,
) -> Result<(GpuTensor, GpuTensor)> {
    let op = "bce_with_logits";
    if logits.shape.c != 1 {
        return Err(Error::shape(op, format!("logits {} must have one channel", logits.shape)));
    }
    check_target(op, logits, target)?;
    if !pos_weight.is_finite() || pos_weight < 0.0 {
        return Err(Error::invalid(format!("{op}: pos_weight {pos_weight} is not a finite non-negative number")));
    }
    let label = format!("{op} {}", logits.shape);
    let n = logits.numel();
    let (part, count) = pair_partials(ctx, "bce_partials", logits, target, &[(0, 0, n)], pos_weight, &label)?;
    let fp = FinishParams { count: 0, mode: MODE_BCE, numel: n as f32, smoothing: 0.0 };
    let (loss, sums) = finish(ctx, &part, count, fp, &label)?;
    let grad = new_output(ctx, logits.shape, 0, "bce gradient")?;
    pair_grad(ctx, "bce_grad", logits, target, &grad, &sums, &[(0, 0, 0, n)], pos_weight, &label)?;
    Ok((loss, grad))
}

/// Soft Dice loss `1 − (2 Σ p t + smooth) / (Σ p + Σ t + smooth)` over the
/// whole batch, on probabilities `probs` (N, K, D, H, W) with channel
/// `channel` as foreground and a binary target (N, 1, D, H, W); and its
/// gradient w.r.t. `probs` (zero in the other channels).
pub fn soft_dice(
    ctx: &GpuContext,
    probs: &GpuTensor,
    target: &GpuTensor,
    channel: usize,
    smooth: f32,
) -> Result<(GpuTensor, GpuTensor)> {
    let op = "soft_dice";
    check_target(op, probs, target)?;
    let s = probs.shape;
    if channel >= s.c {
        return Err(Error::shape(op, format!("foreground channel {channel} out of range for probabilities {s}")));
    }
    if !smooth.is_finite() || smooth < 0.0 {
        return Err(Error::invalid(format!("{op}: smooth {smooth} is not a finite non-negative number")));
    }
    let label = format!("{op} {s}");
    let sp = s.spatial();
    let runs: Vec<_> = (0..s.n).map(|n| (s.idx(n, channel, 0, 0, 0), n * sp, sp)).collect();
    let (part, count) = pair_partials(ctx, "dice_partials", probs, target, &runs, 0.0, &label)?;
    let fp = FinishParams { count: 0, mode: MODE_DICE, numel: 0.0, smoothing: smooth };
    let (loss, sums) = finish(ctx, &part, count, fp, &label)?;
    let grad = new_output(ctx, s, 0, "dice gradient")?;
    let mut fg = Vec::new();
    let mut other = Vec::new();
    for n in 0..s.n {
        for c in 0..s.c {
            let at = s.idx(n, c, 0, 0, 0);
            if c == channel {
                fg.push((at, n * sp, at, sp));
            } else {
                other.push((at, n * sp, at, sp));
            }
        }
    }
    pair_grad(ctx, "dice_grad", probs, target, &grad, &sums, &fg, 0.0, &label)?;
    pair_grad(ctx, "fill_zero", probs, target, &grad, &sums, &other, 0.0, &label)?;
    Ok((loss, grad))
}

/// Plain-Rust references (f64 arithmetic), returning `(loss, gradient)`.
#[allow(clippy::needless_range_loop)]
pub mod reference {
    use crate::error::{Error, Result};
    use crate::tensor::CpuTensor;

    pub fn softmax_cross_entropy(
        logits: &CpuTensor,
        target: &CpuTensor,
        class_weights: &[f32],
    ) -> Result<(f64, CpuTensor)> {
        let s = logits.shape;
        let sp = s.spatial();
        let k = s.c;
        // One channel: class indices; two: class indices, then voxel weights.
        let tc = target.shape.c;
        if target.shape != s.with_c(1) && target.shape != s.with_c(2) {
            return Err(Error::shape(
                "softmax_cross_entropy",
                format!("target has shape {}, expected {} or {}", target.shape, s.with_c(1), s.with_c(2)),
            ));
        }
        let mut grad = CpuTensor::zeros(s);
        let (mut num, mut den) = (0f64, 0f64);
        let mut probs = vec![0f64; k];
        for n in 0..s.n {
            for v in 0..sp {
                let t = target.data[n * tc * sp + v];
                if !(t >= 0.0 && (t as usize) < k && t.fract() == 0.0) {
                    return Err(Error::invalid(format!("softmax_cross_entropy: target {t} is not a class in 0..{k}")));
                }
                let t = t as usize;
                let vw = if tc == 2 { target.data[n * tc * sp + sp + v] } else { 1.0 };
                if !(vw >= 0.0 && vw.is_finite()) {
                    return Err(Error::invalid(format!(
                        "softmax_cross_entropy: voxel weight {vw} is not a finite non-negative number"
                    )));
                }
                let z: Vec<f64> = (0..k).map(|c| logits.data[s.idx(n, c, 0, 0, 0) + v] as f64).collect();
                let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let se: f64 = z.iter().map(|&x| (x - m).exp()).sum();
                for c in 0..k {
                    probs[c] = (z[c] - m).exp() / se;
                }
                let w = class_weights[t] as f64 * vw as f64;
                num += w * (m + se.ln() - z[t]);
                den += w;
                for c in 0..k {
                    grad.data[s.idx(n, c, 0, 0, 0) + v] = (w * (probs[c] - if c == t { 1.0 } else { 0.0 })) as f32;
                }
            }
        }
        for g in grad.data.iter_mut() {
            *g = (*g as f64 / den) as f32;
        }
        Ok((num / den, grad))
    }

    pub fn bce_with_logits(logits: &CpuTensor, target: &CpuTensor, pos_weight: f32) -> (f64, CpuTensor) {
        let m = logits.data.len() as f64;
        let pw = pos_weight as f64;
        let mut grad = CpuTensor::zeros(logits.shape);
        let mut total = 0f64;
        for (i, (&x, &t)) in logits.data.iter().zip(&target.data).enumerate() {
            let (x, t) = (x as f64, t as f64);
            let lw = 1.0 + (pw - 1.0) * t;
            total += (1.0 - t) * x + lw * ((-x.abs()).exp().ln_1p() + (-x).max(0.0));
            let sig_neg = 1.0 / (1.0 + x.exp());
            grad.data[i] = (((1.0 - t) - lw * sig_neg) / m) as f32;
        }
        (total / m, grad)
    }

    pub fn soft_dice(probs: &CpuTensor, target: &CpuTensor, channel: usize, smooth: f32) -> (f64, CpuTensor) {
        let s = probs.shape;
        let sp = s.spatial();
        let (mut i, mut p, mut t) = (0f64, 0f64, 0f64);
        for n in 0..s.n {
            for (&q, &y) in probs.channel(n, channel).iter().zip(&target.data[n * sp..(n + 1) * sp]) {
                i += q as f64 * y as f64;
                p += q as f64;
                t += y as f64;
            }
        }
        let sm = smooth as f64;
        let a = 2.0 * i + sm;
        let u = p + t + sm;
        let mut grad = CpuTensor::zeros(s);
        for n in 0..s.n {
            let at = s.idx(n, channel, 0, 0, 0);
            for v in 0..sp {
                let y = target.data[n * sp + v] as f64;
                grad.data[at + v] = (-(2.0 * y * u - a) / (u * u)) as f32;
            }
        }
        (1.0 - a / u, grad)
    }
}
