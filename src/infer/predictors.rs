//! The networks behind the [`Predictor`] trait, loading them with an
//! architecture check, and finding the bundled weights.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext};
use crate::infer::pipeline::Stage;
use crate::infer::tiles::{mean_of, Predictor};
use crate::model::{Arch, Folded, Gpu, Network};
use crate::tensor::CpuTensor;

/// A [`Network`] predicting one tile at a time on the GPU, with batch norm
/// folded into its convolutions (done once, at the first tile), activations
/// stored as the `activations` kernel variant says (f32 by default). An
/// ensemble (a network with members) predicts the mean of its networks'
/// probabilities, each predicted from the same uploaded tile.
pub struct NetPredictor<'a> {
    pub ctx: &'a GpuContext,
    pub net: &'a Network,
    folded: Vec<Folded<Gpu>>,
}

impl<'a> NetPredictor<'a> {
    pub fn new(ctx: &'a GpuContext, net: &'a Network) -> Self {
        NetPredictor { ctx, net, folded: Vec::new() }
    }
}

impl Predictor for NetPredictor<'_> {
    fn side_multiple(&self) -> usize {
        self.net.side_multiple()
    }
    fn classes(&self) -> usize {
        self.net.config().classes
    }
    fn predict_tile(&mut self, tile: &CpuTensor) -> Result<CpuTensor> {
        let x = self.ctx.upload(tile)?;
        if self.folded.is_empty() {
            // Activation storage: f32, or f16 where forced and supported
            // (`--gpu-kernel activations=f16`).
            let half = crate::ops::cast::ACTIVATIONS.choose(self.ctx)?.kernel == DType::F16;
            for n in self.net.all() {
                self.folded.push(n.net.fold_bn(self.ctx)?.with_half_storage(half));
            }
        }
        let ctx = self.ctx;
        mean_of(
            self.net.all().zip(&self.folded).map(|(n, folded)| ctx.download(&n.net.predict_folded(ctx, folded, &x)?)),
            "averaged networks",
        )
    }
}

/// A sliding-window stage for `net`, preparing inputs as its metadata says.
pub fn stage<'a>(ctx: &'a GpuContext, net: &'a Network, name: &str) -> Stage<'a> {
    Stage {
        name: name.to_string(),
        predictor: Box::new(NetPredictor::new(ctx, net)),
        foreground_channel: net.config().foreground_channel(),
        normalization: net.meta.normalization,
        grid: net.meta.grid(),
        threshold: net.meta.threshold_or_default(),
        marker_dynamic: net.meta.marker_dynamic_or_zero(),
        extent_threshold: net.meta.extent_below_threshold(),
    }
}

/// `s` cut to about `n` characters (on a character boundary), with "…" when cut.
fn short(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// "NSN", "NDN" or "3-D U-Net".
pub fn arch_title(a: Arch) -> &'static str {
    match a {
        Arch::Nsn => "NSN",
        Arch::Ndn => "NDN",
        Arch::Unet3d => "3-D U-Net",
    }
}

/// Loads `path` and refuses a network of another architecture than `want`
/// (an NDN file given as the NSN, say), naming the file. Tensor-level
/// mismatches are refused by [`Network::load`], naming the tensor.
pub fn load_checked(ctx: &GpuContext, path: &Path, want: Arch) -> Result<Network> {
    if !path.is_file() {
        return Err(Error::file(path, "weights file not found"));
    }
    let net = Network::load(ctx, path)?;
    let got = net.config().arch;
    if got != want {
        return Err(Error::file(
            path,
            format!(
                "holds a {} network but a {} network is needed here (its metadata says arch = {})",
                arch_title(got),
                arch_title(want),
                got.name()
            ),
        ));
    }
    log::info!(
        "{}: {} (depth {}, width {}, {}³ kernels), normalisation {}, threshold {}{}{}, trained on {}",
        path.display(),
        arch_title(got),
        net.config().depth,
        net.config().base,
        net.config().kernel,
        net.meta.normalization,
        net.meta.threshold.map_or("0.5 (default)".to_string(), |t| format!("{t} (calibrated)")),
        net.meta.marker_dynamic.filter(|&h| h > 0.0).map_or(String::new(), |h| format!(", marker dynamic {h}")),
        net.meta.extent_below_threshold().map_or(String::new(), |e| format!(", nuclei grown to {e}")),
        short(&net.meta.trained_on, 160)
    );
    for (k, m) in net.members.iter().enumerate() {
        log::info!(
            "{}: averaged with member {} ({} of depth {}, width {}, {}³ kernels, trained on {})",
            path.display(),
            k + 1,
            arch_title(m.config().arch),
            m.config().depth,
            m.config().base,
            m.config().kernel,
            short(&m.meta.trained_on, 120)
        );
    }
    Ok(net)
}

/// The networks of `paths` averaged into one (an ensemble; one path: that
/// network), each loaded by [`load_checked`]; a network that cannot be
/// averaged with the first is refused naming its file.
pub fn load_averaged(ctx: &GpuContext, paths: &[PathBuf], want: Arch) -> Result<Network> {
    let (first, rest) = paths.split_first().ok_or_else(|| Error::invalid("no weights file given"))?;
    let mut net = load_checked(ctx, first, want)?;
    for p in rest {
        let o = load_checked(ctx, p, want)?;
        net = net.averaged_with(vec![o]).map_err(|e| Error::file(p, format!("{e} ({})", first.display())))?;
    }
    Ok(net)
}

/// Environment variable naming a folder of weights files.
pub const WEIGHTS_ENV: &str = "QCANET_WEIGHTS";

/// Where a bundled weights file (`nsn.safetensors`, …) is looked for, in
/// order: `$QCANET_WEIGHTS/`, `./weights/`, `weights/` in every folder above
/// the executable (a cargo build inside the repository), and the repository
/// this binary was built from.
pub fn weight_candidates(file: &str) -> Vec<PathBuf> {
    let mut c = Vec::new();
    if let Some(d) = std::env::var_os(WEIGHTS_ENV) {
        c.push(PathBuf::from(d).join(file));
    }
    if let Ok(d) = std::env::current_dir() {
        c.push(d.join("weights").join(file));
    }
    if let Ok(exe) = std::env::current_exe() {
        for a in exe.ancestors().skip(1) {
            c.push(a.join("weights").join(file));
        }
    }
    c.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("weights").join(file));
    let mut seen = std::collections::HashSet::new();
    c.retain(|p| seen.insert(p.clone()));
    c
}

/// The first existing [`weight_candidates`] path, or an error listing where it looked.
pub fn locate_weights(file: &str) -> Result<PathBuf> {
    let c = weight_candidates(file);
    if let Some(p) = c.iter().find(|p| p.is_file()) {
        return Ok(p.clone());
    }
    let list: Vec<String> = c.iter().map(|p| format!("  {}", p.display())).collect();
    Err(Error::invalid(format!(
        "weights file {file} not found; looked in:\n{}\npass the file explicitly, or set {WEIGHTS_ENV} to the folder holding it",
        list.join("\n")
    )))
}

/// An explicit path, or the bundled file found by [`locate_weights`].
pub fn weights_path(explicit: Option<&Path>, file: &str) -> Result<PathBuf> {
    match explicit {
        Some(p) if !p.is_file() => Err(Error::file(p, "weights file not found")),
        Some(p) => Ok(p.to_path_buf()),
        None => locate_weights(file),
    }
}
