//! A training run from files: dataset, output folder, checkpoints, CSV log,
//! plot, resume.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::config::{NormKind, OptimizerKind, TrainConfig};
use super::dataset::{load_split, DataOptions};
use super::fit::{fit, FitSettings};
use super::plot::{plot_curves, EpochRecord};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::model::network::{read_weights, write_weights, WeightsMeta};
use crate::model::{Gpu, Net};
use crate::ops::optim;
use crate::preprocess::Normalization;
use crate::tensor::CpuTensor;

/// Checkpoint metadata key (JSON of [`CheckpointInfo`]).
pub const CHECKPOINT_KEY: &str = "qcanet_checkpoint";
/// Prefix of optimizer-state tensor names in checkpoints.
pub const OPT_PREFIX: &str = "optim.";

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
    let mut s = String::from("epoch,step,train_loss,val_loss,val_iou,seconds,val_detection_f1\n");
    for r in records {
        s.push_str(&format!(
            "{},{},{:.6},{:.6},{:.6},{:.2},{:.6}\n",
            r.epoch, r.step, r.train_loss, r.val_loss, r.val_iou, r.seconds, r.val_detection
        ));
    }
    crate::model::st::write_atomic(path, s.as_bytes())
}

/// Reads a CSV log written by [`write_log`] (also the 6-column logs of
/// earlier versions, without the detection column).
pub fn read_log(path: &Path) -> Result<Vec<EpochRecord>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let bad = || Error::file(path, format!("line {}: not a training log line", i + 1));
        if f.len() != 6 && f.len() != 7 {
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
            val_detection: if f.len() == 7 { p(f[6])? } else { f64::NAN },
        });
    }
    Ok(out)
}

fn save_checkpoint(
    ctx: &GpuContext,
    path: &Path,
    meta: &WeightsMeta,
    net: &Net<Gpu>,
    opt: Option<&optim::Optimizer>,
    info: &CheckpointInfo,
    half: bool,
) -> Result<()> {
    let p = net.params_to_host(ctx)?;
    let b = net.buffers_to_host(ctx)?;
    let mut extra = Vec::new();
    let mut md = HashMap::new();
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
    if occupied && overwrite && !resume {
        for f in [LAST, BEST, BEST_F16, LOG, PLOT, CONFIG] {
            let _ = std::fs::remove_file(out.join(f));
        }
    }
    std::fs::create_dir_all(&out).map_err(|e| Error::file(&out, format!("cannot create: {e}")))?;

    // On resume the checkpoint's settings win, except the number of epochs.
    let (cfg, ckpt) = if resume {
        let w = read_weights(&last)?;
        let json =
            w.rest.metadata.get(CHECKPOINT_KEY).ok_or_else(|| Error::file(&last, "not a training checkpoint"))?;
        let mut info: CheckpointInfo =
            serde_json::from_str(json).map_err(|e| Error::file(&last, format!("invalid checkpoint metadata: {e}")))?;
        let mut c = info.config.clone();
        c.epochs = cfg.epochs;
        c.data = cfg.data.clone();
        c.out = cfg.out.clone();
        info.config = c.clone();
        (c, Some((w, info)))
    } else {
        (cfg.clone(), None)
    };
    crate::model::st::write_atomic(&out.join(CONFIG), cfg.to_toml().as_bytes())?;

    let opts = DataOptions {
        target: cfg.target(),
        voxel_um: cfg.voxel_size,
        isotropic: cfg.isotropic,
        normalization: normalization(&cfg),
        dilate: cfg.dilate_radius(),
    };
    let train = load_split(&data, "train", &opts)?;
    let val = load_split(&data, "validation", &opts)?;
    log::info!(
        "{}: {} training and {} validation volumes ({})",
        data.display(),
        train.len(),
        val.len(),
        train.iter().map(|s| format!("{} {:?}", s.name, s.image.dims)).collect::<Vec<_>>().join(", ")
    );
    let net_cfg = cfg.net_config()?;
    let trained_on =
        format!("{} ({})", data.display(), train.iter().map(|s| s.name.clone()).collect::<Vec<_>>().join(", "));
    let mut meta = WeightsMeta {
        config: net_cfg.clone(),
        normalization: opts.normalization,
        isotropic: cfg.isotropic,
        trained_on,
        epochs: 0,
        val_iou: None,
    };
    let (mut net, mut opt, first_epoch, mut best, mut best_epoch, mut records) = match ckpt {
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
            let records = read_log(&out.join(LOG)).unwrap_or_default();
            let records: Vec<EpochRecord> = records.into_iter().filter(|r| r.epoch <= info.epoch).collect();
            log::info!("resuming {} after epoch {}", out.display(), info.epoch);
            let best = info.best_val_iou.map(|i| (info.best_val_detection.unwrap_or(f64::NAN), i));
            (net, opt, info.epoch + 1, best, info.best_epoch, records)
        }
        None => {
            let net = Net::<Gpu>::init(ctx, net_cfg.clone(), cfg.seed)?;
            let opt = optim::Optimizer::new(ctx, optimizer_config(&cfg), &net.params.iter().collect::<Vec<_>>())?;
            (net, opt, 1, None, None, Vec::new())
        }
    };
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
        steps_per_epoch: cfg.steps_per_epoch,
        loss: cfg.loss_spec()?,
        augment: cfg.augment.clone(),
        seed: cfg.seed,
        val_tile: cfg.val_tile,
        val_overlap: cfg.val_overlap,
        bn_recalibration: cfg.bn_recalibration,
        detection: cfg.target() == super::dataset::Target::Ndn,
        lr: cfg.lr,
        lr_final: cfg.lr_final(),
        progress,
    };
    fit(&mut net, ctx, &mut opt, &train, &val, &settings, first_epoch, |r, net, opt| {
        records.push(r.clone());
        meta.epochs = r.epoch;
        let improved = r.beats(best);
        if improved {
            best = Some((r.val_detection, r.val_iou));
            best_epoch = Some(r.epoch);
        }
        let info = CheckpointInfo {
            epoch: r.epoch,
            optimizer_steps: opt.step_count(),
            best_val_iou: best.map(|b| b.1),
            best_val_detection: best.map(|b| b.0).filter(|v| v.is_finite()),
            best_epoch,
            config: cfg.clone(),
        };
        let mut m = meta.clone();
        m.val_iou = r.val_iou.is_finite().then_some(r.val_iou as f32);
        if improved {
            save_checkpoint(ctx, &out.join(BEST), &m, net, None, &info, false)?;
            if cfg.save_f16 {
                save_checkpoint(ctx, &out.join(BEST_F16), &m, net, None, &info, true)?;
            }
        }
        save_checkpoint(ctx, &last, &m, net, Some(opt), &info, false)?;
        write_log(&out.join(LOG), &records)?;
        if let Err(e) = plot_curves(&out.join(PLOT), &records) {
            log::warn!("{e}");
        }
        Ok(())
    })?;
    Ok(RunSummary { out, records, best_val_iou: best.map(|b| b.1), best_epoch })
}

fn dims_to_shape(dims: &[usize]) -> crate::tensor::Shape5 {
    use crate::tensor::Shape5;
    match dims {
        [c] => Shape5::new(1, *c, 1, 1, 1),
        [n, c, d, h, w] => Shape5::new(*n, *c, *d, *h, *w),
        other => Shape5::new(1, 1, 1, 1, other.iter().product()),
    }
}
