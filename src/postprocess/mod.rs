//! Instance segmentation: the QCANet post-processing stage on the GPU, and
//! per-nucleus criteria.
//!
//! QCANet turns the NSN's foreground mask and the NDN's nucleus-centre blobs
//! into one label per nucleus:
//! `watershed(-EDT(seg), markers = connected_components(det), mask = seg)`
//! on an anisotropic grid. Every piece has a GPU version (WGSL kernels under
//! `shaders/edt.wgsl`, `ccl.wgsl`, `watershed.wgsl`) and a plain-Rust
//! `reference` that the tests hold it to:
//! - [`edt`]: exact separable EDT (Felzenszwalb & Huttenlocher) and jump flooding;
//! - [`ccl`]: connected components, 6- or 26-connected, numbered 1..n by lowest linear index;
//! - [`watershed`]: marker-controlled watershed (GPU relaxation; CPU priority flood);
//! - [`grow`]: each nucleus grown into a wider mask after the watershed
//!   (hysteresis: split where the NSN is sure, outlined where it is less so;
//!   the same EDT and watershed kernels);
//! - [`markers`]: the detection mask from the NDN's probability: threshold,
//!   and optionally only its h-maxima, so touching centres stay two markers
//!   (CPU: a priority flood, about 0.3 s for a BBBC050 volume; no GPU kernel yet);
//! - [`criteria`]: volume, centroid, surface, intensity per nucleus, CSV and summary;
//! - [`spheres`]: a synthetic field of touching spheres with known labels;
//! - [`bench`](mod@bench): timings of each GPU stage against its reference.
//!
//! Volume layout: z-major (`index = (z * H + y) * W + x`), `Grid::dims` =
//! `[z, y, x]`. Limits: every per-voxel array (4 bytes per voxel) must fit one
//! storage binding (`ctx.binding_limit()`, 128 MiB on lavapipe: 33.5 M voxels,
//! about 322³); larger volumes get a clear error.

pub mod bench;
pub mod ccl;
pub mod criteria;
pub mod edt;
pub mod markers;
pub mod spheres;
pub mod watershed;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{grid, layout, Arg, GpuContext, ParamLayout, ShaderSource};

/// Every shader of the instance stage as its pipelines compile it, for
/// checks that need no GPU (`tests/shaders_naga.rs`, `tests/param_layouts.rs`).
pub const SHADERS: &[ShaderSource] = &[ccl::SHADER, edt::SHADER, watershed::SHADER];

/// Every uniform-parameter struct of the instance stage with its shader, for
/// the layout check against WGSL (`tests/param_layouts.rs`, no GPU), as
/// [`crate::ops::param_layouts`] for the ops.
pub fn param_layouts() -> Vec<ParamLayout> {
    vec![
        layout::<ccl::Params>(ccl::SHADER),
        layout::<edt::Params>(edt::SHADER),
        layout::<watershed::Params>(watershed::SHADER),
    ]
}

/// Voxel grid: dimensions and voxel size, both in (z, y, x) order.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Grid {
    /// Voxels along z, y, x.
    pub dims: [usize; 3],
    /// Voxel size along z, y, x in µm.
    pub spacing: [f32; 3],
}

impl Grid {
    pub fn new(dims: [usize; 3], spacing: [f32; 3]) -> Self {
        Grid { dims, spacing }
    }
    /// Unit spacing.
    pub fn isotropic(dims: [usize; 3]) -> Self {
        Grid { dims, spacing: [1.0; 3] }
    }
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }
    /// Voxel volume in µm³.
    pub fn voxel_volume(&self) -> f64 {
        self.spacing.iter().map(|&s| s as f64).product()
    }
    /// Checks dimensions and spacing; `op` names the caller in the error.
    pub fn validate(&self, op: &str) -> Result<()> {
        if self.dims.contains(&0) {
            return Err(Error::shape(op, format!("empty volume {:?} (z, y, x)", self.dims)));
        }
        if self.dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).is_none_or(|n| n >= u32::MAX as usize) {
            return Err(Error::shape(op, format!("volume {:?} has too many voxels (limit 2^32 - 1)", self.dims)));
        }
        if self.spacing.iter().any(|&s| !(s.is_finite() && s > 0.0)) {
            return Err(Error::shape(op, format!("voxel size {:?} must be finite and positive", self.spacing)));
        }
        Ok(())
    }
    /// Checks that `len` values fit this grid.
    pub fn check_len(&self, op: &str, what: &str, len: usize) -> Result<()> {
        if len != self.numel() {
            return Err(Error::shape(
                op,
                format!("{what} has {len} voxels but the grid {:?} (z, y, x) has {}", self.dims, self.numel()),
            ));
        }
        Ok(())
    }
}

/// Voxel neighbourhood in 3-D.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Connectivity {
    /// Faces only (scikit-image `connectivity=1`; the default of its `watershed`).
    #[default]
    Six,
    /// Faces, edges and corners (scikit-image `connectivity=3`; the default of `measure.label`).
    TwentySix,
}

impl Connectivity {
    /// 6 or 26.
    pub fn count(self) -> u32 {
        match self {
            Connectivity::Six => 6,
            Connectivity::TwentySix => 26,
        }
    }
    /// The neighbour offsets (dz, dy, dx).
    pub fn offsets(self) -> Vec<[i64; 3]> {
        let mut v = Vec::new();
        for dz in -1..=1i64 {
            for dy in -1..=1i64 {
                for dx in -1..=1i64 {
                    let nz = (dz != 0) as u32 + (dy != 0) as u32 + (dx != 0) as u32;
                    if nz == 0 || (self == Connectivity::Six && nz != 1) {
                        continue;
                    }
                    v.push([dz, dy, dx]);
                }
            }
        }
        v
    }

    /// Linear indices of the in-volume neighbours of voxel `i` of a
    /// (z, y, x) volume of `dims`, for the CPU references; `offs` is
    /// [`Connectivity::offsets`] (computed once by the caller).
    pub fn neighbours(offs: &[[i64; 3]], dims: [usize; 3], i: usize) -> impl Iterator<Item = usize> + '_ {
        let [d, h, w] = dims.map(|v| v as i64);
        let i = i as i64;
        let (z, y, x) = (i / (h * w), (i / w) % h, i % w);
        offs.iter().filter_map(move |o| {
            let (nz, ny, nx) = (z + o[0], y + o[1], x + o[2]);
            let inside = (0..d).contains(&nz) && (0..h).contains(&ny) && (0..w).contains(&nx);
            inside.then(|| ((nz * h + ny) * w + nx) as usize)
        })
    }
}

/// Settings of [`qcanet_instances`].
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InstanceOptions {
    /// Neighbourhood of the watershed and of the segmentation's components.
    /// Default [`Connectivity::Six`], scikit-image `watershed`'s default that
    /// the original QCANet used.
    pub connectivity: Connectivity,
    /// Neighbourhood for labelling the detection blobs into markers. Default
    /// [`Connectivity::TwentySix`] (scikit-image `measure.label`'s default),
    /// so a blob touching itself only at an edge stays one marker.
    pub marker_connectivity: Connectivity,
    /// Segmentation components that hold no marker (nuclei cut by the stack's
    /// edge, missed detections) get their own new labels after the marked
    /// ones instead of being dropped. Default false (as the original).
    pub label_unmarked_components: bool,
    /// Exact EDT (default) or jump flooding (faster, approximate; the GPU
    /// relaxation only).
    pub exact_edt: bool,
    /// Which watershed [`instances`] runs. Default [`Watershed::Flood`].
    #[serde(default)]
    pub watershed: Watershed,
    /// Objects smaller than this many µm³ are dropped at the end (0: keep
    /// every object). Default [`MIN_NUCLEUS_UM3`].
    #[serde(default = "default_min_volume")]
    pub min_volume_um3: f64,
}

/// The default floor on an object's volume, in µm³: half the smallest nucleus
/// annotated in BBBC050's training split (Emb01–Emb10: 32 voxels of 0.8 × 0.8
/// × 1.75 µm, 35.8 µm³; 32 of its 1,218 nuclei are such marker-sized balls).
/// An object of volume p matches a nucleus of volume g at IoU at most p / g,
/// so an object under half the smallest nucleus can never be matched at IoU
/// 0.5: it is a speck (a marker on a few stray foreground voxels), not a
/// nucleus. Derived from the training annotations, not chosen on validation
/// volumes. (2026-12-05: networks trained from scratch on lavapipe give 3- to
/// 19-voxel specks at the 2- and 16-cell stages; the bundled pair gives no
/// object under 100 voxels on Emb11.)
pub const MIN_NUCLEUS_UM3: f64 = 18.0;

fn default_min_volume() -> f64 {
    MIN_NUCLEUS_UM3
}

/// Checks a floor on object volume (µm³): a finite number, 0 or more. The one
/// rule `--min-volume`, the training config and the instance stage apply.
pub fn check_min_volume(um3: f64) -> Result<()> {
    if um3.is_finite() && um3 >= 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(format!("minimum object volume {um3} µm³: expected a finite number, 0 or more")))
    }
}

/// Removes the objects of `labels` smaller than `min_um3` µm³ on `grid` and
/// renumbers the rest 1..k in their order (0 stays 0). `min_um3` 0 keeps
/// every object (and still renumbers).
pub fn drop_small_objects(labels: &[u32], grid: &Grid, min_um3: f64) -> Vec<u32> {
    let max = labels.iter().copied().max().unwrap_or(0) as usize;
    let mut count = vec![0u64; max + 1];
    for &l in labels {
        count[l as usize] += 1;
    }
    let v = grid.voxel_volume();
    let small: Vec<bool> = count.iter().map(|&c| c > 0 && (c as f64) * v < min_um3).collect();
    let kept: Vec<u32> = labels.iter().map(|&l| if small[l as usize] { 0 } else { l }).collect();
    compact_labels(&kept)
}

/// The two implementations of the instance stage.
///
/// Both give every voxel the marker whose flood reaches it at the lowest
/// level and differ only where two markers tie on that level (flood
/// plateaus of the distance transform, common where nuclei touch; see
/// [`watershed`]): a nucleus or two per crowded BBBC050 volume.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Watershed {
    /// Priority flood on the CPU ([`reference_instances`]: exact EDT,
    /// scikit-image's tie-break by arrival order). What `calibrate` and
    /// `train --val-partner` score with, so the thresholds, marker dynamic
    /// and checkpoints they choose were chosen for it. Single-threaded:
    /// about 0.2 s at 128³ and 1.2 s at 256³ (touching spheres; lavapipe's
    /// host and an H200's host alike).
    #[default]
    Flood,
    /// The GPU stage ([`qcanet_instances`]: EDT, labelling and an iterative
    /// relaxation watershed on the GPU): 17x faster host to host at 128³ on
    /// an H200, slower than the flood on lavapipe; ties broken by its key.
    Gpu,
}

impl std::str::FromStr for Watershed {
    type Err = Error;
    /// "flood" or "gpu".
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "flood" => Ok(Watershed::Flood),
            "gpu" => Ok(Watershed::Gpu),
            _ => Err(Error::invalid(format!("watershed '{s}': expected flood (CPU, exact) or gpu"))),
        }
    }
}

/// The instance stage as `opts.watershed` says: [`reference_instances`]
/// (flood, CPU) or [`qcanet_instances`] (GPU).
pub fn instances(ctx: &GpuContext, seg: &[u8], det: &[u8], grid: &Grid, opts: &InstanceOptions) -> Result<Vec<u32>> {
    match opts.watershed {
        Watershed::Flood => reference_instances(seg, det, grid, opts),
        Watershed::Gpu => qcanet_instances(ctx, seg, det, grid, opts),
    }
}

impl Default for InstanceOptions {
    fn default() -> Self {
        InstanceOptions {
            connectivity: Connectivity::Six,
            marker_connectivity: Connectivity::TwentySix,
            label_unmarked_components: false,
            exact_edt: true,
            watershed: Watershed::Flood,
            min_volume_um3: MIN_NUCLEUS_UM3,
        }
    }
}

/// A z-major volume in one GPU buffer (u32 or f32 per voxel, as the function
/// that made it says).
#[derive(Clone, Debug)]
pub struct GpuVolume {
    pub buf: Arc<wgpu::Buffer>,
    pub dims: [usize; 3],
}

impl GpuVolume {
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }
}

/// Errors unless a per-voxel array of 4-byte values fits one storage binding.
pub(crate) fn check_fits(ctx: &GpuContext, op: &str, dims: [usize; 3], arrays_per_voxel: usize) -> Result<()> {
    let n: usize = dims.iter().product();
    let bytes = (n * 4 * arrays_per_voxel.max(1)) as u64;
    if bytes > ctx.binding_limit() {
        return Err(Error::shape(
            op,
            format!(
                "volume {dims:?} (z, y, x) needs {bytes} bytes in one storage binding, over this adapter's limit of {} \
                 bytes; crop or downsample the stack (splitting large volumes is not implemented)",
                ctx.binding_limit()
            ),
        ));
    }
    Ok(())
}

/// Uploads a mask as one u32 (0 or 1) per voxel.
pub fn upload_mask(ctx: &GpuContext, mask: &[u8], dims: [usize; 3], op: &str) -> Result<GpuVolume> {
    let v: Vec<u32> = mask.iter().map(|&m| (m != 0) as u32).collect();
    upload_u32(ctx, &v, dims, op)
}

/// Uploads one u32 per voxel.
pub fn upload_u32(ctx: &GpuContext, data: &[u32], dims: [usize; 3], op: &str) -> Result<GpuVolume> {
    check_fits(ctx, op, dims, 1)?;
    let buf = ctx.create_storage((data.len() * 4) as u64, op)?;
    ctx.write_bytes(&buf, 0, bytemuck::cast_slice(data))?;
    Ok(GpuVolume { buf, dims })
}

/// Uploads one f32 per voxel.
pub fn upload_f32(ctx: &GpuContext, data: &[f32], dims: [usize; 3], op: &str) -> Result<GpuVolume> {
    check_fits(ctx, op, dims, 1)?;
    let buf = ctx.create_storage((data.len() * 4) as u64, op)?;
    ctx.write_bytes(&buf, 0, bytemuck::cast_slice(data))?;
    Ok(GpuVolume { buf, dims })
}

/// A new volume of 4-byte values (contents undefined; NaN-filled when the
/// context poisons new tensors).
pub(crate) fn new_volume(ctx: &GpuContext, dims: [usize; 3], extra: usize, what: &str) -> Result<GpuVolume> {
    let n: usize = dims.iter().product::<usize>() + extra;
    let buf = ctx.create_storage((n * 4) as u64, what)?;
    if ctx.poison_new_tensors() {
        ctx.fill(&buf, f32::NAN)?;
    }
    Ok(GpuVolume { buf, dims })
}

/// Dispatches `entry` of `src` over `invocations` threads (workgroup size `wg`).
pub(crate) fn launch(
    ctx: &GpuContext,
    label: &str,
    src: &ShaderSource,
    entry: &str,
    wg: u32,
    args: &[Arg<'_>],
    invocations: usize,
) -> Result<()> {
    let p = ctx.pipeline(src, entry, &[("WG", wg as f64)])?;
    ctx.dispatch(label, &p, args, grid((invocations as u64).div_ceil(wg as u64)))
}

/// The QCANet instance stage: `watershed(-EDT(seg), markers =
/// components(det), mask = seg)`, all on the GPU, one download at the end.
///
/// Any non-zero voxel is foreground in `seg` and `det`. Markers are the
/// components of `det` (with `opts.marker_connectivity`); marker voxels
/// outside `seg` are ignored (as scikit-image does with a mask). The result
/// holds 0 on background and labels 1..n, numbered in order of each marker's
/// lowest linear index; then, with `label_unmarked_components`, the
/// segmentation components without a marker, in order of their lowest index.
/// Without that option, voxels no marker can reach stay 0. Objects smaller
/// than `opts.min_volume_um3` are then dropped and the rest renumbered in
/// the same order ([`drop_small_objects`]).
///
/// Errors: lengths that do not match the grid, an invalid grid, an empty
/// `seg`, a `det` with no voxel inside `seg` (unless
/// `label_unmarked_components`, where every component of `seg` becomes one
/// nucleus).
///
/// Volumes whose per-voxel arrays do not fit in one storage binding of this
/// adapter (on lavapipe, about 256³ voxels) run through
/// [`reference_instances`] on the CPU instead, with a warning: the GPU kernels
/// of this stage do not split volumes across bindings.
/// A `seg` with no background voxel is allowed: its EDT is +inf everywhere
/// and the watershed then splits by geodesic distance to the markers.
pub fn qcanet_instances(
    ctx: &GpuContext,
    seg: &[u8],
    det: &[u8],
    grid: &Grid,
    opts: &InstanceOptions,
) -> Result<Vec<u32>> {
    const OP: &str = "qcanet_instances";
    let has_marker = check_instance_inputs(OP, seg, det, grid, opts)?;
    if let Err(e) = check_fits(ctx, OP, grid.dims, watershed::ARRAYS_PER_VOXEL) {
        log::warn!("{e}; running the instance stage on the CPU instead (exact, slower)");
        return reference_instances(seg, det, grid, opts);
    }
    let gseg = upload_mask(ctx, seg, grid.dims, "qcanet_instances seg")?;
    let mut labels = if has_marker {
        let gdet = upload_mask(ctx, det, grid.dims, "qcanet_instances det")?;
        let (markers, n) = ccl::label_gpu(ctx, &gdet, opts.marker_connectivity)?;
        if n > watershed::MAX_LABEL {
            return Err(Error::invalid(format!(
                "{OP}: {n} markers; the GPU watershed supports at most {}",
                watershed::MAX_LABEL
            )));
        }
        let method = if opts.exact_edt { edt::EdtMethod::Exact } else { edt::EdtMethod::Jfa };
        let dist = edt::edt_gpu(ctx, &gseg, grid, method)?;
        let ws = watershed::watershed_gpu(ctx, &dist, true, &markers, &gseg, opts.connectivity)?;
        ctx.read_u32(&ws.buf, 0, grid.numel())?
    } else {
        vec![0; grid.numel()]
    };
    if opts.label_unmarked_components {
        let (cc, ncc) = ccl::label_gpu(ctx, &gseg, opts.connectivity)?;
        let cc = ctx.read_u32(&cc.buf, 0, grid.numel())?;
        label_unmarked(&mut labels, &cc, ncc);
    }
    Ok(drop_small_objects(&labels, grid, opts.min_volume_um3))
}

/// Grows every label of `labels` into the voxels of `extent` it reaches:
/// a marker watershed of `-EDT(extent)` from the labels, within `extent`
/// and the labelled voxels. Labelled voxels keep their labels, no label is
/// added, and `extent` voxels connected to no label stay 0.
///
/// This is the second threshold of the segmentation (hysteresis): nuclei
/// are split where the NSN is confident (the watershed's mask, `seg` of
/// [`instances`]), then outlined where it is less so (`extent`: the NSN's
/// probability above a lower threshold). Where two grown nuclei meet, the
/// EDT of the wider mask draws the boundary, as the first watershed did.
/// `opts.watershed` picks the implementation, as for [`instances`]; the GPU
/// stage falls back to the CPU for volumes over one binding.
pub fn grow(ctx: &GpuContext, labels: &[u32], extent: &[u8], grid: &Grid, opts: &InstanceOptions) -> Result<Vec<u32>> {
    const OP: &str = "grow";
    grid.validate(OP)?;
    grid.check_len(OP, "labels", labels.len())?;
    grid.check_len(OP, "extent mask", extent.len())?;
    if opts.watershed == Watershed::Flood || check_fits(ctx, OP, grid.dims, watershed::ARRAYS_PER_VOXEL).is_err() {
        return reference_grow(labels, extent, grid, opts.connectivity);
    }
    if let Some(&m) = labels.iter().find(|&&m| m > watershed::MAX_LABEL) {
        return Err(Error::invalid(format!("{OP}: label {m} exceeds the GPU watershed's limit")));
    }
    let mask = grow_mask(labels, extent);
    let gmask = upload_mask(ctx, &mask, grid.dims, "grow mask")?;
    let glab = upload_u32(ctx, labels, grid.dims, "grow labels")?;
    let method = if opts.exact_edt { edt::EdtMethod::Exact } else { edt::EdtMethod::Jfa };
    let dist = edt::edt_gpu(ctx, &gmask, grid, method)?;
    let out = watershed::watershed_gpu(ctx, &dist, true, &glab, &gmask, opts.connectivity)?;
    ctx.read_u32(&out.buf, 0, grid.numel())
}

/// The threshold nuclei split at `threshold` grow to: `extent` when it is
/// below `threshold`, else None (no growth: the outline is the split mask).
/// The one rule the weights' metadata, `infer`, `calibrate` and training's
/// validation apply to an extent threshold.
pub fn growth_extent(threshold: f32, extent: Option<f32>) -> Option<f32> {
    extent.filter(|&e| e < threshold)
}

/// [`grow`] on the CPU: the reference EDT and priority flood.
pub fn reference_grow(labels: &[u32], extent: &[u8], grid: &Grid, conn: Connectivity) -> Result<Vec<u32>> {
    const OP: &str = "reference_grow";
    grid.validate(OP)?;
    grid.check_len(OP, "labels", labels.len())?;
    grid.check_len(OP, "extent mask", extent.len())?;
    let mask = grow_mask(labels, extent);
    let surface: Vec<f32> = edt::reference::edt(&mask, grid).iter().map(|&d| -d).collect();
    Ok(watershed::reference::watershed(&surface, labels, &mask, grid.dims, conn))
}

/// The voxels labels may cover after growing: `extent` and the labelled ones.
fn grow_mask(labels: &[u32], extent: &[u8]) -> Vec<u8> {
    labels.iter().zip(extent).map(|(&l, &e)| u8::from(l != 0 || e != 0)).collect()
}

/// The input checks of the instance stage; returns whether `det` has a
/// voxel inside `seg`.
fn check_instance_inputs(op: &str, seg: &[u8], det: &[u8], grid: &Grid, opts: &InstanceOptions) -> Result<bool> {
    grid.validate(op)?;
    grid.check_len(op, "segmentation mask", seg.len())?;
    grid.check_len(op, "detection mask", det.len())?;
    check_min_volume(opts.min_volume_um3).map_err(|e| Error::invalid(format!("{op}: {e}")))?;
    if !seg.iter().any(|&v| v != 0) {
        return Err(Error::invalid(format!("{op}: the segmentation mask is empty (no foreground voxel)")));
    }
    let has_marker = seg.iter().zip(det).any(|(&s, &d)| s != 0 && d != 0);
    if !has_marker && !opts.label_unmarked_components {
        return Err(Error::invalid(format!(
            "{op}: no markers: the detection mask has no foreground voxel inside the segmentation mask \
             (use label_unmarked_components to label every segmented component instead)"
        )));
    }
    Ok(has_marker)
}

/// Renumbers the labels present to 1..k keeping their order (0 stays 0).
pub fn compact_labels(labels: &[u32]) -> Vec<u32> {
    let max = labels.iter().copied().max().unwrap_or(0) as usize;
    let mut present = vec![false; max + 1];
    for &l in labels {
        present[l as usize] = true;
    }
    let mut map = vec![0u32; max + 1];
    let mut next = 0;
    for (l, m) in map.iter_mut().enumerate().skip(1) {
        if present[l] {
            next += 1;
            *m = next;
        }
    }
    labels.iter().map(|&l| map[l as usize]).collect()
}

/// Gives every component of `cc` (labels 1..=ncc) that holds no labelled
/// voxel in `labels` a new label after the largest one, in component order.
pub fn label_unmarked(labels: &mut [u32], cc: &[u32], ncc: u32) {
    let mut marked = vec![false; ncc as usize + 1];
    for (&l, &c) in labels.iter().zip(cc) {
        if l != 0 {
            marked[c as usize] = true;
        }
    }
    let mut next = labels.iter().copied().max().unwrap_or(0);
    let mut new = vec![0u32; ncc as usize + 1];
    for c in 1..=ncc as usize {
        if !marked[c] {
            next += 1;
            new[c] = next;
        }
    }
    for (l, &c) in labels.iter_mut().zip(cc) {
        if *l == 0 && c != 0 {
            *l = new[c as usize];
        }
    }
}

/// The same stage on the CPU with the reference EDT, labelling and
/// priority-flood watershed (slow; for tests and benchmarks).
/// Same inputs, errors and output as [`qcanet_instances`].
pub fn reference_instances(seg: &[u8], det: &[u8], grid: &Grid, opts: &InstanceOptions) -> Result<Vec<u32>> {
    check_instance_inputs("reference_instances", seg, det, grid, opts)?;
    let (markers, _) = ccl::reference::label(det, grid.dims, opts.marker_connectivity);
    let dist = edt::reference::edt(seg, grid);
    let surface: Vec<f32> = dist.iter().map(|&d| -d).collect();
    let mut labels = watershed::reference::watershed(&surface, &markers, seg, grid.dims, opts.connectivity);
    if opts.label_unmarked_components {
        let (cc, n) = ccl::reference::label(seg, grid.dims, opts.connectivity);
        label_unmarked(&mut labels, &cc, n);
    }
    Ok(drop_small_objects(&labels, grid, opts.min_volume_um3))
}
