//! [`Network`]: a network on the GPU with what its weights file says about
//! how inputs were prepared; load, save and predict.

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

/// What a weights file says about how its inputs were prepared, so inference normalises as training did.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct WeightsMeta {
    pub config: NetConfig,
    pub normalization: crate::preprocess::Normalization,
    pub isotropic: bool,
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
}

/// The foreground threshold of a network whose weights do not name one.
pub const DEFAULT_THRESHOLD: f32 = 0.5;

impl WeightsMeta {
    /// The calibrated threshold, else [`DEFAULT_THRESHOLD`].
    pub fn threshold_or_default(&self) -> f32 {
        self.threshold.unwrap_or(DEFAULT_THRESHOLD)
    }

    /// The calibrated marker dynamic, else 0 (plain components).
    pub fn marker_dynamic_or_zero(&self) -> f32 {
        self.marker_dynamic.unwrap_or(0.0)
    }
}

/// A network on the GPU: parameters, BN running statistics and metadata.
pub struct Network {
    pub meta: WeightsMeta,
    pub net: Net<Gpu>,
}

/// A weights (or checkpoint) file read to the host.
pub struct HostWeights {
    pub meta: WeightsMeta,
    pub params: Vec<CpuTensor>,
    pub buffers: Vec<CpuTensor>,
    /// Tensors not part of the network (optimizer state in checkpoints).
    pub rest: st::StFile,
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
    meta.config.validate().map_err(|e| Error::file(path, e.to_string()))?;
    let layout = Layout::new(&meta.config);
    let params = layout.params.iter().map(|s| f.take(path, &s.name, s.shape)).collect::<Result<Vec<_>>>()?;
    let buffers = layout.buffers.iter().map(|s| f.take(path, &s.name, s.shape)).collect::<Result<Vec<_>>>()?;
    Ok(HostWeights { meta, params, buffers, rest: f })
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
        Ok(Network { meta, net })
    }

    /// Loads a weights file (also a training checkpoint).
    pub fn load(ctx: &GpuContext, path: &Path) -> Result<Self> {
        let w = read_weights(path)?;
        let net = Net::from_host(ctx, w.meta.config.clone(), &w.params, &w.buffers)?;
        Ok(Network { meta: w.meta, net })
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
        write_weights(path, &self.meta, &self.net.layout, &p, &b, &[], HashMap::new(), half)
    }

    /// Inference: x (N, in_channels, D, H, W), sides divisible by
    /// `side_multiple()`; returns probabilities (N, classes, D, H, W)
    /// (sigmoid or softmax), BN in inference mode, op by op. `infer` uses
    /// the same network with batch norm folded into the convolutions
    /// ([`Net::fold_bn`] once, then [`Net::predict_folded`] per tile: one
    /// fused kernel per conv + BN + ReLU), equal up to rounding.
    pub fn predict(&self, ctx: &GpuContext, x: &GpuTensor) -> Result<GpuTensor> {
        self.net.predict(ctx, x)
    }
}
