//! Sliding-window prediction: a volume too large for one network pass is cut
//! into overlapping tiles, each predicted on its own, and the tiles' outputs are
//! blended with a smooth weight window (a separable sin² ramp, strictly
//! positive), normalised by the sum of weights, so tile seams do not show.
//!
//! Each axis is planned on its own ([`AxisPlan`]):
//! - if the whole axis, rounded up to the network's side multiple, fits in one
//!   tile, the tile is clamped to that size (small stacks cost one pass, and the
//!   result equals a whole-volume prediction);
//! - otherwise tiles are spread evenly over the axis, first at the start, last
//!   at the end, with an actual stride never larger than the requested one. An
//!   optional `margin` pads the axis by reflection on both sides first, so every
//!   real voxel lies at least `margin` inside some tile (MONAI-style tiling is
//!   margin 0: the volume's own border is the only border a tile sees, as in a
//!   whole-volume prediction; a margin costs extra tiles, e.g. 27 instead of 8
//!   for a 112×120×122 volume at 96³/48).
//!
//! The padding is never materialised: tiles read the volume through a
//! reflecting index ([`reflect_index`], numpy's `reflect` mode).

use crate::error::{Error, Result};
use crate::tensor::{CpuTensor, Shape5};

/// Anything that turns a (1, 1, D, H, W) tile of normalised intensities into
/// (1, classes, D, H, W) per-class probabilities. Tile sides given to it are
/// always multiples of [`Predictor::side_multiple`].
pub trait Predictor {
    /// Tile sides must be multiples of this (2^pooling levels for a U-Net).
    fn side_multiple(&self) -> usize;
    /// Number of output channels.
    fn classes(&self) -> usize;
    /// Predicts one tile.
    fn predict_tile(&mut self, tile: &CpuTensor) -> Result<CpuTensor>;
}

/// The element-wise mean of predictions of one tile (mirror images, an
/// ensemble's networks); `what` names them in the error for a shape that
/// differs from the first's, or for none at all.
pub fn mean_of(outputs: impl IntoIterator<Item = Result<CpuTensor>>, what: &str) -> Result<CpuTensor> {
    let mut sum: Option<CpuTensor> = None;
    let mut n = 0usize;
    for y in outputs {
        let y = y?;
        n += 1;
        match &mut sum {
            None => sum = Some(y),
            Some(acc) => {
                if acc.shape != y.shape {
                    return Err(Error::invalid(format!(
                        "{what}: one prediction of a tile is {:?}, another {:?}",
                        acc.shape, y.shape
                    )));
                }
                acc.data.iter_mut().zip(&y.data).for_each(|(a, b)| *a += b);
            }
        }
    }
    let mut mean = sum.ok_or_else(|| Error::invalid(format!("{what}: nothing predicted")))?;
    if n > 1 {
        let k = n as f32;
        mean.data.iter_mut().for_each(|v| *v /= k);
    }
    Ok(mean)
}

/// How one axis of the volume is covered by tiles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AxisPlan {
    /// Length of the axis in the volume.
    pub len: usize,
    /// Tile side along this axis (a multiple of the side multiple).
    pub tile: usize,
    /// Voxels of reflected padding before the volume.
    pub pad_before: usize,
    /// Length of the padded axis (`tile` ≤ `padded`).
    pub padded: usize,
    /// Tile origins in padded coordinates, increasing, first 0, last `padded − tile`.
    pub starts: Vec<usize>,
}

fn round_up(v: usize, m: usize) -> usize {
    v.div_ceil(m) * m
}

impl AxisPlan {
    /// Plans one axis of length `len` for tiles of side `tile` (rounded up
    /// to a multiple of `multiple`, the network's side multiple, so that one
    /// `--tile` serves networks of different depths), at most `stride`
    /// between tile origins and `margin` voxels of reflected context before
    /// and after the volume.
    pub fn new(len: usize, tile: usize, stride: usize, multiple: usize, margin: usize) -> Result<Self> {
        if len == 0 {
            return Err(Error::shape("sliding window", "the volume has an empty axis"));
        }
        if multiple == 0 || tile == 0 {
            return Err(Error::invalid(format!("tile side {tile} and side multiple {multiple} must be positive")));
        }
        if tile % multiple != 0 {
            log::debug!("tile side {tile} rounded up to {}, a multiple of {multiple}", round_up(tile, multiple));
        }
        let tile = round_up(tile, multiple);
        if stride == 0 || stride > tile {
            return Err(Error::invalid(format!("tile stride {stride} must be between 1 and the tile side {tile}")));
        }
        let whole = round_up(len, multiple);
        if whole <= tile {
            return Ok(AxisPlan { len, tile: whole, pad_before: (whole - len) / 2, padded: whole, starts: vec![0] });
        }
        if margin >= tile / 2 {
            return Err(Error::invalid(format!("tile margin {margin} must be less than half the tile side {tile}")));
        }
        let padded = len + 2 * margin;
        let span = padded - tile; // > 0 here since len > tile
        let n = span.div_ceil(stride) + 1;
        let starts = (0..n).map(|i| (i * span + (n - 1) / 2) / (n - 1)).collect();
        Ok(AxisPlan { len, tile, pad_before: margin, padded, starts })
    }
}

/// Tiles covering a (z, y, x) volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TilePlan {
    pub axes: [AxisPlan; 3],
}

impl TilePlan {
    /// `tile` and `stride` per axis (z, y, x); `margin` as in [`AxisPlan::new`].
    pub fn new(dims: [usize; 3], tile: [usize; 3], stride: [usize; 3], multiple: usize, margin: usize) -> Result<Self> {
        Ok(TilePlan {
            axes: [
                AxisPlan::new(dims[0], tile[0], stride[0], multiple, margin)?,
                AxisPlan::new(dims[1], tile[1], stride[1], multiple, margin)?,
                AxisPlan::new(dims[2], tile[2], stride[2], multiple, margin)?,
            ],
        })
    }
    /// Sides of every tile (z, y, x).
    pub fn tile_dims(&self) -> [usize; 3] {
        [self.axes[0].tile, self.axes[1].tile, self.axes[2].tile]
    }
    pub fn n_tiles(&self) -> usize {
        self.axes.iter().map(|a| a.starts.len()).product()
    }
    /// Tile origins in padded coordinates, z slowest.
    pub fn origins(&self) -> Vec<[usize; 3]> {
        let mut v = Vec::with_capacity(self.n_tiles());
        for &z in &self.axes[0].starts {
            for &y in &self.axes[1].starts {
                for &x in &self.axes[2].starts {
                    v.push([z, y, x]);
                }
            }
        }
        v
    }
}

/// The reflecting index tiles read the volume through (numpy `reflect`):
/// one definition, in `preprocess`.
pub use crate::preprocess::reflect_index;

/// The 1-D blending weights of a tile side: `sin²(π (i + ½) / n)`, strictly
/// positive, largest in the middle, small at the tile's edges.
pub fn blend_window(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let s = (std::f64::consts::PI * (i as f64 + 0.5) / n as f64).sin();
            (s * s) as f32
        })
        .collect()
}

/// Extracts the tile at padded origin `o` from `volume` (dims z, y, x), reading
/// the padding by reflection.
pub fn extract_tile(volume: &[f32], dims: [usize; 3], plan: &TilePlan, o: [usize; 3]) -> CpuTensor {
    let [td, th, tw] = plan.tile_dims();
    let mut data = Vec::with_capacity(td * th * tw);
    let xs: Vec<usize> =
        (0..tw).map(|x| reflect_index((o[2] + x) as isize - plan.axes[2].pad_before as isize, dims[2])).collect();
    for z in 0..td {
        let sz = reflect_index((o[0] + z) as isize - plan.axes[0].pad_before as isize, dims[0]);
        for y in 0..th {
            let sy = reflect_index((o[1] + y) as isize - plan.axes[1].pad_before as isize, dims[1]);
            let row = (sz * dims[1] + sy) * dims[2];
            data.extend(xs.iter().map(|&sx| volume[row + sx]));
        }
    }
    CpuTensor::from_vec(Shape5::new(1, 1, td, th, tw), data)
}

#[allow(clippy::needless_range_loop)] // index loops mirror the tile/volume geometry
/// Predicts `volume` (dims z, y, x) tile by tile and blends the outputs:
/// returns (1, classes, z, y, x). `on_tile` is called after each tile (progress).
pub fn predict_sliding(
    predictor: &mut dyn Predictor,
    volume: &[f32],
    dims: [usize; 3],
    plan: &TilePlan,
    on_tile: &mut dyn FnMut(),
) -> Result<CpuTensor> {
    let n = dims[0] * dims[1] * dims[2];
    if volume.len() != n {
        return Err(Error::shape(
            "sliding window",
            format!("volume has {} values, dims {dims:?} need {n}", volume.len()),
        ));
    }
    for (a, p) in plan.axes.iter().enumerate() {
        if p.len != dims[a] {
            return Err(Error::shape(
                "sliding window",
                format!("tile plan is for {} voxels on axis {a}, not {}", p.len, dims[a]),
            ));
        }
    }
    let classes = predictor.classes();
    let [td, th, tw] = plan.tile_dims();
    let (wz, wy, wx) = (blend_window(td), blend_window(th), blend_window(tw));
    let mut acc = vec![0f32; classes * n];
    let mut wsum = vec![0f32; n];
    let pads = [plan.axes[0].pad_before, plan.axes[1].pad_before, plan.axes[2].pad_before];
    for o in plan.origins() {
        let tile = extract_tile(volume, dims, plan, o);
        let out = predictor.predict_tile(&tile)?;
        let want = Shape5::new(1, classes, td, th, tw);
        if out.shape != want || out.data.len() != want.numel() {
            return Err(Error::shape(
                "sliding window",
                format!("predictor returned {} for a tile needing {want}", out.shape),
            ));
        }
        // The part of the tile inside the real volume, per axis: tile-local range and volume offset.
        let range = |a: usize, t: usize| {
            let lo = pads[a].saturating_sub(o[a]).min(t);
            let hi = (pads[a] + dims[a]).saturating_sub(o[a]).min(t);
            (lo, hi)
        };
        let ((z0, z1), (y0, y1), (x0, x1)) = (range(0, td), range(1, th), range(2, tw));
        for z in z0..z1 {
            let vz = o[0] + z - pads[0];
            for y in y0..y1 {
                let vy = o[1] + y - pads[1];
                let wzy = wz[z] * wy[y];
                // x0..x1 are tile-local; the matching volume run starts at o[2] + x0 - pads[2] >= 0.
                let vrow = (vz * dims[1] + vy) * dims[2] + o[2] + x0 - pads[2];
                let trow = (z * th + y) * tw + x0;
                let len = x1 - x0;
                let wxs = &wx[x0..x1];
                for (s, &w) in wsum[vrow..][..len].iter_mut().zip(wxs) {
                    *s += wzy * w;
                }
                for c in 0..classes {
                    let src = &out.data[c * td * th * tw + trow..][..len];
                    let dst = &mut acc[c * n + vrow..][..len];
                    for ((d, &v), &w) in dst.iter_mut().zip(src).zip(wxs) {
                        *d += wzy * w * v;
                    }
                }
            }
        }
        on_tile();
    }
    for c in 0..classes {
        for (a, &w) in acc[c * n..(c + 1) * n].iter_mut().zip(&wsum) {
            *a /= w;
        }
    }
    Ok(CpuTensor::from_vec(Shape5::new(1, classes, dims[0], dims[1], dims[2]), acc))
}

#[allow(clippy::needless_range_loop)]
/// Sum of blending weights every voxel of the volume receives (for tests and
/// diagnostics): strictly positive everywhere when the tiles cover the volume.
pub fn weight_sum(dims: [usize; 3], plan: &TilePlan) -> Vec<f32> {
    // Computed independently of `predict_sliding` (signed indices, per voxel) so tests cross-check it.
    let n = dims[0] * dims[1] * dims[2];
    let [td, th, tw] = plan.tile_dims();
    let (wz, wy, wx) = (blend_window(td), blend_window(th), blend_window(tw));
    let pads = [plan.axes[0].pad_before, plan.axes[1].pad_before, plan.axes[2].pad_before];
    let mut wsum = vec![0f32; n];
    for o in plan.origins() {
        for z in 0..td {
            let vz = (o[0] + z) as isize - pads[0] as isize;
            if vz < 0 || vz >= dims[0] as isize {
                continue;
            }
            for y in 0..th {
                let vy = (o[1] + y) as isize - pads[1] as isize;
                if vy < 0 || vy >= dims[1] as isize {
                    continue;
                }
                for x in 0..tw {
                    let vx = (o[2] + x) as isize - pads[2] as isize;
                    if vx < 0 || vx >= dims[2] as isize {
                        continue;
                    }
                    wsum[(vz as usize * dims[1] + vy as usize) * dims[2] + vx as usize] += wz[z] * wy[y] * wx[x];
                }
            }
        }
    }
    wsum
}
