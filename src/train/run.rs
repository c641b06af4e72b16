//! A training run from files: dataset, output folder, checkpoints, CSV log,
//! plot, resume.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::average::WeightAverage;
use super::config::{NormKind, OptimizerKind, TrainConfig};
use super::dataset::{load_names, names_of, prepare_image, read_instance_labels, DataOptions, Target};
use super::fit::{fit, FitSettings};
use super::plot::{plot_curves, EpochRecord};
use super::validate::predict_volume;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTensor};
use crate::metrics::instances::{InstanceTruth, InstanceValidation, Role, Setting};
use crate::model::weights::{read_weights, write_weights, WeightsMeta};
use crate::model::{Gpu, Net};
use crate::ops::optim;
use crate::preprocess::Normalization;
use crate::tensor::CpuTensor;

/// Checkpoint metadata key (JSON of [`CheckpointInfo`]).
pub const CHECKPOINT_KEY: &str = "qcanet_checkpoint";
/// Prefix of optimizer-state tensor names in checkpoints.
pub const OPT_PREFIX: &str = "optim.";
/// Prefix of the running average's tensors in the last checkpoint
/// (`average.{parameter index}`; `train --weight-average`).
pub const AVERAGE_PREFIX: &str = "average.";

/// Files of a run folder.
pub const LAST: &str = "last.safetensors";
pub const BEST: &str = "best.safetensors";
pub const BEST_F16: &str = "best_f16.safetensors";
pub const LOG: &str = "log.csv";
pub const PLOT: &str = "curves.png";
pub const CONFIG: &str = "config.toml";

/// Where a run stands, stored in its checkpoints.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CheckpointInfo {
    pub epoch: usize,
    pub optimizer_steps: u64,
    pub best_val_iou: Option<f64>,
    /// Marker detection F1 of the best epoch (NDN runs).
    #[serde(default)]
    pub best_val_detection: Option<f64>,
    pub best_epoch: Option<usize>,
    /// The best epoch's ranking key ([`EpochRecord::key`]; JSON has no
    /// NaN, so an unmeasured part is stored as null).
    #[serde(default)]
    pub best_key: Option<(Option<f64>, Option<f64>)>,
    /// Updates of the running average of the weights so far (`--weight-average`).
    #[serde(default)]
    pub average_updates: Option<u64>,
    pub config: TrainConfig,
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub out: PathBuf,
    pub records: Vec<EpochRecord>,
    pub best_val_iou: Option<f64>,
    pub best_epoch: Option<usize>,
}

pub fn normalization(cfg: &TrainConfig) -> Normalization {
    match cfg.normalization {
        NormKind::Minmax => Normalization::MinMax,
        NormKind::Percentile => Normalization::Percentile { low: cfg.percentiles[0], high: cfg.percentiles[1] },
    }
}

pub fn optimizer_config(cfg: &TrainConfig) -> optim::OptimizerConfig {
    match cfg.optimizer {
        OptimizerKind::Adam => optim::OptimizerConfig::Adam(optim::AdamConfig {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            ..Default::default()
        }),
        OptimizerKind::Sgd => optim::OptimizerConfig::Sgd(optim::SgdConfig {
            lr: cfg.lr,
            momentum: cfg.momentum,
            weight_decay: cfg.weight_decay,
        }),
    }
}

/// Writes the CSV log (all epochs so far) atomically.
pub fn write_log(path: &Path, records: &[EpochRecord]) -> Result<()> {
    let mut s =
        String::from("epoch,step,train_loss,val_loss,val_iou,seconds,val_detection_f1,val_f1,val_seg,val_inst_iou,val_threshold,val_dynamic\n");
    for r in records {
        s.push_str(&format!(
            "{},{},{:.6},{:.6},{:.6},{:.2},{:.6},{:.6},{:.6},{:.6},{:.3},{:.3}\n",
            r.epoch,
            r.step,
            r.train_loss,
            r.val_loss,
            r.val_iou,
            r.seconds,
            r.val_detection,
            r.val_f1,
            r.val_seg,
            r.val_inst_iou,
            r.val_threshold,
            r.val_dynamic
        ));
    }
    crate::model::safetensors_file::write_atomic(path, s.as_bytes())
}

/// Reads a CSV log written by [`write_log`] (also the 6-, 7- and 10-column
/// logs of earlier versions, without the detection, instance or chosen
/// setting's columns).
pub fn read_log(path: &Path) -> Result<Vec<EpochRecord>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let bad = || Error::file(path, format!("line {}: not a training log line", i + 1));
        if ![6, 7, 10, 12].contains(&f.len()) {
            return Err(bad());
        }
        let p = |s: &str| s.trim().parse::<f64>().map_err(|_| bad());
        out.push(EpochRecord {
            epoch: p(f[0])? as usize,
            step: p(f[1])? as usize,
            train_loss: p(f[2])?,
            val_loss: p(f[3])?,
            val_iou: p(f[4])?,
            seconds: p(f[5])?,
            val_detection: if f.len() >= 7 { p(f[6])? } else { f64::NAN },
            val_f1: if f.len() >= 10 { p(f[7])? } else { f64::NAN },
            val_seg: if f.len() >= 10 { p(f[8])? } else { f64::NAN },
            val_inst_iou: if f.len() >= 10 { p(f[9])? } else { f64::NAN },
            val_threshold: if f.len() == 12 { p(f[10])? } else { f64::NAN },
            val_dynamic: if f.len() == 12 { p(f[11])? } else { f64::NAN },
        });
    }
    Ok(out)
}

/// Writes `net` (with `opt`: a checkpoint to resume from). `training`: the
/// training weights when `net` holds their running average; a checkpoint
/// with an optimizer then stores the training weights as the network and
/// the average beside them.
#[allow(clippy::too_many_arguments)]
fn save_checkpoint(
    ctx: &GpuContext,
    path: &Path,
    meta: &WeightsMeta,
    net: &Net<Gpu>,
    opt: Option<&optim::Optimizer>,
    training: Option<&[GpuTensor]>,
    info: &CheckpointInfo,
    half: bool,
) -> Result<()> {
    let mut p = net.params_to_host(ctx)?;
    let b = net.buffers_to_host(ctx)?;
    let mut extra = Vec::new();
    let mut md = HashMap::new();
    if let (Some(_), Some(t)) = (opt, training) {
        let averaged = std::mem::replace(&mut p, t.iter().map(|t| ctx.download(t)).collect::<Result<_>>()?);
        for (i, a) in averaged.into_iter().enumerate() {
            extra.push((format!("{AVERAGE_PREFIX}{i}"), a));
        }
    }
    if let Some(opt) = opt {
        for (name, t) in opt.state() {
            extra.push((format!("{OPT_PREFIX}{name}"), ctx.download(t)?));
        }
        md.insert(CHECKPOINT_KEY.to_string(), serde_json::to_string(info).map_err(|e| Error::invalid(e.to_string()))?);
    }
    write_weights(path, meta, &net.layout, &p, &b, &extra, md, half)
}

/// Runs (or resumes) training as `cfg` says, on `ctx`.
pub fn run(ctx: &GpuContext, cfg: &TrainConfig, resume: bool, overwrite: bool, progress: bool) -> Result<RunSummary> {
    cfg.validate()?;
    let data =
        cfg.data.clone().ok_or_else(|| Error::invalid("no dataset folder given (--data DIR or data = \"DIR\")"))?;
    let out = cfg.out.clone().ok_or_else(|| Error::invalid("no output folder given (--out DIR or out = \"DIR\")"))?;
    if !data.is_dir() {
        return Err(Error::file(&data, "dataset folder does not exist"));
    }
    let last = out.join(LAST);
    let occupied = out.is_dir() && std::fs::read_dir(&out).map(|mut d| d.next().is_some()).unwrap_or(false);
    if resume && !last.exists() {
        return Err(Error::file(&last, "--resume: no checkpoint to resume from"));
    }
    if occupied && !resume && !overwrite {
        return Err(Error::file(
            &out,
            "output folder is not empty (another run?); use --resume to continue it or --overwrite to replace it",
        ));
    }

    // On resume the checkpoint's settings win, except the number of epochs, the time limit and the budget.
    // Otherwise the --init weights, read once here.
    let (cfg, ckpt, init) = if resume {
        let w = read_weights(&last)?;
        let json =
            w.rest.metadata.get(CHECKPOINT_KEY).ok_or_else(|| Error::file(&last, "not a training checkpoint"))?;
        let mut info: CheckpointInfo =
            serde_json::from_str(json).map_err(|e| Error::file(&last, format!("invalid checkpoint metadata: {e}")))?;
        let mut c = info.config.clone();
        c.epochs = cfg.epochs;
        c.time_limit_minutes = cfg.time_limit_minutes;
        c.time_budget_minutes = cfg.time_budget_minutes;
        c.data = cfg.data.clone();
        c.out = cfg.out.clone();
        // The grid the checkpoint's network learnt on (runs before it was recorded: the default).
        c.pixel_size = Some(w.meta.grid().pixel_um);
        c.validate().map_err(|e| Error::file(&last, format!("its stored settings: {e}")))?;
        let differs = c.differences(cfg);
        if !differs.is_empty() {
            log::warn!(
                "--resume continues with the checkpoint's settings; ignoring what was given for {}",
                differs.join(", ")
            );
        }
        info.config = c.clone();
        (c, Some((w, info)), None)
    } else {
        let mut c = cfg.clone();
        let init = match &c.init {
            Some(p) => Some((p.clone(), read_weights(p)?)),
            None => None,
        };
        // The grid: as asked, else the --init network's, else the default.
        if c.pixel_size.is_none() {
            c.pixel_size =
                Some(init.as_ref().map_or(crate::preprocess::DEFAULT_PIXEL_UM, |(_, w)| w.meta.grid().pixel_um));
        }
        (c, None, init)
    };
    let grid = crate::preprocess::NetGrid {
        pixel_um: cfg.pixel_size.unwrap_or(crate::preprocess::DEFAULT_PIXEL_UM),
        isotropic: cfg.isotropic,
    };

    let opts = DataOptions {
        target: cfg.target(),
        voxel_um: cfg.voxel_size,
        grid,
        normalization: normalization(&cfg),
        dilate: cfg.dilate_radius(),
        dilate_within_nuclei: cfg.dilate_within_nuclei,
        centre_map: cfg.centre_map,
        separate_touching: cfg.separate_touching,
        small_nuclei: cfg.small_nuclei,
    };
    let train_names = names_of(&data, "train", cfg.train_list.as_deref())?;
    let val_names = names_of(&data, "validation", cfg.val_list.as_deref())?;
    if let Some(n) = val_names.iter().find(|n| train_names.contains(n)) {
        return Err(Error::invalid(format!(
            "{n} is listed for both training and validation: a validation volume must not be trained on"
        )));
    }
    let train = load_names(&data, &train_names, &opts)?;
    let val = load_names(&data, &val_names, &opts)?;
    if let Some(sn) = &cfg.small_nuclei {
        let (mut weighed, mut marked) = (0usize, 0usize);
        for s in &train {
            marked += s.target.data.iter().filter(|&&t| t > 0.5).count();
            weighed += s.weight.as_ref().map_or(0, |w| w.data.iter().filter(|&&v| v != 1.0).count());
        }
        log::info!(
            "small nuclei: {weighed} of the training targets' {marked} marker voxels ({:.1} %) weigh {}",
            100.0 * weighed as f64 / marked.max(1) as f64,
            sn.weight
        );
    }
    log::info!(
        "{}: {} training and {} validation volumes ({})",
        data.display(),
        train.len(),
        val.len(),
        if train.len() <= 8 {
            train.iter().map(|s| format!("{} {:?}", s.name, s.image.dims)).collect::<Vec<_>>().join(", ")
        } else {
            format!("{} … {}", train[0].name, train[train.len() - 1].name)
        }
    );
    if opts.dilate > 0 {
        log::info!(
            "targets dilated by {} voxels, never joining two objects{}",
            opts.dilate,
            if opts.dilate_within_nuclei { ", each within its own nucleus (labels_instance/)" } else { "" }
        );
    }
    if opts.centre_map {
        log::info!(
            "targets: each nucleus's centre map (its distance to its own boundary over its largest, from labels_instance/)"
        );
    }
    if opts.separate_touching {
        log::info!(
            "targets: the nuclei of labels_instance/ with the contact layer between touching nuclei taken out \
             (the larger of two gives it up)"
        );
    }
    if let Some(s) = &cfg.separation {
        log::info!(
            "loss weighted by a separation map: background voxels 1 + {}·exp(−(d1 + d2)²/2·{}²), d1 and d2 their \
             distances in voxels to the nearest two objects of the patch's target",
            s.w0,
            s.sigma
        );
    }
    if let Some(s) = &cfg.small_nuclei {
        log::info!(
            "loss weighted by small nuclei: each voxel of the marker of a nucleus under {} µm³ (labels_instance/) weighs {}",
            s.volume_um3,
            s.weight
        );
    }
    let net_cfg = match &init {
        Some((p, w)) => init_config(&cfg, p, w)?,
        None => cfg.net_config()?,
    };
    let instances = match &cfg.val_partner {
        Some(p) => Some(instance_validation(ctx, &cfg, &data, &val_names, p)?),
        None => None,
    };
    let trained_on =
        format!("{} ({})", data.display(), train.iter().map(|s| s.name.clone()).collect::<Vec<_>>().join(", "));
    let mut meta = WeightsMeta {
        config: net_cfg.clone(),
        normalization: opts.normalization,
        isotropic: cfg.isotropic,
        pixel_um: Some(grid.pixel_um),
        trained_on,
        epochs: 0,
        val_iou: None,
        // A new network's thresholds and marker dynamic are chosen afresh by `calibrate`.
        threshold: None,
        marker_dynamic: None,
        extent_threshold: None,
        min_volume_um3: None,
        label_unmarked: None,
    };
    let mut best_iou: Option<f64> = None;
    let (mut net, mut opt, first_epoch, mut best, mut best_epoch, mut records, mut average) = match ckpt {
        Some((w, info)) => {
            let net = Net::<Gpu>::from_host(ctx, w.meta.config.clone(), &w.params, &w.buffers)?;
            let opt_cfg = optimizer_config(&cfg);
            let mut opt = optim::Optimizer::new(ctx, opt_cfg, &net.params.iter().collect::<Vec<_>>())?;
            let mut state: Vec<(String, CpuTensor)> = Vec::new();
            let mut rest = w.rest;
            let names: Vec<String> = rest.tensors.keys().filter(|k| k.starts_with(OPT_PREFIX)).cloned().collect();
            for n in names {
                let (dims, data) = rest.tensors.remove(&n).expect("listed");
                let shape = dims_to_shape(&dims);
                state.push((n[OPT_PREFIX.len()..].to_string(), CpuTensor::from_vec(shape, data)));
            }
            opt.load_state(ctx, info.optimizer_steps, &state)?;
            let mut averaged = Vec::new();
            for i in 0..net.params.len() {
                if let Some((dims, data)) = rest.tensors.remove(&format!("{AVERAGE_PREFIX}{i}")) {
                    averaged.push(CpuTensor::from_vec(dims_to_shape(&dims), data));
                }
            }
            let average = match (cfg.weight_average > 0.0, averaged.len() == net.params.len()) {
                (false, _) => None,
                (true, true) => {
                    let updates = info.average_updates.unwrap_or(0);
                    let a = WeightAverage::restore(ctx, &averaged, &net.params, cfg.weight_average, updates);
                    Some(a.map_err(|e| Error::file(&last, format!("the running average ({AVERAGE_PREFIX}*): {e}")))?)
                }
                (true, false) => {
                    log::warn!(
                        "{}: the checkpoint holds no complete running average of the weights: it starts again from them",
                        last.display()
                    );
                    Some(WeightAverage::start(ctx, &net.params, cfg.weight_average)?)
                }
            };
            // The epochs so far count against the budget and stay in the log: a log that cannot be read is
            // an error, not an empty history.
            let log_path = out.join(LOG);
            let records = if log_path.exists() { read_log(&log_path)? } else { Vec::new() };
            let records: Vec<EpochRecord> = records.into_iter().filter(|r| r.epoch <= info.epoch).collect();
            log::info!("resuming {} after epoch {}", out.display(), info.epoch);
            let nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
            let best = info
                .best_key
                .map(|(a, b)| (nan(a), nan(b)))
                .or(info.best_val_iou.map(|i| (nan(info.best_val_detection), i)));
            best_iou = info.best_val_iou;
            (net, opt, info.epoch + 1, best, info.best_epoch, records, average)
        }
        None => {
            let net = match &init {
                Some((p, w)) => {
                    log::info!(
                        "starting from {} ({}, trained on {})",
                        p.display(),
                        w.meta.config.arch,
                        w.meta.trained_on
                    );
                    Net::<Gpu>::from_host(ctx, w.meta.config.clone(), &w.params, &w.buffers)?
                }
                None => Net::<Gpu>::init(ctx, net_cfg.clone(), cfg.seed)?,
            };
            let opt = optim::Optimizer::new(ctx, optimizer_config(&cfg), &net.params.iter().collect::<Vec<_>>())?;
            let average = (cfg.weight_average > 0.0)
                .then(|| WeightAverage::start(ctx, &net.params, cfg.weight_average))
                .transpose()?;
            (net, opt, 1, None, None, Vec::new(), average)
        }
    };
    net.frozen_bn = cfg.freeze_bn;
    if cfg.freeze_bn {
        log::info!("batch norm frozen: the running statistics normalise every pass and are kept as they are");
        if cfg.init.is_none() && first_epoch == 1 {
            log::warn!(
                "--freeze-bn on a new network: its running statistics are the initial 0 and 1 (no normalisation)"
            );
        }
        if cfg.augment.shifts_intensity() {
            log::warn!(
                "--freeze-bn with intensity augmentation: gain, gamma, offset and noise move the inputs away from \
                 what the running statistics were estimated on, and frozen statistics do not follow them \
                 (a fine-tuned NSN collapsed this way, weights/HISTORY.md); consider --no-intensity-augment"
            );
        }
    }
    log::info!(
        "{}: depth {}, base {}, kernel {}, {} classes, {} parameters; patch {}³, batch {}, {} epochs × {} steps",
        net_cfg.arch,
        net_cfg.depth,
        net_cfg.base,
        net_cfg.kernel,
        net_cfg.classes,
        net_cfg.param_count(),
        cfg.patch,
        cfg.batch,
        cfg.epochs,
        cfg.steps_per_epoch
    );
    let settings = FitSettings {
        patch: cfg.patch,
        batch: cfg.batch,
        epochs: cfg.epochs,
        time_limit: cfg.time_limit_minutes.map(|m| std::time::Duration::from_secs_f64(m * 60.0)),
        time_budget: cfg.time_budget_minutes.map(|m| std::time::Duration::from_secs_f64(m * 60.0)),
        // The epochs of earlier sessions (a resumed run) count against the budget.
        elapsed_before: std::time::Duration::from_secs_f64(records.iter().map(|r| r.seconds.max(0.0)).sum()),
        steps_per_epoch: cfg.steps_per_epoch,
        loss: cfg.loss_spec()?,
        augment: cfg.augment.clone(),
        object_patches: cfg.object_patches,
        separation: cfg.separation,
        seed: cfg.seed,
        val_tile: cfg.val_tile,
        val_overlap: cfg.val_overlap,
        // Frozen batch norm keeps the running statistics it started with.
        bn_recalibration: if cfg.freeze_bn { 0 } else { cfg.bn_recalibration },
        detection: cfg.target() == super::dataset::Target::Ndn,
        lr: cfg.lr,
        lr_final: cfg.lr_final(),
        progress,
        instances,
    };
    if let Some(a) = &average {
        log::info!(
            "validating a running average of the weights (decay {}, about {:.0} steps; {} updates so far)",
            a.decay,
            1.0 / (1.0 - a.decay as f64),
            a.updates
        );
    }
    // Every input is read and checked: only now is an old run replaced (--overwrite) and the settings written.
    if occupied && overwrite && !resume {
        for f in [LAST, BEST, BEST_F16, LOG, PLOT, CONFIG] {
            let _ = std::fs::remove_file(out.join(f));
        }
    }
    std::fs::create_dir_all(&out).map_err(|e| Error::file(&out, format!("cannot create: {e}")))?;
    crate::model::safetensors_file::write_atomic(&out.join(CONFIG), cfg.to_toml().as_bytes())?;
    let updates_before = average.as_ref().map(|a| a.updates);
    let steps_before = opt.step_count();
    fit(&mut net, ctx, &mut opt, &train, &val, &settings, first_epoch, average.as_mut(), |r, net, opt, training| {
        records.push(r.clone());
        meta.epochs = r.epoch;
        let improved = r.beats(best);
        if improved {
            best = Some(r.key());
            best_iou = Some(r.val_iou);
            best_epoch = Some(r.epoch);
        }
        let info = CheckpointInfo {
            epoch: r.epoch,
            optimizer_steps: opt.step_count(),
            best_val_iou: best_iou,
            best_val_detection: best.filter(|_| !r.val_f1.is_finite()).map(|b| b.0).filter(|v| v.is_finite()),
            best_key: best.map(|(a, b)| (a.is_finite().then_some(a), b.is_finite().then_some(b))),
            best_epoch,
            // One update a step: as many as the optimizer has taken since.
            average_updates: updates_before.map(|u| u + opt.step_count() - steps_before),
            config: cfg.clone(),
        };
        let mut m = meta.clone();
        m.val_iou = r.val_iou.is_finite().then_some(r.val_iou as f32);
        // The threshold (and marker dynamic) instance validation chose the
        // epoch at, where `infer` reads them; `calibrate` may choose again.
        if r.val_threshold.is_finite() {
            m.threshold = Some(r.val_threshold as f32);
            if cfg.target() == super::dataset::Target::Ndn {
                m.marker_dynamic = Some(r.val_dynamic as f32);
                m.min_volume_um3 = Some(cfg.min_volume_um3);
            }
        }
        if improved {
            save_checkpoint(ctx, &out.join(BEST), &m, net, None, None, &info, false)?;
            if cfg.save_f16 {
                save_checkpoint(ctx, &out.join(BEST_F16), &m, net, None, None, &info, true)?;
            }
        }
        save_checkpoint(ctx, &last, &m, net, Some(opt), training, &info, false)?;
        write_log(&out.join(LOG), &records)?;
        if let Err(e) = plot_curves(&out.join(PLOT), &records) {
            log::warn!("{e}");
        }
        Ok(())
    })?;
    Ok(RunSummary { out, records, best_val_iou: best_iou, best_epoch })
}

/// The network settings of `--init` weights, checked against the run's:
/// the file decides, and depth, base or kernel given as well must agree.
fn init_config(
    cfg: &TrainConfig,
    path: &Path,
    w: &crate::model::weights::HostWeights,
) -> Result<crate::model::NetConfig> {
    if !w.members.is_empty() {
        return Err(Error::file(
            path,
            format!(
                "--init: holds {} networks averaged (an ensemble); training starts from one network",
                w.members.len() + 1
            ),
        ));
    }
    let c = w.meta.config.clone();
    let conflict = |what: &str, want: Option<usize>, have: usize| match want {
        Some(v) if v != have => {
            Err(Error::file(path, format!("--init: the file's network has {what} {have}, the run asks for {v}")))
        }
        _ => Ok(()),
    };
    conflict("depth", cfg.depth, c.depth)?;
    conflict("base width", cfg.base, c.base)?;
    conflict("kernel", cfg.kernel, c.kernel)?;
    if c.arch != cfg.model {
        return Err(Error::file(path, format!("--init: holds a {} but the run trains a {}", c.arch, cfg.model)));
    }
    if c.classes != cfg.classes {
        return Err(Error::file(
            path,
            format!("--init: {} output classes, the run asks for {}", c.classes, cfg.classes),
        ));
    }
    Ok(c)
}

/// Instance validation with the partner network in `partner`: its mask of
/// every validation volume (predicted once, here) and the volumes'
/// `labels_instance/` ground truth.
fn instance_validation(
    ctx: &GpuContext,
    cfg: &TrainConfig,
    data: &Path,
    names: &[String],
    partner: &Path,
) -> Result<InstanceValidation> {
    let w = crate::model::weights::Network::load(ctx, partner)?;
    let role = if cfg.target() == Target::Ndn { Role::Detection } else { Role::Segmentation };
    let partner_is_ndn = w.meta.config.arch == crate::model::Arch::Ndn;
    if partner_is_ndn != (role == Role::Segmentation) {
        return Err(Error::file(
            partner,
            format!(
                "--val-partner holds a {}; a {} run needs {}",
                w.meta.config.arch,
                cfg.model,
                if role == Role::Segmentation { "an NDN (the markers)" } else { "an NSN or U-Net (the segmentation)" }
            ),
        ));
    }
    let side = w.side_multiple();
    let mut volumes = Vec::new();
    for name in names {
        let raw_path = data.join("images_raw").join(name);
        let raw = crate::io::read_volume(&raw_path)?;
        let gt = read_instance_labels(
            &data.join("labels_instance").join(name),
            "validation by instances",
            &raw_path,
            raw.dims,
        )?;
        let voxel_um = raw.voxel_um.unwrap_or(cfg.voxel_size);
        let img = prepare_image(raw.dims, raw.data, voxel_um, w.meta.grid(), w.meta.normalization)?;
        // An ensemble partner: the mean of its networks' probabilities, as `infer` predicts it.
        let mut p = vec![0f32; img.data.len()];
        for n in w.all() {
            let (pk, _) = predict_volume(&n.net, ctx, &img, cfg.val_tile.max(side), cfg.val_overlap, None)?;
            p.iter_mut().zip(&pk).for_each(|(a, b)| *a += b / (w.members.len() + 1) as f32);
        }
        let p = crate::preprocess::resample(p, img.dims, raw.dims, crate::preprocess::Interp::Nearest);
        // The partner at its own calibrated threshold (and, for an NDN, its
        // marker dynamic; for an NSN, the extent its nuclei grow to), as
        // `infer` uses it.
        let t = w.meta.threshold_or_default();
        let h = if partner_is_ndn { w.meta.marker_dynamic_or_zero() } else { 0.0 };
        let conn = crate::postprocess::InstanceOptions::default().marker_connectivity;
        let partner = crate::postprocess::markers::detection_mask(&p, raw.dims, t, h, conn)?;
        log::info!(
            "{name}: partner {} predicted ({} voxels on), {} true nuclei",
            w.meta.config.arch,
            partner.iter().filter(|&&v| v != 0).count(),
            gt.labels.iter().copied().max().unwrap_or(0)
        );
        let partner_extent =
            w.meta.extent_below_threshold().map(|e| crate::postprocess::markers::above_on(&p, e, None));
        volumes.push(InstanceTruth {
            name: name.clone(),
            dims: raw.dims,
            voxel_um,
            labels: gt.labels,
            partner,
            partner_extent,
        });
    }
    let settings = Setting::grid(role, &cfg.val_thresholds, &cfg.val_dynamics)?;
    // A partner NSN whose weights say its unmarked components are nuclei is scored so, as `infer` runs it.
    let label_unmarked_components = !partner_is_ndn && w.meta.label_unmarked_or_default();
    let options = crate::postprocess::InstanceOptions {
        min_volume_um3: cfg.min_volume_um3,
        label_unmarked_components,
        ..Default::default()
    };
    Ok(InstanceValidation { volumes, role, settings, options })
}

fn dims_to_shape(dims: &[usize]) -> crate::tensor::Shape5 {
    use crate::tensor::Shape5;
    match dims {
        [c] => Shape5::new(1, *c, 1, 1, 1),
        [n, c, d, h, w] => Shape5::new(*n, *c, *d, *h, *w),
        other => Shape5::new(1, 1, 1, 1, other.iter().product()),
    }
}
