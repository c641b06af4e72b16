//! Every training setting, readable from a TOML file (unknown keys are an
//! error naming the key) and overridable by command-line flags.

use std::path::{Path, PathBuf};

use super::dataset::Target;
use super::patch::Augment;
use crate::error::{Error, Result};
use crate::metrics::instances::{Role, Setting, DEFAULT_DYNAMICS, DEFAULT_THRESHOLDS};
use crate::model::{Arch, LossSpec, NetConfig};
use crate::preprocess::Normalization;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adam,
    Sgd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    Ce,
    Bce,
    Dice,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormKind {
    Minmax,
    Percentile,
}

/// All settings of a training run (`--config FILE` in TOML; flags override).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// nsn, ndn or unet3d: the preset, and which ground truth is learnt
    /// (images_ndn for ndn, images_nsn otherwise).
    pub model: Arch,
    /// Dataset folder (images_raw/, images_nsn/, images_ndn/, split_list/).
    pub data: Option<PathBuf>,
    /// Output folder for checkpoints, log and plot.
    pub out: Option<PathBuf>,
    /// Start from these weights instead of a random initialisation
    /// (fine-tuning): the network settings come from the file, and depth,
    /// base and kernel, when also given, must agree with it.
    pub init: Option<PathBuf>,
    /// Files listing the training and validation names, one a line (default:
    /// the dataset's `split_list/train.txt` and `validation.txt`).
    pub train_list: Option<PathBuf>,
    pub val_list: Option<PathBuf>,
    /// The other QCANet network (an NDN when training an NSN, an NSN when
    /// training an NDN): with it every validation volume also goes through the
    /// whole instance stage (NSN + NDN + marker watershed) and is scored against
    /// `labels_instance/` (F1 at IoU 0.5, SEG, foreground IoU); the kept
    /// checkpoint is then the one with the best mean instance F1 (ties: SEG).
    pub val_partner: Option<PathBuf>,
    pub depth: Option<usize>,
    pub base: Option<usize>,
    pub kernel: Option<usize>,
    /// 2: softmax head (default), 1: sigmoid head.
    pub classes: usize,
    /// Training patch side (voxels, after z interpolation).
    pub patch: usize,
    pub epochs: usize,
    /// Stop after the first epoch that ends this many minutes after training
    /// started (a budget on a lent machine; checkpoints as usual). The
    /// learning-rate schedule still spans all `epochs`, so a run stopped early
    /// ends before its rate has decayed: size `epochs` to the budget and keep
    /// this as the safety net.
    pub time_limit_minutes: Option<f64>,
    /// Train for this many minutes (validation included): the learning rate
    /// falls along its cosine with the elapsed fraction of the budget
    /// instead of the step count, the epoch in progress when the budget is
    /// spent ends there (and is validated and checkpointed), and `epochs`
    /// becomes a maximum. For a machine lent for a fixed time, where the
    /// step time is not known in advance. A resumed run counts the time its
    /// earlier epochs took (`log.csv`).
    pub time_budget_minutes: Option<f64>,
    pub steps_per_epoch: usize,
    pub batch: usize,
    pub lr: f32,
    /// Learning rate at the last step: the rate falls from `lr` to this
    /// along a cosine over all steps of the run (default lr / 100; set it
    /// equal to `lr` for a constant rate).
    pub lr_final: Option<f32>,
    pub optimizer: OptimizerKind,
    pub momentum: f32,
    pub weight_decay: f32,
    /// ce (2-class), bce (1-class) or dice; default ce for 2 classes, bce for 1.
    pub loss: Option<LossKind>,
    /// Cross-entropy weights of background and foreground (default 1,1 for
    /// NSN and U-Net, 1,10 for NDN's sparse markers).
    pub class_weights: Option<Vec<f32>>,
    /// BCE weight of foreground voxels (default 1, NDN 10).
    pub pos_weight: Option<f32>,
    pub dice_smooth: f32,
    pub normalization: NormKind,
    /// Low and high percentiles for `normalization = "percentile"`.
    pub percentiles: [f32; 2],
    /// x, y, z voxel size in µm when the TIFF does not say.
    pub voxel_size: [f64; 3],
    /// Interpolate z to isotropic voxels.
    pub isotropic: bool,
    /// Pixel size (µm) of the grid the network learns on (x and y; z too
    /// when isotropic): every stack is resampled to it, and the weights
    /// record it for `infer`. None: the `init` network's, else
    /// [`crate::preprocess::DEFAULT_PIXEL_UM`] (resolved when a run starts).
    pub pixel_size: Option<f64>,
    /// Dilate the ground truth by this radius, never joining two objects (default 2 for NDN, else 0).
    pub dilate: Option<usize>,
    /// Dilate markers only into background and their own nucleus, never
    /// into another (`labels_instance/` read for every volume; see
    /// [`super::patch::dilate_within`]).
    pub dilate_within_nuclei: bool,
    /// Learn each nucleus's centre map ([`super::centres`], from
    /// `labels_instance/`: 1 at its centre, near 0 at its boundary) instead
    /// of the binary ground truth: a soft target for a sigmoid head (classes
    /// 1, BCE; positive weight 1 unless given), no dilation.
    pub centre_map: bool,
    /// Segmentation networks: learn the nuclei of `labels_instance/` with
    /// the contact layer between touching nuclei taken out
    /// ([`super::touching`]) instead of `images_nsn/`, which joins them.
    pub separate_touching: bool,
    pub augment: Augment,
    /// Share (0-1) of the training patches centred on an object of the
    /// targets (a nucleus of `images_nsn/`, a marker of `images_ndn/`, the
    /// core above 0.5 of a nucleus's centre map),
    /// every object of the training set equally likely, so small objects of
    /// a few volumes are seen as often as the rest
    /// ([`super::objects::Objects`]); 0: every patch at a random position.
    pub object_patches: f32,
    /// Weigh the loss of each background voxel by how close it lies to two
    /// objects of the target (the U-Net paper's separation weight map,
    /// [`super::separation`]; cross-entropy only): the gaps between
    /// neighbouring markers or nuclei count more. None: every voxel 1.
    pub separation: Option<super::separation::Separation>,
    /// Weigh each voxel of a small nucleus's marker (a nucleus of
    /// `labels_instance/` under a volume) in the loss
    /// ([`super::small_nuclei`]; NDN, cross-entropy only). None: every
    /// marker alike.
    pub small_nuclei: Option<super::small_nuclei::SmallNuclei>,
    /// With a validation partner: objects under this many µm³ are dropped
    /// by the instance stage that scores each epoch (default
    /// [`crate::postprocess::MIN_NUCLEUS_UM3`], as `infer`; 0 keeps all).
    pub min_volume_um3: f64,
    pub seed: u64,
    /// Validation tile side (whole volumes are predicted in tiles).
    pub val_tile: usize,
    pub val_overlap: usize,
    /// With `val_partner`: the trained network's thresholds tried on the
    /// validation volumes each epoch, and (NDN) its markers' dynamics; the
    /// epoch is scored at the best of them (mean F1, then SEG, as
    /// `calibrate` ranks), and the kept checkpoint records that setting
    /// (default: `calibrate`'s grid). Validated at one fixed threshold, a
    /// network that learnt to be more or less confident is ranked by a
    /// setting it will never be used at.
    pub val_thresholds: Vec<f32>,
    pub val_dynamics: Vec<f32>,
    /// Before each validation, re-estimate the batch-norm running statistics
    /// from this many random training batches, flips only, without intensity
    /// augmentation: the images inference sees ("precise BN"; 0: keep the
    /// running averages of training, which with batch 1 follow the last few
    /// patches and make validation and inference erratic).
    pub bn_recalibration: usize,
    /// Frozen batch norm: training passes normalise with the running
    /// statistics and never change them ([`crate::model::Net::frozen_bn`]),
    /// so each step optimises the function inference computes; gamma and
    /// beta are still learnt, and `bn_recalibration` is skipped. For
    /// fine-tuning (`init`) with small batches, where batch statistics of one
    /// patch differ from the running ones inference uses. Intensity
    /// augmentation (gain, offset, noise) then moves the inputs away from
    /// what the frozen statistics describe, which batch statistics used to
    /// absorb: `train` warns, and a fine-tuned NSN collapsed with it
    /// (weights/HISTORY.md, "Tried and dropped").
    pub freeze_bn: bool,
    /// Decay of a running average of the weights ([`super::average`]):
    /// validation scores, and the best checkpoint keeps, the average of the
    /// recent steps' weights instead of the last step's (0: off; 0.99
    /// averages over about 100 steps). Needs `bn_recalibration` (or
    /// `freeze_bn`), so the averaged weights get statistics of their own.
    pub weight_average: f32,
    /// Also write `best_f16.safetensors` (half-size weights for inference).
    pub save_f16: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: Arch::Nsn,
            data: None,
            out: None,
            init: None,
            train_list: None,
            val_list: None,
            val_partner: None,
            depth: None,
            base: None,
            kernel: None,
            classes: 2,
            patch: 128,
            epochs: 50,
            time_limit_minutes: None,
            time_budget_minutes: None,
            steps_per_epoch: 50,
            batch: 1,
            lr: 1e-3,
            lr_final: None,
            optimizer: OptimizerKind::Adam,
            momentum: 0.9,
            weight_decay: 0.0,
            loss: None,
            class_weights: None,
            pos_weight: None,
            dice_smooth: 1.0,
            normalization: NormKind::Percentile,
            percentiles: [1.0, 99.8],
            voxel_size: [0.8, 0.8, 1.75],
            isotropic: true,
            pixel_size: None,
            dilate: None,
            dilate_within_nuclei: false,
            centre_map: false,
            separate_touching: false,
            augment: Augment::default(),
            object_patches: 0.0,
            separation: None,
            small_nuclei: None,
            min_volume_um3: crate::postprocess::MIN_NUCLEUS_UM3,
            seed: 0,
            val_tile: 96,
            val_overlap: 16,
            val_thresholds: DEFAULT_THRESHOLDS.to_vec(),
            val_dynamics: DEFAULT_DYNAMICS.to_vec(),
            bn_recalibration: 16,
            freeze_bn: false,
            weight_average: 0.0,
            save_f16: true,
        }
    }
}

impl TrainConfig {
    /// Reads a TOML file (every key optional; an unknown key is an error).
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        toml::from_str(&text).map_err(|e| Error::file(path, format!("invalid training config: {e}")))
    }

    /// The settings `given` sets away from the defaults and away from this
    /// (a checkpoint's) settings, by name; what a resumed run takes from
    /// `given` (epochs, time limits, data and output folders) is left out.
    pub fn differences(&self, given: &TrainConfig) -> Vec<String> {
        const TAKEN: [&str; 5] = ["epochs", "time_limit_minutes", "time_budget_minutes", "data", "out"];
        let json = |c: &TrainConfig| match serde_json::to_value(c) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => Default::default(),
        };
        let (mine, theirs, default) =
            (json(self), json(given), json(&TrainConfig { model: given.model, ..Default::default() }));
        theirs
            .iter()
            .filter(|(k, v)| !TAKEN.contains(&k.as_str()) && mine.get(*k) != Some(v) && default.get(*k) != Some(v))
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    pub fn target(&self) -> Target {
        if self.model == Arch::Ndn {
            Target::Ndn
        } else {
            Target::Nsn
        }
    }

    pub fn net_config(&self) -> Result<NetConfig> {
        let p = NetConfig::preset(self.model);
        let c = NetConfig {
            depth: self.depth.unwrap_or(p.depth),
            base: self.base.unwrap_or(p.base),
            kernel: self.kernel.unwrap_or(p.kernel),
            classes: self.classes,
            ..p
        };
        c.validate()?;
        Ok(c)
    }

    pub fn loss_spec(&self) -> Result<LossSpec> {
        let ndn = self.model == Arch::Ndn;
        let kind = self.loss.unwrap_or(if self.classes == 1 { LossKind::Bce } else { LossKind::Ce });
        let spec = match kind {
            LossKind::Ce => {
                let w = self.class_weights.clone().unwrap_or(if ndn { vec![1.0, 10.0] } else { vec![1.0, 1.0] });
                if self.classes != 2 {
                    return Err(Error::invalid("loss 'ce' needs classes = 2 (use 'bce' or 'dice' with classes = 1)"));
                }
                if w.len() != 2 || w.iter().any(|v| !v.is_finite() || *v < 0.0) {
                    return Err(Error::invalid(format!("class weights {w:?}: need 2 non-negative values")));
                }
                LossSpec::Ce { class_weights: w }
            }
            _ if self.separation.is_some() => {
                return Err(Error::invalid("a separation weight map needs the cross-entropy loss ('ce', classes = 2)"));
            }
            _ if self.small_nuclei.is_some() => {
                return Err(Error::invalid("weighing small nuclei needs the cross-entropy loss ('ce', classes = 2)"));
            }
            LossKind::Bce => {
                if self.classes != 1 {
                    return Err(Error::invalid("loss 'bce' needs classes = 1 (use 'ce' or 'dice' with classes = 2)"));
                }
                let pw = self.pos_weight.unwrap_or(if ndn && !self.centre_map { 10.0 } else { 1.0 });
                if !pw.is_finite() || pw <= 0.0 {
                    return Err(Error::invalid(format!("pos_weight {pw} must be positive")));
                }
                LossSpec::Bce { pos_weight: pw }
            }
            LossKind::Dice => LossSpec::Dice { smooth: self.dice_smooth },
        };
        if self.centre_map && !matches!(spec, LossSpec::Bce { .. }) {
            return Err(Error::invalid(
                "the centre map is a soft target in [0, 1]: it needs the BCE loss with one output class (--classes 1)",
            ));
        }
        Ok(spec)
    }

    /// The learning rate at the last step (see [`TrainConfig::lr_final`]).
    pub fn lr_final(&self) -> f32 {
        self.lr_final.unwrap_or(self.lr / 100.0)
    }

    pub fn dilate_radius(&self) -> usize {
        self.dilate.unwrap_or(if self.model == Arch::Ndn && !self.centre_map { 2 } else { 0 })
    }

    /// Checks ranges that would otherwise fail late.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(format!("training settings: {m}")));
        if self.patch < 4 {
            return bad(format!("patch {} is too small", self.patch));
        }
        if let Some(s) = &self.separation {
            s.validate()?;
            self.loss_spec()?;
        }
        if let Some(s) = &self.small_nuclei {
            s.validate()?;
            if self.model != Arch::Ndn || self.centre_map {
                return bad(
                    "weighing small nuclei weighs their markers: it needs --model ndn without the centre map".into()
                );
            }
            self.loss_spec()?;
        }
        if self.time_limit_minutes.is_some_and(|m| !(m.is_finite() && m >= 0.0)) {
            return bad(format!("time limit {:?} minutes must be finite and at least 0", self.time_limit_minutes));
        }
        if self.time_budget_minutes.is_some_and(|m| !(m.is_finite() && m > 0.0)) {
            return bad(format!("time budget {:?} minutes must be finite and positive", self.time_budget_minutes));
        }
        if self.epochs == 0 || self.steps_per_epoch == 0 || self.batch == 0 {
            return bad("epochs, steps_per_epoch and batch must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("lr {} must be positive", self.lr));
        }
        let lf = self.lr_final();
        if !(lf.is_finite() && lf >= 0.0 && lf <= self.lr) {
            return bad(format!("lr_final {lf} must be between 0 and lr {}", self.lr));
        }
        let [low, high] = self.percentiles;
        if let Err(e) = (Normalization::Percentile { low, high }).validate() {
            return bad(e);
        }
        if self.voxel_size.iter().any(|v| !v.is_finite() || *v <= 0.0) {
            return bad(format!("voxel size {:?} must be positive", self.voxel_size));
        }
        if let Some(p) = self.pixel_size {
            if let Err(e) = crate::preprocess::check_pixel_um(p) {
                return bad(e);
            }
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!("weight_decay {} must be 0 or more", self.weight_decay));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad(format!("momentum {} must lie in [0, 1)", self.momentum));
        }
        if !(self.dice_smooth.is_finite() && self.dice_smooth > 0.0) {
            return bad(format!("dice_smooth {} must be positive", self.dice_smooth));
        }
        if let Some(w) = &self.class_weights {
            if w.iter().any(|v| !(v.is_finite() && *v >= 0.0)) || w.iter().sum::<f32>() <= 0.0 {
                return bad(format!("class_weights {w:?}: each 0 or more, not all 0"));
            }
        }
        if self.val_overlap >= self.val_tile {
            return bad(format!(
                "val_overlap {} must be less than val_tile {} (tiles would advance by nothing)",
                self.val_overlap, self.val_tile
            ));
        }
        let role = if self.model == Arch::Ndn { Role::Detection } else { Role::Segmentation };
        if let Err(e) = Setting::grid(role, &self.val_thresholds, &self.val_dynamics) {
            return bad(format!("validation grid: {e}"));
        }
        if self.dilate_within_nuclei && self.dilate_radius() == 0 {
            return bad(
                "dilate_within_nuclei needs a dilation (--dilate N, N >= 1): there is nothing to keep within".into()
            );
        }
        if self.centre_map && (self.dilate_radius() > 0 || self.dilate_within_nuclei) {
            return bad(
                "centre_map is made from the instance labels: it takes no dilation (--dilate, --dilate-within-nuclei)"
                    .into(),
            );
        }
        if self.separate_touching && (self.model == Arch::Ndn || self.centre_map || self.dilate_radius() > 0) {
            return bad(
                "separate_touching is a segmentation target made from the instance labels: it is for an NSN or U-Net, \
                 with no centre map and no dilation"
                    .into(),
            );
        }
        if let Err(e) = crate::postprocess::check_min_volume(self.min_volume_um3) {
            return bad(format!("min_volume_um3: {e}"));
        }
        if !(0.0..1.0).contains(&self.weight_average) {
            return bad(format!(
                "weight_average {} must be a decay in [0, 1) (0: off; 0.99 averages over about 100 steps)",
                self.weight_average
            ));
        }
        if self.weight_average > 0.0 && self.bn_recalibration == 0 && !self.freeze_bn {
            return bad("weight_average needs bn_recalibration > 0 (or freeze_bn): the running batch-norm statistics \
                 of training describe the last steps' weights, not their average"
                .to_string());
        }
        if !(0.0..=1.0).contains(&self.object_patches) {
            return bad(format!("object_patches {} must be a share between 0 and 1", self.object_patches));
        }
        if let Err(e) = self.augment.validate() {
            return bad(e.to_string());
        }
        self.net_config()?;
        self.loss_spec()?;
        Ok(())
    }
}
