//! One volume through QCANet: resampled to each network's grid (its pixel
//! size, z isotropic), normalisation, NSN and NDN by sliding window, back to
//! the input grid, threshold, marker watershed,
//! per-nucleus criteria. Also the NSN-only (connected components) baseline
//! used by the figure.

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::infer::tiles::{predict_sliding, Predictor, TilePlan};
use crate::infer::tta::MirrorMean;
use crate::io::Volume;
use crate::postprocess::criteria::{measure, NucleusCriteria};
use crate::postprocess::markers::detection_mask;
use crate::postprocess::{drop_small_objects, Connectivity, Grid, InstanceOptions};
use crate::preprocess::{self, Interp, NetGrid, Normalization};
use crate::progress::Progress;

/// The microscope voxel of the QCANet example embryos (x, y, z µm), used when
/// neither the file nor the user says.
pub const DEFAULT_VOXEL_UM: [f64; 3] = [0.8, 0.8, 1.75];

/// A network ready for sliding-window prediction, with how its input must be
/// prepared (from its weights' metadata).
pub struct Stage<'a> {
    /// "NSN", "NDN", "3-D U-Net": for messages.
    pub name: String,
    pub predictor: Box<dyn Predictor + 'a>,
    /// Output channel holding the foreground probability.
    pub foreground_channel: usize,
    pub normalization: Normalization,
    /// The grid the network sees stacks on (its pixel size; z isotropic or not).
    pub grid: NetGrid,
    /// Foreground probability threshold: the one chosen for this network on
    /// validation volumes (its weights' metadata), else 0.5.
    pub threshold: f32,
    /// Detection networks: the markers' dynamic (its weights' metadata, else
    /// 0: plain components of the thresholded probability).
    pub marker_dynamic: f32,
    /// Segmentation networks: the lower threshold nuclei grow to after the
    /// watershed (its weights' metadata; None: no growth).
    pub extent_threshold: Option<f32>,
}

pub use crate::model::weights::DEFAULT_THRESHOLD;

/// Default tile side (isotropic voxels): large enough that a BBBC050-sized
/// stack (about 112 × 140 × 140 after z interpolation) is predicted in one
/// pass, since every extra tile costs its whole volume again; small enough
/// that a width-16 network's activations stay near 1 GiB.
pub const DEFAULT_TILE: usize = 160;
/// Default distance between tile origins: 32 voxels of blended overlap.
pub const DEFAULT_STRIDE: usize = 128;

/// Settings of [`segment`] that do not come from the weights.
#[derive(Clone, Debug)]
pub struct SegmentOptions {
    /// Tile side and stride per axis (z, y, x), in network-input voxels.
    pub tile: [usize; 3],
    pub stride: [usize; 3],
    /// Reflected context around the volume (0: tiles stop at the volume's edge).
    pub margin: usize,
    /// Foreground probability above which a voxel is foreground, for every
    /// network (None: each network's own, [`Stage::threshold`]).
    pub threshold: Option<f32>,
    /// Dynamic of the detection markers (None: the NDN's own,
    /// [`Stage::marker_dynamic`]); 0 keeps every component above the threshold.
    pub marker_dynamic: Option<f32>,
    /// The NSN's lower threshold nuclei grow to after the watershed (None:
    /// the NSN's own, [`Stage::extent_threshold`]); at or above the NSN's
    /// threshold, no growth.
    pub extent_threshold: Option<f32>,
    /// Voxel size (x, y, z µm) when the file has none.
    pub voxel_um: [f64; 3],
    pub instance: InstanceOptions,
    /// Keep the foreground probabilities (on the input grid) in the result.
    pub keep_probabilities: bool,
    /// Test-time augmentation: each tile predicted in this many mirror
    /// images, averaged (1: off; 2, 4 or 8; see [`crate::infer::tta`]).
    pub tta: usize,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        SegmentOptions {
            tile: [DEFAULT_TILE; 3],
            stride: [DEFAULT_STRIDE; 3],
            margin: 0,
            threshold: None,
            marker_dynamic: None,
            extent_threshold: None,
            tta: 1,
            voxel_um: DEFAULT_VOXEL_UM,
            instance: InstanceOptions::default(),
            keep_probabilities: false,
        }
    }
}

/// The result for one volume, on the input grid.
pub struct Segmentation {
    pub dims: [usize; 3],
    /// Voxel size used (x, y, z µm): the file's, else the option's.
    pub voxel_um: [f64; 3],
    /// One label per nucleus, 0 background.
    pub labels: Vec<u32>,
    pub criteria: Vec<NucleusCriteria>,
    pub nsn_prob: Option<Vec<f32>>,
    pub ndn_prob: Option<Vec<f32>>,
}

/// The voxel size to use for `vol` (file first, then `fallback`), checked.
pub fn voxel_of(vol: &Volume, fallback: [f64; 3]) -> Result<[f64; 3]> {
    let v = vol.voxel_um.unwrap_or(fallback);
    if !v.iter().all(|s| s.is_finite() && *s > 0.0) {
        return Err(Error::invalid(format!("voxel size {v:?} µm must be positive")));
    }
    Ok(v)
}

/// The physical grid of `vol` for post-processing (spacing z, y, x).
pub fn grid_of(dims: [usize; 3], voxel_um: [f64; 3]) -> Grid {
    Grid::new(dims, [voxel_um[2] as f32, voxel_um[1] as f32, voxel_um[0] as f32])
}

/// Runs one network over `vol` by sliding window and returns its foreground
/// probability on the input grid (z back to the input depth, nearest).
/// `pb` gets the number of tiles added to its length and one tick per tile.
pub fn foreground(
    stage: &mut Stage,
    vol: &Volume,
    voxel_um: [f64; 3],
    opts: &SegmentOptions,
    pb: &Progress,
) -> Result<Vec<f32>> {
    Inputs::new(vol, voxel_um).foreground(stage, opts, pb)
}

/// One volume's network inputs (resampled to the network's grid,
/// normalised), each prepared once and shared by every network that wants
/// it the same way (the NSN and NDN usually do).
pub struct Inputs<'v> {
    vol: &'v Volume,
    voxel_um: [f64; 3],
    prepared: Vec<Prepared>,
}

/// A volume prepared one way: on a network's grid, normalised.
struct Prepared {
    grid: NetGrid,
    normalization: Normalization,
    data: Vec<f32>,
    dims: [usize; 3],
}

impl<'v> Inputs<'v> {
    pub fn new(vol: &'v Volume, voxel_um: [f64; 3]) -> Self {
        Inputs { vol, voxel_um, prepared: Vec::new() }
    }

    /// The input `stage` wants (prepared on first use) and its dims; a
    /// stack too large for the grid is refused ([`preprocess::for_network`]).
    fn input(&mut self, stage: &Stage) -> Result<(&[f32], [usize; 3])> {
        let wanted = |p: &Prepared| p.grid == stage.grid && p.normalization == stage.normalization;
        let k = match self.prepared.iter().position(wanted) {
            Some(k) => k,
            None => {
                let vol = self.vol;
                let (x, dims) =
                    preprocess::for_network(vol.data.clone(), vol.dims, self.voxel_um, stage.grid, stage.normalization)
                        .map_err(|e| Error::invalid(format!("{}: {e}", stage.name)))?;
                if dims != vol.dims {
                    log::debug!(
                        "{}: {:?} voxels of {:?} µm resampled to {dims:?} on its grid ({} µm pixels{})",
                        stage.name,
                        vol.dims,
                        self.voxel_um,
                        stage.grid.pixel_um,
                        if stage.grid.isotropic { ", isotropic" } else { "" }
                    );
                }
                self.prepared.push(Prepared { grid: stage.grid, normalization: stage.normalization, data: x, dims });
                self.prepared.len() - 1
            }
        };
        let p = &self.prepared[k];
        Ok((&p.data, p.dims))
    }

    /// [`foreground`] of `stage` on this volume.
    pub fn foreground(&mut self, stage: &mut Stage, opts: &SegmentOptions, pb: &Progress) -> Result<Vec<f32>> {
        let back = self.vol.dims;
        let (x, dims) = self.input(stage)?;
        predict_prepared(stage, x, dims, opts, pb).map(|fg| preprocess::resample(fg, dims, back, Interp::Nearest))
    }
}

/// The foreground probability of `stage` on its prepared input `x` (dims `dims`).
fn predict_prepared(
    stage: &mut Stage,
    x: &[f32],
    dims: [usize; 3],
    opts: &SegmentOptions,
    pb: &Progress,
) -> Result<Vec<f32>> {
    let plan = TilePlan::new(dims, opts.tile, opts.stride, stage.predictor.side_multiple(), opts.margin)
        .map_err(|e| Error::invalid(format!("{}: {e}", stage.name)))?;
    log::debug!(
        "{}: {:?} voxels, {} tiles of {:?} (padded {:?})",
        stage.name,
        dims,
        plan.n_tiles(),
        plan.tile_dims(),
        plan.axes.iter().map(|a| a.padded).collect::<Vec<_>>()
    );
    let m = stage.predictor.side_multiple();
    let whole: Vec<usize> = dims.iter().map(|&l| l.div_ceil(m) * m).collect();
    let tiled = plan.n_tiles() * plan.tile_dims().iter().product::<usize>();
    if plan.n_tiles() > 1 && 2 * whole.iter().product::<usize>() <= tiled {
        log::info!(
            "{}: {} overlapping tiles predict {:.1}× the volume's voxels; if memory allows, --tile {} covers it in one tile",
            stage.name,
            plan.n_tiles(),
            tiled as f64 / (dims.iter().product::<usize>()) as f64,
            whole.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",")
        );
    }
    pb.inc_length(plan.n_tiles() as u64);
    let classes = stage.predictor.classes();
    if stage.foreground_channel >= classes {
        return Err(Error::invalid(format!(
            "{}: foreground channel {} but the network has {classes} output channels",
            stage.name, stage.foreground_channel
        )));
    }
    // One view (the default) is the plain prediction.
    let mut views = MirrorMean::new(stage.predictor.as_mut(), opts.tta)?;
    let probs = predict_sliding(&mut views, x, dims, &plan, &mut || pb.inc(1))?;
    Ok(probs.channel(0, stage.foreground_channel).to_vec())
}

impl SegmentOptions {
    /// The threshold for `stage`: the override, else the stage's own.
    pub fn threshold_for(&self, stage: &Stage) -> f32 {
        self.threshold.unwrap_or(stage.threshold)
    }

    /// The detection mask of `ndn`'s foreground probability `p` on a volume
    /// of `dims`: above its threshold, and on a summit of at least its
    /// marker dynamic (the override, else the stage's own).
    pub fn markers(&self, ndn: &Stage, p: &[f32], dims: [usize; 3]) -> Result<Vec<u8>> {
        let h = self.marker_dynamic.unwrap_or(ndn.marker_dynamic);
        detection_mask(p, dims, self.threshold_for(ndn), h, self.instance.marker_connectivity)
    }

    /// The lower threshold `nsn`'s nuclei grow to (the override, else its
    /// own), when it is below the NSN's threshold; None: no growth.
    pub fn extent_for(&self, nsn: &Stage) -> Option<f32> {
        crate::postprocess::growth_extent(self.threshold_for(nsn), self.extent_threshold.or(nsn.extent_threshold))
    }

    /// The QCANet instance stage on the NSN's probability `pn` and the
    /// markers `det`: the watershed within `pn` above the NSN's threshold
    /// ([`instances`]), then every nucleus grown to its extent threshold, if
    /// any ([`crate::postprocess::grow`]).
    pub fn qcanet_labels(
        &self,
        ctx: &GpuContext,
        nsn: &Stage,
        pn: &[f32],
        det: &[u8],
        grid: &Grid,
    ) -> Result<Vec<u32>> {
        let labels = instances(ctx, &threshold(pn, self.threshold_for(nsn)), det, grid, &self.instance)?;
        match self.extent_for(nsn) {
            Some(e) => crate::postprocess::grow(ctx, &labels, &threshold(pn, e), grid, &self.instance),
            None => Ok(labels),
        }
    }
}

/// `p > threshold` as a 0/1 mask.
pub fn threshold(p: &[f32], t: f32) -> Vec<u8> {
    p.iter().map(|&v| u8::from(v > t)).collect()
}

/// QCANet on one volume: NSN mask, NDN markers, marker watershed, criteria.
/// An empty segmentation or one without markers gives no nuclei (with a
/// warning), not an error.
pub fn segment(
    ctx: &GpuContext,
    nsn: &mut Stage,
    ndn: &mut Stage,
    vol: &Volume,
    opts: &SegmentOptions,
    pb: &Progress,
) -> Result<Segmentation> {
    let voxel_um = voxel_of(vol, opts.voxel_um)?;
    let mut inputs = Inputs::new(vol, voxel_um);
    let pn = inputs.foreground(nsn, opts, pb)?;
    let pd = inputs.foreground(ndn, opts, pb)?;
    let det = opts.markers(ndn, &pd, vol.dims)?;
    let grid = grid_of(vol.dims, voxel_um);
    let labels = opts.qcanet_labels(ctx, nsn, &pn, &det, &grid)?;
    let criteria = measure(&labels, &grid, Some(&vol.data))?;
    let keep = opts.keep_probabilities;
    Ok(Segmentation {
        dims: vol.dims,
        voxel_um,
        labels,
        criteria,
        nsn_prob: keep.then_some(pn),
        ndn_prob: keep.then_some(pd),
    })
}

/// [`crate::postprocess::instances`], except that an empty mask or a mask without markers
/// gives an empty label image with a warning.
pub fn instances(ctx: &GpuContext, seg: &[u8], det: &[u8], grid: &Grid, opts: &InstanceOptions) -> Result<Vec<u32>> {
    if !seg.iter().any(|&v| v != 0) {
        log::warn!("the segmentation is empty: no nuclei");
        return Ok(vec![0; seg.len()]);
    }
    let marked = seg.iter().zip(det).any(|(&s, &d)| s != 0 && d != 0);
    if !marked && !opts.label_unmarked_components {
        log::warn!("no detection marker inside the segmentation: no nuclei (see --label-unmarked)");
        return Ok(vec![0; seg.len()]);
    }
    crate::postprocess::instances(ctx, seg, det, grid, opts)
}

/// The NSN-only baseline: connected components of the thresholded foreground
/// (on the CPU, with a warning, for volumes larger than one GPU binding).
pub fn components(ctx: &GpuContext, mask: &[u8], dims: [usize; 3], conn: Connectivity) -> Result<Vec<u32>> {
    use crate::postprocess::{ccl, check_fits};
    if let Err(e) = check_fits(ctx, "components", dims, 1) {
        log::warn!("{e}; labelling on the CPU instead");
        return Ok(ccl::reference::label(mask, dims, conn).0);
    }
    Ok(ccl::label(ctx, mask, dims, conn)?.0)
}

/// The names of [`compare_methods`]'s rows, in their order: NSN + CCL, 3-D
/// U-Net + CCL (only with a U-Net), QCANet.
pub const METHOD_ROWS: [&str; 3] = ["NSN + CCL", "3-D U-Net + CCL", "QCANet"];

/// The rows [`compare_methods`] returns, in its order: [`METHOD_ROWS`], the
/// 3-D U-Net's only when it is given.
pub fn method_rows(with_unet: bool) -> impl Iterator<Item = &'static str> {
    METHOD_ROWS.into_iter().filter(move |&n| with_unet || n != METHOD_ROWS[1])
}

/// Label images of the methods compared in the figure, for one volume:
/// NSN + connected components (of the mask QCANet's nuclei cover), optionally a
/// 3-D U-Net + connected components,
/// and QCANet (NSN + NDN + marker watershed). The NSN runs once for both.
pub fn compare_methods(
    ctx: &GpuContext,
    nsn: &mut Stage,
    ndn: &mut Stage,
    unet: Option<&mut Stage>,
    vol: &Volume,
    opts: &SegmentOptions,
    pb: &Progress,
) -> Result<Vec<(String, Vec<u32>)>> {
    let voxel_um = voxel_of(vol, opts.voxel_um)?;
    let grid = grid_of(vol.dims, voxel_um);
    let conn = opts.instance.connectivity;
    let mut inputs = Inputs::new(vol, voxel_um);
    let pn = inputs.foreground(nsn, opts, pb)?;
    // The NSN baseline's mask is the one QCANet's nuclei cover: above the
    // extent threshold when the NSN grows its nuclei, else its threshold.
    let seg = threshold(&pn, opts.extent_for(nsn).unwrap_or(opts.threshold_for(nsn)));
    // The baselines' components go through the same volume floor as QCANet's nuclei.
    let floor = |l: Vec<u32>| drop_small_objects(&l, &grid, opts.instance.min_volume_um3);
    let mut rows = vec![(METHOD_ROWS[0].to_string(), floor(components(ctx, &seg, vol.dims, conn)?))];
    if let Some(u) = unet {
        let t = opts.threshold_for(u);
        let m = threshold(&inputs.foreground(u, opts, pb)?, t);
        rows.push((METHOD_ROWS[1].to_string(), floor(components(ctx, &m, vol.dims, conn)?)));
    }
    let pd = inputs.foreground(ndn, opts, pb)?;
    let det = opts.markers(ndn, &pd, vol.dims)?;
    rows.push((METHOD_ROWS[2].to_string(), opts.qcanet_labels(ctx, nsn, &pn, &det, &grid)?));
    Ok(rows)
}
