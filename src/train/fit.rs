//! The training loop on in-memory samples (the file-based command wraps it).

use std::time::Instant;

use rand::{Rng, SeedableRng};

use super::average::WeightAverage;
use super::objects::Objects;
use super::patch::{random_patch_near, Augment, Sample};
use super::plot::EpochRecord;
use super::prefetch::prefetch;
use super::separation::{loss_target, Separation};
use super::validate::validate_sample;
use crate::error::{Error, Result};
use crate::metrics::instances::{best_setting, InstanceScores, InstanceValidation, Setting};
use crate::model::{Backend, LossSpec, Net};
use crate::progress::Progress;
use crate::tensor::{CpuTensor, Shape5};

/// Loop settings.
#[derive(Clone, Debug)]
pub struct FitSettings {
    /// Patch side (rounded up to the network's side multiple).
    pub patch: usize,
    pub batch: usize,
    pub epochs: usize,
    /// Stop after the first epoch that ends this long after `fit` started
    /// (None: run every epoch).
    pub time_limit: Option<std::time::Duration>,
    /// Train for this long (validation included): the learning rate follows
    /// its cosine over the elapsed fraction of the budget, the epoch in
    /// progress when it is spent ends after that step, and `epochs` is a
    /// maximum (None: the schedule spans `epochs * steps_per_epoch` steps).
    pub time_budget: Option<std::time::Duration>,
    /// Time a resumed run spent in its earlier epochs (counted against
    /// `time_limit` and `time_budget`).
    pub elapsed_before: std::time::Duration,
    pub steps_per_epoch: usize,
    pub loss: LossSpec,
    pub augment: Augment,
    /// Share of the training patches centred on an object of the targets,
    /// every object of the training set equally likely ([`Objects`]; 0:
    /// every patch at a random position).
    pub object_patches: f32,
    /// Separation weight map on each training target ([`super::separation::weighted_target`]);
    /// None: every voxel weighs 1.
    pub separation: Option<Separation>,
    pub seed: u64,
    /// Validation tile side and overlap (whole volumes predicted in tiles).
    pub val_tile: usize,
    pub val_overlap: usize,
    /// Batches for re-estimating the BN running statistics before each
    /// validation (0: none); see [`Net::recalibrate_bn`].
    pub bn_recalibration: usize,
    /// Also score marker detection on validation (NDN runs): see
    /// [`crate::metrics::marker_detection`].
    pub detection: bool,
    /// Learning rate of the first and of the last step; in between it
    /// follows a cosine (equal values: constant).
    pub lr: f32,
    pub lr_final: f32,
    /// Report progress: a bar on a terminal, else log lines at a steady
    /// pace (see [`crate::progress`]).
    pub progress: bool,
    /// Score every validation volume through the whole instance stage with a
    /// partner network ([`InstanceValidation`]; its volumes in the order of
    /// the validation samples).
    pub instances: Option<InstanceValidation>,
}

/// Cosine learning-rate decay: `lr` at step 0, `lr_final` at step
/// `total - 1` (0-based global step over the whole run).
pub fn cosine_lr(lr: f32, lr_final: f32, step: usize, total: usize) -> f32 {
    if total <= 1 {
        return lr;
    }
    cosine_lr_at(lr, lr_final, step.min(total - 1) as f64 / (total - 1) as f64)
}

/// The same cosine at a fraction `t` of the run (clamped to 0..=1): with a
/// time budget, `t` is the elapsed fraction of it.
pub fn cosine_lr_at(lr: f32, lr_final: f32, t: f64) -> f32 {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let c = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
    (lr_final as f64 + (lr as f64 - lr_final as f64) * c) as f32
}

/// Where a batch's patches are cut: each at a random position, or a
/// `fraction` of them (drawn per patch) centred on one of `objects`, every
/// object equally likely ([`Objects`]).
#[derive(Clone, Copy, Debug)]
pub struct Centring<'a> {
    pub objects: &'a Objects,
    pub fraction: f32,
}

/// A batch of random augmented patches: image (N,1,p,p,p), target
/// (N,1,p,p,p) and, when a sample has them, the target's object weights
/// (N,1,p,p,p; 1 for the patches of samples without). With `centring`
/// (indexing `samples`), a share of them is centred on an object; without,
/// every random number drawn is the same as before centring existed.
pub fn random_batch(
    samples: &[Sample],
    patch: usize,
    batch: usize,
    aug: &Augment,
    centring: Option<Centring>,
    rng: &mut impl Rng,
) -> (CpuTensor, CpuTensor, Option<CpuTensor>) {
    let shape = Shape5::new(batch, 1, patch, patch, patch);
    let mut img = Vec::with_capacity(shape.numel());
    let mut tgt = Vec::with_capacity(shape.numel());
    let weighed = samples.iter().any(|s| s.weight.is_some());
    let mut wts = Vec::with_capacity(if weighed { shape.numel() } else { 0 });
    for _ in 0..batch {
        let picked = match centring {
            Some(c) if !c.objects.is_empty() && c.fraction > 0.0 && rng.random_bool(c.fraction.min(1.0) as f64) => {
                c.objects.pick(rng)
            }
            _ => None,
        };
        let (s, centre) = match picked {
            Some((si, c)) => (&samples[si], Some(c)),
            None => (&samples[rng.random_range(0..samples.len())], None),
        };
        let p = random_patch_near(s, centre, [patch; 3], aug, rng);
        if weighed {
            match p.weight {
                Some(w) => wts.extend(w),
                None => wts.extend(std::iter::repeat_n(1.0, p.target.len())),
            }
        }
        img.extend(p.image);
        tgt.extend(p.target);
    }
    let wts = weighed.then(|| CpuTensor::from_vec(shape, wts));
    (CpuTensor::from_vec(shape, img), CpuTensor::from_vec(shape, tgt), wts)
}

/// The validation volumes' instance scores at the best setting of the grid.
#[derive(Clone, Debug)]
pub struct InstanceMeans {
    pub setting: Setting,
    /// Means over the volumes at that setting.
    pub f1: f64,
    pub seg: f64,
    pub iou: f64,
    /// Each volume's scores at that setting.
    pub per_volume: Vec<InstanceScores>,
}

/// The best setting by mean scores over the volumes ([`best_setting`]: F1,
/// then SEG, as `calibrate` ranks), given each volume's scores at every
/// setting of `settings`; None when there are no volumes or one was not
/// scored.
pub fn instance_means(scored: &[Option<Vec<InstanceScores>>], settings: &[Setting]) -> Option<InstanceMeans> {
    let all: Vec<&Vec<InstanceScores>> = scored.iter().map(|v| v.as_ref()).collect::<Option<_>>()?;
    if all.is_empty() || all.iter().any(|v| v.len() != settings.len()) {
        return None;
    }
    let means: Vec<(f64, f64, f64)> =
        (0..settings.len()).map(|i| InstanceScores::means(all.iter().map(|v| &v[i]))).collect();
    let ranked: Vec<(f64, f64)> = means.iter().map(|&(f1, seg, _)| (f1, seg)).collect();
    let b = best_setting(settings, &ranked)?;
    let (f1, seg, iou) = means[b];
    Some(InstanceMeans { setting: settings[b], f1, seg, iou, per_volume: all.iter().map(|v| v[b]).collect() })
}

/// The random generator of one epoch (so a resumed run continues the same
/// sequence of patches).
pub fn epoch_rng(seed: u64, epoch: usize) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Trains epochs `first_epoch..=settings.epochs` (1-based): per epoch
/// `steps_per_epoch` steps on random patches of `train`, then validation
/// on every whole volume of `val` (mean loss, mean foreground IoU). Calls
/// `on_epoch` after each epoch (checkpoints, logs); returns the records.
///
/// With `average`, it is updated after every step, and each epoch validates
/// the averaged weights instead of the last step's (batch-norm statistics
/// re-estimated for them): `on_epoch` then gets the network holding the
/// averaged weights, and the training weights as its last argument (None
/// without an average: the network holds them).
#[allow(clippy::too_many_arguments)]
pub fn fit<B: Backend>(
    net: &mut Net<B>,
    cx: &B::Ctx,
    opt: &mut B::Opt,
    train: &[Sample],
    val: &[Sample],
    s: &FitSettings,
    first_epoch: usize,
    mut average: Option<&mut WeightAverage<B>>,
    mut on_epoch: impl FnMut(&EpochRecord, &Net<B>, &B::Opt, Option<&[B::T]>) -> Result<()>,
) -> Result<Vec<EpochRecord>> {
    if train.is_empty() {
        return Err(Error::invalid("no training samples"));
    }
    if s.batch == 0 || s.steps_per_epoch == 0 {
        return Err(Error::invalid("batch and steps per epoch must be at least 1"));
    }
    let m = net.cfg.side_multiple();
    let patch = s.patch.div_ceil(m).max(1) * m;
    if patch != s.patch {
        log::info!("patch side {} rounded up to {patch} (a multiple of {m})", s.patch);
    }
    let objects = (s.object_patches > 0.0).then(|| Objects::index(train));
    if let Some(o) = &objects {
        log::info!(
            "{:.0} % of the patches centred on one of the {} objects of the training targets",
            100.0 * s.object_patches.min(1.0),
            o.len()
        );
        if o.is_empty() {
            log::warn!("the training targets hold no object: every patch is at a random position");
        }
    }
    let centring = objects.as_ref().map(|objects| Centring { objects, fraction: s.object_patches });
    let mut records = Vec::new();
    let mut edge_warned = false;
    let started = Instant::now();
    let elapsed = || s.elapsed_before + started.elapsed();
    let budget_spent = || s.time_budget.is_some_and(|b| elapsed() >= b);
    for epoch in first_epoch..=s.epochs {
        let t0 = Instant::now();
        let mut rng = epoch_rng(s.seed, epoch);
        let bar = if s.progress {
            Progress::bar(&format!("epoch {epoch}/{} step", s.epochs), s.steps_per_epoch as u64)
        } else {
            Progress::hidden()
        };
        // The next batch is cut, augmented and weighed on a second thread
        // while this one's step runs (the same batches as made in line).
        let (aug, sep, batch) = (&s.augment, s.separation, s.batch);
        let make = move || {
            let (x, t, w) = random_batch(train, patch, batch, aug, centring, &mut rng);
            (x, loss_target(t, sep.as_ref(), w.as_ref()))
        };
        let (stepped, batches) = prefetch(s.steps_per_epoch, 1, make, |made| -> Result<(f64, usize)> {
            let mut loss_sum = 0.0;
            let mut steps = 0;
            for step in 0..s.steps_per_epoch {
                let global = (epoch - 1) * s.steps_per_epoch + step;
                let lr = match s.time_budget {
                    Some(b) => cosine_lr_at(s.lr, s.lr_final, elapsed().as_secs_f64() / b.as_secs_f64().max(1e-9)),
                    None => cosine_lr(s.lr, s.lr_final, global, s.epochs * s.steps_per_epoch),
                };
                B::set_lr(opt, lr)?;
                // None only if making a batch panicked: prefetch resumes it.
                let Some((x, t)) = made.next() else { break };
                let x = B::upload(cx, &x)?;
                let t = B::upload(cx, &t)?;
                let l = net.train_step(cx, &x, &t, &s.loss, opt)?;
                if let Some(a) = average.as_deref_mut() {
                    a.update(cx, &net.params)?;
                }
                let l = B::scalar(cx, &l)?;
                if !l.is_finite() {
                    return Err(Error::invalid(format!(
                        "training diverged: loss {l} at epoch {epoch} step {}; lower the learning rate \
                         (a target that is not a class index also gives a NaN loss)",
                        step + 1
                    )));
                }
                loss_sum += l;
                steps += 1;
                bar.set_message(format!("loss {:.4}", loss_sum / steps as f64));
                bar.inc(1);
                if budget_spent() {
                    break;
                }
            }
            Ok((loss_sum, steps))
        });
        let (loss_sum, steps) = stepped?;
        bar.finish();
        let out_of_budget = budget_spent();
        if out_of_budget && steps < s.steps_per_epoch {
            log::info!("time budget spent after step {steps} of {} of epoch {epoch}: validating", s.steps_per_epoch);
        }
        // Validate (and hand to on_epoch) the averaged weights; the training
        // weights come back after on_epoch.
        if let Some(a) = average.as_deref_mut() {
            std::mem::swap(&mut net.params, &mut a.params);
        }
        if s.bn_recalibration > 0 {
            // Its own random stream, so training patches do not depend on it.
            // The statistics describe the images inference sees: normalised
            // volumes with no intensity augmentation (flips keep the
            // statistics' distribution, so they stay). Augmented patches
            // (gain 0.5-4 by default) would give means and variances several
            // times those of any real input, and with them shifted
            // activations at inference.
            let mut rng = epoch_rng(s.seed ^ 0xB4_7C_4E_0B, epoch);
            let plain = s.augment.intensity_off();
            let batches = (0..s.bn_recalibration).map(|_| {
                let (x, _, _) = random_batch(train, patch, s.batch, &plain, None, &mut rng);
                B::upload(cx, &x)
            });
            let n = net.recalibrate_bn(cx, batches)?;
            log::debug!("epoch {epoch}: batch-norm statistics re-estimated from {n} batches");
        }
        let (mut vl, mut vi, mut vd) = (0.0, 0.0, 0.0);
        if let Some(iv) = &s.instances {
            if iv.volumes.len() != val.len() {
                return Err(Error::invalid(format!(
                    "instance validation has {} volumes for {} validation samples",
                    iv.volumes.len(),
                    val.len()
                )));
            }
        }
        // Each volume's instance scores at every setting of the grid.
        let mut scored: Vec<Option<Vec<InstanceScores>>> = Vec::with_capacity(val.len());
        for (k, v) in val.iter().enumerate() {
            let inst = s.instances.as_ref().map(|iv| (&iv.volumes[k], iv));
            let r = validate_sample(
                net,
                cx,
                v,
                s.val_tile.max(m),
                s.val_overlap,
                &s.loss,
                s.separation.as_ref(),
                s.detection,
                inst,
            )?;
            vl += r.loss;
            vi += r.iou;
            vd += r.detection.unwrap_or(f64::NAN);
            scored.push(r.instances);
        }
        let inst = instance_means(&scored, s.instances.as_ref().map(|iv| iv.settings.as_slice()).unwrap_or(&[]));
        if let (Some(b), Some(iv), false) = (&inst, &s.instances, edge_warned) {
            let t: Vec<f32> = iv.settings.iter().map(|x| x.threshold).collect();
            if let Some(edge) = crate::metrics::instances::grid_edge(b.setting.threshold, &t) {
                edge_warned = true;
                log::warn!(
                    "epoch {epoch}: the best validation threshold, {:.2}, is the grid's {edge}: a wider --val-thresholds may score higher",
                    b.setting.threshold
                );
            }
        }
        if let Some(b) = &inst {
            for (v, q) in val.iter().zip(&b.per_volume) {
                log::info!(
                    "  {}: {} of {} nuclei, F1 {:.3}, SEG {:.3}, IoU {:.3}",
                    v.name,
                    q.predicted,
                    q.truth,
                    q.f1,
                    q.seg,
                    q.iou
                );
            }
        }
        let nv = val.len().max(1) as f64;
        let nan = f64::NAN;
        let r = EpochRecord {
            epoch,
            step: (epoch - 1) * s.steps_per_epoch + steps,
            train_loss: loss_sum / steps as f64,
            val_loss: if val.is_empty() { nan } else { vl / nv },
            val_iou: if val.is_empty() { nan } else { vi / nv },
            val_detection: if val.is_empty() { nan } else { vd / nv },
            val_f1: inst.as_ref().map_or(nan, |b| b.f1),
            val_seg: inst.as_ref().map_or(nan, |b| b.seg),
            val_inst_iou: inst.as_ref().map_or(nan, |b| b.iou),
            val_threshold: inst.as_ref().map_or(nan, |b| b.setting.threshold as f64),
            val_dynamic: inst.as_ref().map_or(nan, |b| b.setting.dynamic as f64),
            seconds: t0.elapsed().as_secs_f64(),
        };
        let mut det =
            if r.val_detection.is_finite() { format!(", marker F1 {:.4}", r.val_detection) } else { String::new() };
        if r.val_f1.is_finite() {
            det += &format!(
                ", instances: F1 {:.4}, SEG {:.4}, IoU {:.4} at threshold {:.2}, dynamic {:.2}",
                r.val_f1, r.val_seg, r.val_inst_iou, r.val_threshold, r.val_dynamic
            );
        }
        log::info!(
            "epoch {epoch}/{}: train loss {:.4}, val loss {:.4}, val IoU {:.4}{det} ({:.1} s; batches made in {:.1} s \
             beside the steps, which waited {:.1} s for them)",
            s.epochs,
            r.train_loss,
            r.val_loss,
            r.val_iou,
            r.seconds,
            batches.making.as_secs_f64(),
            batches.waited.as_secs_f64()
        );
        on_epoch(&r, net, opt, average.as_deref().map(|a| a.params.as_slice()))?;
        if let Some(a) = average.as_deref_mut() {
            std::mem::swap(&mut net.params, &mut a.params);
        }
        records.push(r);
        if out_of_budget {
            if epoch < s.epochs {
                log::info!(
                    "time budget of {:.1} min spent after epoch {epoch} of at most {} ({:.1} min): stopping",
                    s.time_budget.unwrap_or_default().as_secs_f64() / 60.0,
                    s.epochs,
                    elapsed().as_secs_f64() / 60.0
                );
            }
            break;
        }
        if let Some(limit) = s.time_limit.filter(|&l| epoch < s.epochs && elapsed() >= l) {
            log::warn!(
                "time limit of {:.1} min reached after epoch {epoch} of {} ({:.1} min): stopping; the learning rate \
                 had not finished its decay (fewer epochs would fit the limit, or --time-budget)",
                limit.as_secs_f64() / 60.0,
                s.epochs,
                elapsed().as_secs_f64() / 60.0
            );
            break;
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::{cosine_lr, cosine_lr_at};

    #[test]
    fn cosine_lr_runs_from_lr_to_final_and_falls_monotonically() {
        let (lr, fin, n) = (1e-3f32, 1e-5f32, 37);
        assert_eq!(cosine_lr(lr, fin, 0, n), lr);
        assert!((cosine_lr(lr, fin, n - 1, n) - fin).abs() < 1e-9);
        assert!((cosine_lr(lr, fin, 18, n) - (lr + fin) / 2.0).abs() < 1e-8, "midpoint");
        let v: Vec<f32> = (0..n).map(|s| cosine_lr(lr, fin, s, n)).collect();
        assert!(v.windows(2).all(|w| w[1] < w[0]), "{v:?}");
        // Constant when lr_final == lr, and a one-step run uses lr.
        assert!((0..n).all(|s| cosine_lr(lr, lr, s, n) == lr));
        assert_eq!(cosine_lr(lr, fin, 0, 1), lr);
        // By fraction (a time budget): the same curve, clamped outside 0..=1.
        assert_eq!(cosine_lr_at(lr, fin, 0.5), cosine_lr(lr, fin, 18, n));
        assert_eq!(cosine_lr_at(lr, fin, -0.3), lr);
        assert_eq!(cosine_lr_at(lr, fin, 7.0), cosine_lr_at(lr, fin, 1.0));
        assert!((cosine_lr_at(lr, fin, 1.0) - fin).abs() < 1e-9);
        assert_eq!(cosine_lr_at(lr, fin, f64::NAN), lr);
    }
}
