//! Volume preprocessing shared by training and inference: intensity
//! normalisation, resampling to the grid a network sees ([`NetGrid`]:
//! its pixel size, z isotropic), mirror padding and cropping. Volumes are z, y, x with x fastest.

use crate::error::{Error, Result};

/// Intensity normalisation of a whole stack.
///
/// - `MinMax`: min → 0, max → 1. Hinges on the single brightest voxel, so
///   brightness does not transfer between stacks (the two example embryos
///   differ 2.5× after it).
/// - `Percentile { low, high }` (percent, e.g. 1.0 and 99.8, the default):
///   the `low` percentile → 0 and the `high` percentile → 1, linear in
///   between, **not clipped** (as in CSBDeep/StarDist: the brightest voxels
///   land a little above 1 and keep their texture). Percentiles use linear
///   interpolation between order statistics (NumPy's default).
///
/// A constant image (high ≤ low) becomes all zeros; no NaN is ever produced
/// from finite input.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Normalization {
    MinMax,
    Percentile { low: f32, high: f32 },
}

impl Default for Normalization {
    /// `Percentile { low: 1.0, high: 99.8 }`.
    fn default() -> Self {
        Normalization::Percentile { low: 1.0, high: 99.8 }
    }
}

impl std::fmt::Display for Normalization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Normalization::MinMax => write!(f, "min-max"),
            Normalization::Percentile { low, high } => write!(f, "percentile {low}..{high}"),
        }
    }
}

impl std::str::FromStr for Normalization {
    type Err = crate::Error;
    /// "minmax" / "min-max", or "percentile" (1..99.8), or "LOW,HIGH" / "LOW..HIGH" in percent.
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "minmax" | "min-max" | "min_max" => return Ok(Normalization::MinMax),
            "percentile" | "default" => return Ok(Normalization::default()),
            _ => {}
        }
        let t = t.strip_prefix("percentile").unwrap_or(&t).trim_matches([' ', ':', '=']);
        let parts: Vec<&str> = t.split([',', ' ']).flat_map(|p| p.split("..")).filter(|p| !p.is_empty()).collect();
        let bad = || {
            crate::Error::invalid(format!(
                "invalid normalisation '{s}': expected 'minmax', 'percentile' or 'LOW,HIGH' percentiles (0 <= LOW < HIGH <= 100)"
            ))
        };
        if parts.len() != 2 {
            return Err(bad());
        }
        let low: f32 = parts[0].parse().map_err(|_| bad())?;
        let high: f32 = parts[1].parse().map_err(|_| bad())?;
        let n = Normalization::Percentile { low, high };
        n.validate().map_err(|_| bad())?;
        Ok(n)
    }
}

impl Normalization {
    /// Percentiles must satisfy 0 <= low < high <= 100.
    pub fn validate(&self) -> std::result::Result<(), String> {
        match *self {
            Normalization::Percentile { low, high }
                if !((0.0..100.0).contains(&low) && low < high && high <= 100.0) =>
            {
                Err(format!("percentiles {low}, {high}: need 0 <= low < high <= 100"))
            }
            _ => Ok(()),
        }
    }
}

/// The `p`-th percentile (0..=100) of `data`, linear interpolation between
/// order statistics (NumPy's default). NaNs are ignored; 0 for empty input.
pub fn percentile(data: &[f32], p: f32) -> f32 {
    let mut v: Vec<f32> = data.iter().copied().filter(|x| !x.is_nan()).collect();
    percentiles_in_place(&mut v, &[p])[0]
}

/// Several percentiles at once, reordering `v` (linear-time selection).
fn percentiles_in_place(v: &mut [f32], ps: &[f32]) -> Vec<f32> {
    let n = v.len();
    if n == 0 {
        return vec![0.0; ps.len()];
    }
    ps.iter()
        .map(|&p| {
            let pos = (p.clamp(0.0, 100.0) as f64 / 100.0) * (n - 1) as f64;
            let i = pos.floor() as usize;
            let frac = pos - i as f64;
            let (_, &mut a, rest) = v.select_nth_unstable_by(i, f32::total_cmp);
            if frac == 0.0 || rest.is_empty() {
                return a;
            }
            // The next order statistic is the smallest of the upper part.
            let b = rest.iter().copied().fold(f32::INFINITY, f32::min);
            (a as f64 + frac * (b as f64 - a as f64)) as f32
        })
        .collect()
}

/// At most this many µm³ of a stack lie above the high anchor of
/// percentile normalisation: 0.2 % (the default 99.8th percentile's share)
/// of 1.25 million µm³, more than any BBBC050 stack
/// holds (crops around one embryo, 0.84–1.11 million µm³). On stacks of
/// that size or smaller the anchor is the percentile itself, as the bundled
/// networks learnt it; a wider field of view, mostly background, would
/// otherwise pull the 99.8th percentile off the nuclei into the background
/// and show the networks nuclei several times brighter than they learnt
/// (weights/HISTORY.md, "A wider field of view").
pub const HIGH_ANCHOR_UM3: f64 = 2500.0;

/// The (low, high) values `normalize` maps to 0 and 1.
pub fn normalization_range(data: &[f32], n: Normalization) -> (f32, f32) {
    range_with_anchor_cap(data, n, None)
}

/// [`normalization_range`] of a stack whose voxels hold `voxel_um3` µm³
/// each: a percentile high anchor is raised, where needed, to the intensity
/// above which the brightest [`HIGH_ANCHOR_UM3`] of the stack lie, so that
/// it stays on the nuclei however much background surrounds them. Unchanged
/// from [`normalization_range`] for stacks of at most
/// `HIGH_ANCHOR_UM3 / (1 − high / 100)` µm³ (1.25 million at 99.8).
pub fn stack_normalization_range(data: &[f32], n: Normalization, voxel_um3: f64) -> (f32, f32) {
    range_with_anchor_cap(data, n, Some(voxel_um3))
}

fn range_with_anchor_cap(data: &[f32], n: Normalization, voxel_um3: Option<f64>) -> (f32, f32) {
    match n {
        Normalization::MinMax => {
            let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
            for &x in data.iter().filter(|x| x.is_finite()) {
                lo = lo.min(x);
                hi = hi.max(x);
            }
            if lo > hi {
                (0.0, 0.0)
            } else {
                (lo, hi)
            }
        }
        Normalization::Percentile { low, high } => {
            let mut v: Vec<f32> = data.iter().copied().filter(|x| x.is_finite()).collect();
            let high = match voxel_um3 {
                Some(u) if u.is_finite() && u > 0.0 && !v.is_empty() => {
                    let capped = 100.0 * (1.0 - HIGH_ANCHOR_UM3 / (v.len() as f64 * u));
                    if capped > high as f64 {
                        capped.min(100.0) as f32
                    } else {
                        high
                    }
                }
                _ => high,
            };
            let r = percentiles_in_place(&mut v, &[low, high]);
            (r[0], r[1])
        }
    }
}

/// Maps `lo` → 0 and `hi` → 1 linearly (no clipping); all zeros when `hi <= lo`.
pub fn normalize_range(data: &mut [f32], lo: f32, hi: f32) {
    let span = hi as f64 - lo as f64;
    if span.is_nan() || span <= 0.0 || !span.is_finite() {
        data.iter_mut().for_each(|x| *x = 0.0);
        return;
    }
    let scale = 1.0 / span;
    for x in data.iter_mut() {
        *x = ((*x as f64 - lo as f64) * scale) as f32;
    }
}

/// Normalises in place (see [`Normalization`]): low → 0, high → 1, not
/// clipped; constant image → zeros, no NaN.
pub fn normalize(data: &mut [f32], n: Normalization) {
    let (lo, hi) = normalization_range(data, n);
    normalize_range(data, lo, hi);
}

/// The share of a stack's voxels above which those holding exactly its
/// lowest value are padding, not image: as many as would pull the default
/// low percentile (1 %) onto them. A registered, rotated or stitched
/// stack's empty corners, or a frame of zeros, are such padding; in no
/// BBBC050 volume does the lowest value hold more than 0.006 % of the voxels
/// (weights/HISTORY.md, "Padding is not background").
pub const PADDING_SHARE: f64 = 0.01;

/// The stack's padding value: its lowest finite value, when more than
/// [`PADDING_SHARE`] of its voxels hold exactly it.
pub fn padding_value(data: &[f32]) -> Option<f32> {
    let min = data.iter().copied().filter(|x| x.is_finite()).fold(f32::INFINITY, f32::min);
    if !min.is_finite() {
        return None;
    }
    let n = data.iter().filter(|&&x| x == min).count();
    (n as f64 > PADDING_SHARE * data.len() as f64).then_some(min)
}

/// Replaces a stack's padding ([`padding_value`]) with the background level
/// of the rest, the low anchor `n` would give it (its low percentile; its
/// minimum under min-max), so the normalisation anchors on the image and
/// shows the padding as background. Returns the padding value and the level
/// it became; `None`, and `data` untouched, for a stack without padding or
/// with nothing else.
pub fn fill_padding(data: &mut [f32], n: Normalization) -> Option<(f32, f32)> {
    let pad = padding_value(data)?;
    fill_padding_of(data, pad, n).map(|level| (pad, level))
}

/// [`fill_padding`] of a padding value already found; the level it became.
fn fill_padding_of(data: &mut [f32], pad: f32, n: Normalization) -> Option<f32> {
    let mut rest: Vec<f32> = data.iter().copied().filter(|&x| x.is_finite() && x != pad).collect();
    if rest.is_empty() {
        return None;
    }
    let level = match n {
        Normalization::MinMax => rest.iter().copied().fold(f32::INFINITY, f32::min),
        Normalization::Percentile { low, .. } => percentiles_in_place(&mut rest, &[low])[0],
    };
    data.iter_mut().filter(|x| **x == pad).for_each(|x| *x = level);
    Some(level)
}

/// A robust estimate of the standard deviation of per-voxel noise in a
/// (z, y, x) volume on its acquisition grid, relative to the range that
/// `normalization` maps to 0..1 (the units the networks see): the median
/// absolute second difference along x (`v[x-1] - 2 v[x] + v[x+1]`) divided
/// by √6 · 0.6745 (for independent Gaussian noise of σ that difference has
/// σ√6, and the median of its absolute value is 0.6745 times that). Second
/// differences cancel intensity ramps, and the edges of nuclei are a
/// minority of voxels, so the median barely sees the image itself. 0 for a
/// volume narrower than three voxels or with an empty range. With the
/// volume of a voxel in µm³, the range is the one the networks see
/// ([`stack_normalization_range`]); padding ([`fill_padding`]) counts in
/// the range as the networks see it and not in the differences.
pub fn noise_sigma(data: &[f32], dims: [usize; 3], normalization: Normalization, voxel_um3: Option<f64>) -> f32 {
    let w = dims[2];
    if w < 3 || data.len() != dims.iter().product::<usize>() {
        return 0.0;
    }
    let pad = padding_value(data);
    let (lo, hi) = match pad {
        Some(p) => {
            let mut filled = data.to_vec();
            fill_padding_of(&mut filled, p, normalization);
            range_with_anchor_cap(&filled, normalization, voxel_um3)
        }
        None => range_with_anchor_cap(data, normalization, voxel_um3),
    };
    let span = hi as f64 - lo as f64;
    if !(span.is_finite() && span > 0.0) {
        return 0.0;
    }
    let mut d: Vec<f32> = data
        .chunks_exact(w)
        .flat_map(|row| row.windows(3).filter(|p| !p.iter().any(|&x| Some(x) == pad)))
        .map(|p| (p[0] - 2.0 * p[1] + p[2]).abs())
        .filter(|v| v.is_finite())
        .collect();
    if d.is_empty() {
        return 0.0;
    }
    let mid = d.len() / 2;
    let (_, m, _) = d.select_nth_unstable_by(mid, f32::total_cmp);
    (*m as f64 / (6f64.sqrt() * 0.674_489_75) / span) as f32
}

/// Interpolation for [`resample`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interp {
    /// Linear between the two nearest voxels along each axis (for intensities).
    Linear,
    /// The nearest voxel (for labels and masks: keeps values exactly).
    Nearest,
}

/// Source coordinate of output voxel `z` along an axis when `d` voxels become `new_d`:
/// voxel centres are aligned (`(z + 0.5) · d / new_d − 0.5`), as in
/// scikit-image's `resize` used by the original QCANet, so the stack keeps
/// its physical extent and each output voxel is `d / new_d` source voxels.
pub fn source_z(z: usize, d: usize, new_d: usize) -> f64 {
    (z as f64 + 0.5) * d as f64 / new_d as f64 - 0.5
}

/// A stack resampled to `new_dims` (z, y, x), one axis after another (z,
/// then y, then x; an axis whose size does not change is left exactly as it
/// is, and a stack already of `new_dims` is returned as it is): trilinear or
/// nearest, voxel centres aligned ([`source_z`] on each axis), edge mode at
/// the borders (linear reproduces any function linear along an axis
/// wherever the source coordinate lies inside the stack; nearest picks the
/// closest source voxel, ties rounding up, so integer labels below 2^24 stay
/// exact).
///
/// Panics if `data.len()` does not match `dims` (a programming error).
pub fn resample(data: Vec<f32>, dims: [usize; 3], new_dims: [usize; 3], interp: Interp) -> Vec<f32> {
    assert_eq!(data.len(), dims.iter().product::<usize>(), "resample: data length does not match dims {dims:?}");
    let (mut data, mut dims) = (data, dims);
    for axis in 0..3 {
        if dims[axis] != new_dims[axis] {
            data = resample_axis(&data, dims, axis, new_dims[axis], interp);
            dims[axis] = new_dims[axis];
        }
    }
    data
}

/// Resampling along one axis (0 z, 1 y, 2 x) to `new_n` voxels.
fn resample_axis(data: &[f32], dims: [usize; 3], axis: usize, new_n: usize, interp: Interp) -> Vec<f32> {
    let n = dims[axis];
    // Runs of `inner` consecutive values, `outer` blocks of `n` runs.
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    if n == 0 || new_n == 0 || outer * inner == 0 {
        return vec![0.0; outer * new_n * inner];
    }
    let mut out = Vec::with_capacity(outer * new_n * inner);
    for o in 0..outer {
        let run = |k: usize| &data[(o * n + k) * inner..(o * n + k + 1) * inner];
        for i in 0..new_n {
            let s = source_z(i, n, new_n).clamp(0.0, (n - 1) as f64);
            match interp {
                Interp::Nearest => out.extend_from_slice(run(((s + 0.5).floor() as usize).min(n - 1))),
                Interp::Linear => {
                    let k0 = s.floor() as usize;
                    let t = s - k0 as f64;
                    if t == 0.0 {
                        out.extend_from_slice(run(k0));
                    } else {
                        let (a, b) = (run(k0), run((k0 + 1).min(n - 1)));
                        out.extend(a.iter().zip(b).map(|(&a, &b)| a + (b - a) * t as f32));
                    }
                }
            }
        }
    }
    out
}

/// The grid a network sees stacks on: voxels of `pixel_um` in x and y (the
/// pixel size of the data it was trained on), and in z too where the network
/// is `isotropic` (else the stack keeps its slices). Training and inference
/// resample every stack to it ([`NetGrid::dims`], [`resample`]), so a
/// network meets nuclei at the size it learnt them whatever the microscope's
/// pixel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetGrid {
    pub pixel_um: f64,
    pub isotropic: bool,
}

/// A stack as a network sees it (training and inference alike): resampled
/// to its `grid` (trilinear; left as it is where the grid is the stack's
/// own), then normalised. Returns the data and its size on the grid; a
/// stack whose grid would exceed [`MAX_GRID_VOXELS`] is refused.
pub fn for_network(
    image: Vec<f32>,
    dims: [usize; 3],
    voxel_um: [f64; 3],
    grid: NetGrid,
    normalization: Normalization,
) -> Result<(Vec<f32>, [usize; 3])> {
    let new_dims = grid.checked_dims(dims, voxel_um)?;
    let mut image = image;
    if let Some((pad, level)) = fill_padding(&mut image, normalization) {
        log::info!(
            "padding found (voxels of exactly {pad}, over 1 % of the stack): shown as the image's background, {level}"
        );
    }
    let mut image = resample(image, dims, new_dims, Interp::Linear);
    let voxel_um3 = grid.voxel_um(dims, voxel_um).iter().product();
    let (lo, hi) = stack_normalization_range(&image, normalization, voxel_um3);
    normalize_range(&mut image, lo, hi);
    Ok((image, new_dims))
}

/// The most voxels a stack may have on a network's grid: 2^31 (8 GiB of
/// f32), hundreds of times a whole embryo at 0.8 µm; a voxel size in nm
/// taken for µm asks for a billion times a stack's voxels.
pub const MAX_GRID_VOXELS: usize = 1 << 31;

/// The pixel sizes a network's grid may have, in µm: light microscopy's,
/// with room on both sides.
pub const PIXEL_UM_RANGE: std::ops::RangeInclusive<f64> = 0.01..=100.0;

/// Refuses a grid pixel size outside [`PIXEL_UM_RANGE`] (or not a number).
pub fn check_pixel_um(p: f64) -> std::result::Result<(), String> {
    if PIXEL_UM_RANGE.contains(&p) {
        Ok(())
    } else {
        Err(format!("pixel size {p} µm is outside {}..{} µm", PIXEL_UM_RANGE.start(), PIXEL_UM_RANGE.end()))
    }
}

/// The pixel size (µm) of the data the bundled networks were trained on
/// (BBBC050 and the QCANet examples), taken for a network whose weights do
/// not record one.
pub const DEFAULT_PIXEL_UM: f64 = 0.8;

impl NetGrid {
    /// [`Self::dims`], refused when the grid would hold more than
    /// [`MAX_GRID_VOXELS`], with a hint at the likely cause.
    pub fn checked_dims(&self, dims: [usize; 3], voxel_um: [f64; 3]) -> Result<[usize; 3]> {
        let nd = self.dims(dims, voxel_um);
        if nd.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).is_none_or(|n| n > MAX_GRID_VOXELS) {
            return Err(Error::invalid(format!(
                "{dims:?} voxels (z, y, x) of {voxel_um:?} µm (x, y, z) would be {nd:?} voxels on the network's \
                 {} µm grid, more than 2^31: is the voxel size in µm (not nm)? Set it with --voxel-size X,Y,Z",
                self.pixel_um
            )));
        }
        Ok(nd)
    }

    /// The size of a stack of `dims` (z, y, x) with voxels of `voxel_um`
    /// (x, y, z µm) on this grid: each resampled axis `round(n · voxel /
    /// pixel_um)`, at least 1 (51 slices of 1.75 µm → 112 at 0.8 µm).
    pub fn dims(&self, dims: [usize; 3], voxel_um: [f64; 3]) -> [usize; 3] {
        let scaled = |n: usize, v: f64| {
            let f = v / self.pixel_um;
            if f.is_finite() && f > 0.0 {
                ((n as f64 * f).round() as usize).max(1)
            } else {
                n.max(1)
            }
        };
        let d = if self.isotropic { scaled(dims[0], voxel_um[2]) } else { dims[0] };
        [d, scaled(dims[1], voxel_um[1]), scaled(dims[2], voxel_um[0])]
    }

    /// The voxel (z, y, x, µm) of a stack of `dims` (z, y, x) with voxels of
    /// `voxel_um` (x, y, z µm) once resampled to this grid ([`Self::dims`]):
    /// the stack's extent over the new number of voxels on each axis, so the
    /// pixel size up to rounding (51 slices of 1.75 µm on 112 → 0.797 µm).
    /// An axis whose voxel is not a size is taken as 1 µm.
    pub fn voxel_um(&self, dims: [usize; 3], voxel_um: [f64; 3]) -> [f64; 3] {
        let nd = self.dims(dims, voxel_um);
        [0, 1, 2].map(|k| {
            let v = voxel_um[2 - k];
            let v = if v.is_finite() && v > 0.0 { v } else { 1.0 };
            v * dims[k] as f64 / nd[k] as f64
        })
    }
}

/// Mirror index: reflect about the edge voxels without repeating them
/// (`d c b | a b c d | c b a`, NumPy "reflect", PyTorch ReflectionPad),
/// periodic so any pad width works. A length-1 axis repeats its voxel.
pub fn reflect_index(i: isize, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m >= n as isize { period - m } else { m }) as usize
}

/// Mirror (reflect) padding of a volume by `before`/`after` voxels per axis
/// (z, y, x); see [`reflect_index`]. Pads may exceed the volume size.
///
/// Panics if `data.len()` does not match `dims` (a programming error).
pub fn pad_reflect<T: Copy>(data: &[T], dims: [usize; 3], before: [usize; 3], after: [usize; 3]) -> Vec<T> {
    let [d, h, w] = dims;
    assert_eq!(data.len(), d * h * w, "pad_reflect: data length does not match dims {dims:?}");
    let nd = [d + before[0] + after[0], h + before[1] + after[1], w + before[2] + after[2]];
    if data.is_empty() {
        assert!(nd.iter().product::<usize>() == 0, "pad_reflect: cannot pad an empty volume");
        return Vec::new();
    }
    let xs: Vec<usize> = (0..nd[2]).map(|x| reflect_index(x as isize - before[2] as isize, w)).collect();
    let mut out = Vec::with_capacity(nd.iter().product());
    for z in 0..nd[0] {
        let sz = reflect_index(z as isize - before[0] as isize, d);
        for y in 0..nd[1] {
            let sy = reflect_index(y as isize - before[1] as isize, h);
            let row = &data[(sz * h + sy) * w..(sz * h + sy + 1) * w];
            out.extend(xs.iter().map(|&x| row[x]));
        }
    }
    out
}

/// The box `start .. start + size` (z, y, x) of a volume.
///
/// Panics if `data.len()` does not match `dims` or the box leaves the volume
/// (programming errors: pad first).
pub fn crop<T: Copy>(data: &[T], dims: [usize; 3], start: [usize; 3], size: [usize; 3]) -> Vec<T> {
    let [d, h, w] = dims;
    assert_eq!(data.len(), d * h * w, "crop: data length does not match dims {dims:?}");
    for a in 0..3 {
        assert!(start[a] + size[a] <= dims[a], "crop: box start {start:?} size {size:?} leaves the volume {dims:?}");
    }
    let mut out = Vec::with_capacity(size.iter().product());
    for z in start[0]..start[0] + size[0] {
        for y in start[1]..start[1] + size[1] {
            let o = (z * h + y) * w + start[2];
            out.extend_from_slice(&data[o..o + size[2]]);
        }
    }
    out
}

/// Writes `src` (dims `size`) into `dst` (dims `dims`) at `start`: the
/// inverse of [`crop`], for stitching tiles. Panics if the box leaves `dst`.
pub fn paste<T: Copy>(dst: &mut [T], dims: [usize; 3], src: &[T], start: [usize; 3], size: [usize; 3]) {
    let [d, h, w] = dims;
    assert_eq!(dst.len(), d * h * w, "paste: destination length does not match dims {dims:?}");
    assert_eq!(src.len(), size.iter().product::<usize>(), "paste: source length does not match size {size:?}");
    for a in 0..3 {
        assert!(start[a] + size[a] <= dims[a], "paste: box start {start:?} size {size:?} leaves {dims:?}");
    }
    let mut i = 0;
    for z in start[0]..start[0] + size[0] {
        for y in start[1]..start[1] + size[1] {
            let o = (z * h + y) * w + start[2];
            dst[o..o + size[2]].copy_from_slice(&src[i..i + size[2]]);
            i += size[2];
        }
    }
}
