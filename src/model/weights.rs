//! [`Network`]: a network on the GPU with what its weights file says about
//! how inputs were prepared; load, save and predict.
//!
//! A weights file may also hold **members**: further networks whose
//! foreground probabilities are averaged with the file's own network (an
//! ensemble; `qcanet-gpu calibrate --nsn A --nsn B` writes one). The file's
//! own tensors and [`META_KEY`] are its first network, so a reader that
//! knows no members still loads that one; member `k` (1, 2, …) has its
//! tensors under [`member_prefix`]`(k)` and its metadata in the JSON array
//! under [`MEMBERS_KEY`]. The threshold and marker dynamic of the file's own
//! metadata are the ensemble's: they apply to the averaged probability.

use std::collections::HashMap;
use std::path::Path;

use super::config::{Layout, NetConfig};
use super::gpu::Gpu;
use super::safetensors_file as st;
use super::unet::Net;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTensor};
use crate::tensor::CpuTensor;

/// Metadata key holding [`WeightsMeta`] as JSON.
pub const META_KEY: &str = "qcanet_meta";
/// Metadata key naming the format.
pub const FORMAT_KEY: &str = "format";
pub const FORMAT: &str = "qcanet-gpu weights v1";
/// Metadata key holding the members' [`WeightsMeta`] (a JSON array; absent
/// for a single network).
pub const MEMBERS_KEY: &str = "qcanet_members";

/// Prefix of member `k`'s tensor names (`k` from 1; the file's own network
/// has no prefix).
pub fn member_prefix(k: usize) -> String {
    format!("member{k}.")
}

/// What a weights file says about how its inputs were prepared, so inference normalises as training did.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct WeightsMeta {
    pub config: NetConfig,
    pub normalization: crate::preprocess::Normalization,
    pub isotropic: bool,
    /// x/y pixel size (µm) of the grid the network was trained on
    /// ([`crate::preprocess::NetGrid`]); absent in files written before it
    /// was recorded, whose networks were trained at
    /// [`crate::preprocess::DEFAULT_PIXEL_UM`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pixel_um: Option<f64>,
    pub trained_on: String,
    pub epochs: usize,
    pub val_iou: Option<f32>,
    /// Foreground probability threshold chosen on validation volumes
    /// (`qcanet-gpu calibrate`); inference uses 0.5 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// Detection networks: the dynamic of their markers (only summits of the
    /// probability at least this far above the saddle to a higher summit are
    /// markers; see `postprocess::markers`), chosen with the threshold by
    /// `qcanet-gpu calibrate`. Absent or 0: every component above the
    /// threshold is a marker, as in the original QCANet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker_dynamic: Option<f32>,
    /// Segmentation networks: a second, lower threshold (hysteresis): nuclei
    /// are split on the mask above `threshold`, then each grows into the
    /// voxels above this one that it reaches (`postprocess::grow`). Chosen
    /// with the threshold by `qcanet-gpu calibrate`; absent: no growth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extent_threshold: Option<f32>,
    /// Detection networks: the floor on object volume (µm³) the threshold
    /// and dynamic were chosen with (`calibrate --min-volume`, or training's
    /// validation), which `infer` then applies; absent:
    /// [`crate::postprocess::MIN_NUCLEUS_UM3`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_volume_um3: Option<f64>,
    /// Segmentation networks: components of the mask that no marker reaches
    /// are nuclei too and get labels of their own (`infer --label-unmarked`),
    /// as `calibrate --label-unmarked on` records. Absent: false, as the
    /// original QCANet (such components include polar bodies:
    /// weights/HISTORY.md, "An NSN that keeps touching nuclei apart").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_unmarked: Option<bool>,
}

/// The foreground threshold of a network whose weights do not name one.
pub const DEFAULT_THRESHOLD: f32 = 0.5;

impl WeightsMeta {
    /// Refuses metadata no run of this program writes and no network could
    /// use: the network's settings, a grid pixel outside
    /// [`crate::preprocess::PIXEL_UM_RANGE`], percentiles out of order, and
    /// thresholds, dynamic or floor outside their ranges (a threshold of 5
    /// would segment nothing, silently).
    pub fn validate(&self) -> Result<()> {
        self.config.validate()?;
        let fraction = |what: &str, v: Option<f32>, low_open: bool| match v {
            Some(t) if !(t < 1.0 && (t > 0.0 || (!low_open && t == 0.0))) => {
                Err(Error::invalid(format!("{what} {t} must lie in {}0, 1)", if low_open { "(" } else { "[" })))
            }
            _ => Ok(()),
        };
        fraction("threshold", self.threshold, false)?;
        fraction("marker dynamic", self.marker_dynamic, false)?;
        fraction("extent threshold", self.extent_threshold, true)?;
        if let Some(p) = self.pixel_um {
            crate::preprocess::check_pixel_um(p).map_err(Error::invalid)?;
        }
        self.normalization.validate().map_err(Error::invalid)?;
        if let Some(v) = self.min_volume_um3 {
            crate::postprocess::check_min_volume(v)?;
        }
        Ok(())
    }

    /// The calibrated threshold, else [`DEFAULT_THRESHOLD`].
    pub fn threshold_or_default(&self) -> f32 {
        self.threshold.unwrap_or(DEFAULT_THRESHOLD)
    }

    /// The calibrated marker dynamic, else 0 (plain components).
    pub fn marker_dynamic_or_zero(&self) -> f32 {
        self.marker_dynamic.unwrap_or(0.0)
    }

    /// The lower threshold nuclei grow to, when it is below the threshold
    /// (None: no growth).
    pub fn extent_below_threshold(&self) -> Option<f32> {
        crate::postprocess::growth_extent(self.threshold_or_default(), self.extent_threshold)
    }

    /// The floor on object volume chosen with, else [`crate::postprocess::MIN_NUCLEUS_UM3`].
    pub fn min_volume_or_default(&self) -> f64 {
        self.min_volume_um3.unwrap_or(crate::postprocess::MIN_NUCLEUS_UM3)
    }

    /// Whether components of this segmentation network's mask that no marker
    /// reaches are nuclei ([`WeightsMeta::label_unmarked`]; default false).
    pub fn label_unmarked_or_default(&self) -> bool {
        self.label_unmarked.unwrap_or(false)
    }

    /// The grid this network sees stacks on.
    pub fn grid(&self) -> crate::preprocess::NetGrid {
        crate::preprocess::NetGrid {
            pixel_um: self.pixel_um.unwrap_or(crate::preprocess::DEFAULT_PIXEL_UM),
            isotropic: self.isotropic,
        }
    }
}

/// A network on the GPU: parameters, BN running statistics and metadata;
/// with `members`, an ensemble whose prediction is the mean of all of them.
pub struct Network {
    pub meta: WeightsMeta,
    pub net: Net<Gpu>,
    /// Further networks averaged with this one (empty: a single network).
    pub members: Vec<Network>,
}

/// A weights (or checkpoint) file read to the host.
pub struct HostWeights {
    pub meta: WeightsMeta,
    pub params: Vec<CpuTensor>,
    pub buffers: Vec<CpuTensor>,
    /// Further networks of an ensemble file (empty: a single network).
    pub members: Vec<HostMember>,
    /// Tensors not part of the network (optimizer state in checkpoints).
    pub rest: st::StFile,
}

/// One further member of an ensemble file, read to the host.
pub struct HostMember {
    pub meta: WeightsMeta,
    pub params: Vec<CpuTensor>,
    pub buffers: Vec<CpuTensor>,
}

/// Why `b` cannot be averaged with `a` (None: it can): the same
/// architecture, output classes, foreground channel and input preparation
/// (normalisation, grid), so one prepared input and one threshold serve
/// both.
pub fn averaging_conflict(a: &WeightsMeta, b: &WeightsMeta) -> Option<String> {
    let (ca, cb) = (&a.config, &b.config);
    if ca.arch != cb.arch {
        return Some(format!("a {} cannot be averaged with a {}", cb.arch, ca.arch));
    }
    if ca.classes != cb.classes || ca.foreground_channel() != cb.foreground_channel() {
        return Some(format!("{} output classes against {}", cb.classes, ca.classes));
    }
    if a.normalization != b.normalization {
        return Some(format!("inputs normalised by {} against {}", b.normalization, a.normalization));
    }
    if a.isotropic != b.isotropic {
        return Some(format!(
            "{} against {} inputs",
            if b.isotropic { "isotropic" } else { "anisotropic" },
            if a.isotropic { "isotropic" } else { "anisotropic" }
        ));
    }
    let (pa, pb) = (a.grid().pixel_um, b.grid().pixel_um);
    if pa != pb {
        return Some(format!("trained at {pb} µm pixels against {pa} µm"));
    }
    None
}

/// Reads a weights file: metadata, and every parameter and buffer of the
/// network it describes (a missing tensor or wrong shape is refused naming
/// the tensor and the file).
pub fn read_weights(path: &Path) -> Result<HostWeights> {
    let mut f = st::read(path)?;
    let json = f
        .metadata
        .get(META_KEY)
        .ok_or_else(|| Error::file(path, format!("has no '{META_KEY}' metadata: not a qcanet-gpu weights file")))?;
    let meta: WeightsMeta =
        serde_json::from_str(json).map_err(|e| Error::file(path, format!("invalid '{META_KEY}' metadata: {e}")))?;
    meta.validate().map_err(|e| Error::file(path, e.to_string()))?;
    let layout = Layout::new(&meta.config);
    let params = layout.params.iter().map(|s| f.take(path, &s.name, s.shape)).collect::<Result<Vec<_>>>()?;
    let buffers = layout.buffers.iter().map(|s| f.take(path, &s.name, s.shape)).collect::<Result<Vec<_>>>()?;
    let mut members = Vec::new();
    if let Some(json) = f.metadata.get(MEMBERS_KEY).cloned() {
        let metas: Vec<WeightsMeta> = serde_json::from_str(&json)
            .map_err(|e| Error::file(path, format!("invalid '{MEMBERS_KEY}' metadata: {e}")))?;
        for (i, m) in metas.into_iter().enumerate() {
            let k = i + 1;
            m.validate().map_err(|e| Error::file(path, format!("member {k}: {e}")))?;
            if let Some(why) = averaging_conflict(&meta, &m) {
                return Err(Error::file(path, format!("member {k} cannot be averaged with the first network: {why}")));
            }
            let layout = Layout::new(&m.config);
            let pre = member_prefix(k);
            let mut take = |s: &super::config::TensorSpec| f.take(path, &format!("{pre}{}", s.name), s.shape);
            let params = layout.params.iter().map(&mut take).collect::<Result<Vec<_>>>()?;
            let buffers = layout.buffers.iter().map(&mut take).collect::<Result<Vec<_>>>()?;
            members.push(HostMember { meta: m, params, buffers });
        }
    }
    Ok(HostWeights { meta, params, buffers, members, rest: f })
}

/// Writes network tensors plus `extra` tensors and metadata.
#[allow(clippy::too_many_arguments)]
pub fn write_weights(
    path: &Path,
    meta: &WeightsMeta,
    layout: &Layout,
    params: &[CpuTensor],
    buffers: &[CpuTensor],
    extra: &[(String, CpuTensor)],
    extra_meta: HashMap<String, String>,
    half: bool,
) -> Result<()> {
    let mut named: Vec<(String, &CpuTensor)> = Vec::new();
    for (s, t) in layout.params.iter().zip(params).chain(layout.buffers.iter().zip(buffers)) {
        named.push((s.name.clone(), t));
    }
    for (n, t) in extra {
        named.push((n.clone(), t));
    }
    let mut md = extra_meta;
    md.insert(FORMAT_KEY.into(), FORMAT.into());
    md.insert(META_KEY.into(), serde_json::to_string(meta).map_err(|e| Error::invalid(e.to_string()))?);
    st::write(path, &named, half, md)
}

impl Network {
    /// A freshly initialised network (PyTorch-like init, seeded).
    pub fn new(ctx: &GpuContext, meta: WeightsMeta, seed: u64) -> Result<Self> {
        let net = Net::init(ctx, meta.config.clone(), seed)?;
        Ok(Network { meta, net, members: Vec::new() })
    }

    /// Loads a weights file (also a training checkpoint), with its members.
    pub fn load(ctx: &GpuContext, path: &Path) -> Result<Self> {
        let w = read_weights(path)?;
        let net = Net::from_host(ctx, w.meta.config.clone(), &w.params, &w.buffers)?;
        let members = w
            .members
            .into_iter()
            .map(|m| {
                let net = Net::from_host(ctx, m.meta.config.clone(), &m.params, &m.buffers)?;
                Ok(Network { meta: m.meta, net, members: Vec::new() })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Network { meta: w.meta, net, members })
    }

    /// This network averaged with `others` (and their members): an
    /// ensemble that predicts the mean of their probabilities, with this
    /// network's metadata. Refused where [`averaging_conflict`] finds one.
    pub fn averaged_with(mut self, others: Vec<Network>) -> Result<Self> {
        let mut flat = Vec::new();
        for mut o in others {
            let inner = std::mem::take(&mut o.members);
            flat.push(o);
            flat.extend(inner);
        }
        if let Some(why) = flat.iter().find_map(|o| averaging_conflict(&self.meta, &o.meta)) {
            return Err(Error::invalid(format!("cannot be averaged with the first network: {why}")));
        }
        self.members.extend(flat);
        Ok(self)
    }

    /// Tile sides every network of this one accepts (side multiples are
    /// powers of two, so the largest).
    pub fn side_multiple(&self) -> usize {
        self.all().map(|n| n.config().side_multiple()).max().unwrap_or(1)
    }

    /// This network and its members, the prediction's terms.
    pub fn all(&self) -> impl Iterator<Item = &Network> {
        std::iter::once(self).chain(&self.members)
    }

    pub fn config(&self) -> &NetConfig {
        &self.meta.config
    }

    /// Saves weights and BN running statistics as f32.
    pub fn save(&self, ctx: &GpuContext, path: &Path) -> Result<()> {
        self.save_as(ctx, path, false)
    }

    /// Saves weights and BN running statistics as f16 (half the size).
    pub fn save_f16(&self, ctx: &GpuContext, path: &Path) -> Result<()> {
        self.save_as(ctx, path, true)
    }

    fn save_as(&self, ctx: &GpuContext, path: &Path, half: bool) -> Result<()> {
        let p = self.net.params_to_host(ctx)?;
        let b = self.net.buffers_to_host(ctx)?;
        let mut extra = Vec::new();
        let mut extra_meta = HashMap::new();
        if !self.members.is_empty() {
            let mut metas = Vec::new();
            for (i, m) in self.members.iter().enumerate() {
                let pre = member_prefix(i + 1);
                let mp = m.net.params_to_host(ctx)?;
                let mb = m.net.buffers_to_host(ctx)?;
                for (s, t) in m.net.layout.params.iter().zip(mp).chain(m.net.layout.buffers.iter().zip(mb)) {
                    extra.push((format!("{pre}{}", s.name), t));
                }
                metas.push(&m.meta);
            }
            extra_meta.insert(
                MEMBERS_KEY.to_string(),
                serde_json::to_string(&metas).map_err(|e| Error::invalid(e.to_string()))?,
            );
        }
        write_weights(path, &self.meta, &self.net.layout, &p, &b, &extra, extra_meta, half)
    }

    /// Inference: x (N, in_channels, D, H, W), sides divisible by
    /// `side_multiple()`; returns probabilities (N, classes, D, H, W)
    /// (sigmoid or softmax), BN in inference mode, op by op. `infer` uses
    /// the same network with batch norm folded into the convolutions
    /// ([`Net::fold_bn`] once, then [`Net::predict_folded`] per tile: one
    /// fused kernel per conv + BN + ReLU), equal up to rounding.
    /// An ensemble's members are not part of this pass (`infer` averages
    /// them: `infer::predictors::NetPredictor`).
    pub fn predict(&self, ctx: &GpuContext, x: &GpuTensor) -> Result<GpuTensor> {
        self.net.predict(ctx, x)
    }
}
