//! In-memory training volumes, random patches with augmentation, label
//! dilation, and the foreground IoU. Pure CPU, seeded.

use rand::Rng;

use crate::error::{Error, Result};
use crate::postprocess::Connectivity;
use crate::preprocess::reflect_index;

/// A single-channel volume, z-y-x order (x fastest).
#[derive(Clone, Debug, PartialEq)]
pub struct Vol {
    /// (D, H, W) = (z, y, x).
    pub dims: [usize; 3],
    pub data: Vec<f32>,
}

impl Vol {
    pub fn new(dims: [usize; 3], data: Vec<f32>) -> Result<Self> {
        if dims.iter().product::<usize>() != data.len() {
            return Err(Error::invalid(format!(
                "volume {dims:?} needs {} values, got {}",
                dims.iter().product::<usize>(),
                data.len()
            )));
        }
        Ok(Vol { dims, data })
    }
    #[inline]
    pub fn idx(&self, z: usize, y: usize, x: usize) -> usize {
        (z * self.dims[1] + y) * self.dims[2] + x
    }
}

/// One training or validation pair: a normalised image and its target
/// (0/1 foreground, which is also the class index for cross-entropy).
#[derive(Clone, Debug)]
pub struct Sample {
    pub name: String,
    pub image: Vol,
    pub target: Vol,
    /// Per-voxel loss weights of the target's objects (the small-nucleus
    /// map, [`super::small_nuclei`]), cut, flipped and zoomed with it; None:
    /// every voxel weighs 1.
    pub weight: Option<Vol>,
    /// The acquisition's z step in the image's voxels (the factor by which
    /// z was interpolated to isotropic voxels; 1 when it was not): read
    /// noise is drawn on that grid, as a camera adds it before interpolation.
    pub z_step: f32,
}

/// Augmentation settings (all applied per patch, seeded), in the order
/// blur, coarser z step, gamma, depth ramp, offset, noise, gain
/// (brightness): offset and noise are in the normalised units inference
/// sees, whatever the gain. Together they cover what changes between
/// microscopes after percentile normalisation: optics (blur, stronger along
/// z), z step (coarser slices interpolated back), camera gain and reporter
/// brightness (gain, gamma), how the signal fades with depth (depth ramp),
/// background offset left after normalisation (offset) and shot and read
/// noise (noise).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    /// Random flip along each of z, y and x.
    pub flips: bool,
    /// Random intensity scale range (after normalisation); (1, 1) disables.
    pub brightness: [f32; 2],
    /// Random gamma range applied to max(v, 0); (1, 1) disables.
    pub gamma: [f32; 2],
    /// Largest additive offset (normalised units, before the gain): each
    /// patch gets one drawn uniformly from ±offset; 0 disables.
    #[serde(default)]
    pub offset: f32,
    /// Largest standard deviation of added Gaussian noise (normalised units,
    /// before the gain, so relative to the volume's normalised range): each
    /// patch draws its σ uniformly from 0..noise; 0 disables.
    #[serde(default)]
    pub noise: f32,
    /// Largest Gaussian blur σ in y and x (voxels): half the patches are
    /// blurred, σ drawn uniformly from 0..blur; 0 disables.
    #[serde(default)]
    pub blur: f32,
    /// Largest blur σ along z (voxels), drawn on its own: a coarser z step
    /// or a longer point-spread function; 0 disables.
    #[serde(default)]
    pub blur_z: f32,
    /// Largest extra coarseness of the acquisition's z step (a fraction):
    /// half the patches are re-acquired ([`reacquire_z`]) at slices
    /// `z_step · (1..1 + coarser_z)` voxels apart and interpolated back, as
    /// inference interpolates a stack from a microscope with thicker slices
    /// (BBBC050's other microscope: 2.0 µm against 1.75, +14 %), and their
    /// read noise is drawn on that grid; the others keep the sample's own
    /// step. 0 disables (and the noise's grid is then up to a quarter
    /// coarser at random, as before this setting existed).
    #[serde(default)]
    pub coarser_z: f32,
    /// Largest change of scale (a fraction): each patch is cut from a region
    /// `1/f` its size and resampled to the patch ([`extract_zoomed`]), `f`
    /// drawn log-uniformly from `1/(1 + zoom)..1 + zoom`, so nuclei appear
    /// up to that much larger or smaller than in the stack: what a stage's
    /// nucleus sizes, an embryo's and a pixel size off the grid's change.
    /// 0 disables.
    #[serde(default)]
    pub zoom: f32,
    /// Largest change of brightness along z across a patch (a fraction):
    /// each patch's image is multiplied by `exp(g · (z / (D − 1) − ½))`, `g`
    /// drawn uniformly from `±ln(1 + depth_ramp)`, so one end of the patch is
    /// up to `1 + depth_ramp` times as bright as the other, either way. What
    /// the depth of the sample does to the signal (BBBC050's nuclei in the
    /// first fifth of the slices are half as bright above background as in
    /// the fourth), and another microscope does differently. Applied to the
    /// signal (after gamma), before the camera's offset and noise. 0
    /// disables.
    #[serde(default)]
    pub depth_ramp: f32,
}

impl Default for Augment {
    fn default() -> Self {
        Augment {
            flips: true,
            brightness: [0.5, 4.0],
            gamma: [0.7, 1.4],
            offset: 0.1,
            noise: 0.1,
            blur: 1.0,
            blur_z: 1.5,
            coarser_z: 0.3,
            zoom: 0.25,
            depth_ramp: 0.5,
        }
    }
}

impl Augment {
    pub fn none() -> Self {
        Augment {
            flips: false,
            brightness: [1.0, 1.0],
            gamma: [1.0, 1.0],
            offset: 0.0,
            noise: 0.0,
            blur: 0.0,
            blur_z: 0.0,
            coarser_z: 0.0,
            zoom: 0.0,
            depth_ramp: 0.0,
        }
    }

    /// Flips and zoom only: every intensity augmentation off.
    pub fn intensity_off(&self) -> Self {
        Augment { flips: self.flips, zoom: self.zoom, ..Augment::none() }
    }

    /// Whether the gain, gamma, depth ramp, offset or noise moves
    /// intensities (what frozen batch-norm statistics cannot follow; blur
    /// and flips do not).
    pub fn shifts_intensity(&self) -> bool {
        self.brightness != [1.0, 1.0]
            || self.gamma != [1.0, 1.0]
            || self.depth_ramp > 0.0
            || self.offset > 0.0
            || self.noise > 0.0
    }

    /// Checks the ranges (messages name the setting).
    pub fn validate(&self) -> Result<()> {
        let (b, g) = (self.brightness, self.gamma);
        if !(b[0] > 0.0 && b[0] <= b[1] && g[0] > 0.0 && g[0] <= g[1]) {
            return Err(Error::invalid(format!(
                "augment ranges brightness {b:?} gamma {g:?} must be positive, low <= high"
            )));
        }
        for (name, v) in [
            ("offset", self.offset),
            ("noise", self.noise),
            ("blur", self.blur),
            ("blur_z", self.blur_z),
            ("coarser_z", self.coarser_z),
            ("zoom", self.zoom),
            ("depth_ramp", self.depth_ramp),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::invalid(format!("augment {name} {v} must be a finite value >= 0")));
            }
        }
        Ok(())
    }
}

/// A uniform draw from `lo..hi` (`lo` when the range is empty).
fn uniform(rng: &mut impl Rng, lo: f32, hi: f32) -> f32 {
    if lo < hi {
        rng.random_range(lo..hi)
    } else {
        lo
    }
}

/// A normalised 1-D Gaussian kernel of standard deviation `sigma` (voxels),
/// truncated at 3σ; `[1]` for σ below 0.1.
pub fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    if sigma < 0.1 {
        return vec![1.0];
    }
    let r = (3.0 * sigma).ceil() as isize;
    let k: Vec<f64> = (-r..=r).map(|i| (-(i * i) as f64 / (2.0 * (sigma as f64).powi(2))).exp()).collect();
    let s: f64 = k.iter().sum();
    k.iter().map(|v| (v / s) as f32).collect()
}

/// Separable Gaussian blur of a (z, y, x) volume with σ `[sz, sy, sx]`
/// (voxels), reflecting at the edges like [`reflect_index`].
pub fn gaussian_blur(data: &[f32], dims: [usize; 3], sigma: [f32; 3]) -> Vec<f32> {
    let mut cur = data.to_vec();
    let strides = [dims[1] * dims[2], dims[2], 1];
    for axis in 0..3 {
        let k = gaussian_kernel(sigma[axis]);
        if k.len() == 1 {
            continue;
        }
        let r = (k.len() / 2) as isize;
        let (n, st) = (dims[axis], strides[axis]);
        let mut out = vec![0f32; cur.len()];
        for (i, o) in out.iter_mut().enumerate() {
            let pos = (i / st) % n;
            let base = i - pos * st;
            let mut acc = 0f64;
            for (j, &w) in k.iter().enumerate() {
                let q = reflect_index(pos as isize + j as isize - r, n);
                acc += w as f64 * cur[base + q * st] as f64;
            }
            *o = acc as f32;
        }
        cur = out;
    }
    cur
}

/// Samples a patch of `patch` (D, H, W) at a random position (reflecting
/// where the volume is smaller than the patch), at a random scale, with
/// random flips and intensity augmentation of the image. Returns (image,
/// target) values.
pub fn random_patch(s: &Sample, patch: [usize; 3], aug: &Augment, rng: &mut impl Rng) -> (Vec<f32>, Vec<f32>) {
    let p = random_patch_near(s, None, patch, aug, rng);
    (p.image, p.target)
}

/// A training patch: the augmented image, its target and, where the
/// sample has them, the target's object weights ([`Sample::weight`]).
#[derive(Clone, Debug)]
pub struct Patch {
    pub image: Vec<f32>,
    pub target: Vec<f32>,
    pub weight: Option<Vec<f32>>,
}

/// [`random_patch`], centred on voxel `centre` (z, y, x) of the sample
/// when one is given: the region the patch is cut from holds it, moved off
/// the patch's centre by up to a quarter of the region at random
/// ([`super::objects::centred_origin`]). Without a centre it draws the
/// same random numbers as before centring existed.
pub fn random_patch_near(
    s: &Sample,
    centre: Option<[usize; 3]>,
    patch: [usize; 3],
    aug: &Augment,
    rng: &mut impl Rng,
) -> Patch {
    // Scale: nuclei `f` times their size in the stack (a region 1/f the
    // patch's, resampled to it); the acquisition's z step scales with them.
    let f = if aug.zoom > 0.0 {
        let l = (1.0 + aug.zoom).ln();
        uniform(rng, -l, l).exp()
    } else {
        1.0
    };
    let region = patch.map(|p| ((p as f32 / f).round() as usize).max(1));
    let z_step = s.z_step * f;
    let mut origin = [0isize; 3];
    let mut flip = [false; 3];
    for a in 0..3 {
        let n = s.image.dims[a] as i64;
        let p = region[a] as i64;
        origin[a] = match centre {
            Some(c) => super::objects::centred_origin(c[a], region[a], s.image.dims[a], rng),
            None => (if n >= p { rng.random_range(0..=n - p) } else { rng.random_range(n - p..=0) }) as isize,
        };
        flip[a] = aug.flips && rng.random_bool(0.5);
    }
    let scale = uniform(rng, aug.brightness[0], aug.brightness[1]);
    let gamma = uniform(rng, aug.gamma[0], aug.gamma[1]);
    let (mut img, tgt) = extract_zoomed(s, origin, region, patch, flip);
    let weight = s.weight.as_ref().map(|w| {
        crate::preprocess::resample(gather(w, origin, region, flip), region, patch, crate::preprocess::Interp::Nearest)
    });
    if (aug.blur > 0.0 || aug.blur_z > 0.0) && rng.random_bool(0.5) {
        let sxy = uniform(rng, 0.0, aug.blur);
        let sz = uniform(rng, 0.0, aug.blur_z);
        img = gaussian_blur(&img, patch, [sz, sxy, sxy]);
    }
    // A coarser acquisition (after the optics' blur, before the camera's
    // noise): the acquisition grid's step, in voxels, for the read noise.
    let mut acquired_step = None;
    if aug.coarser_z > 0.0 {
        let step = z_step.max(1.0);
        acquired_step = Some(step);
        if rng.random_bool(0.5) {
            let coarse = step * uniform(rng, 1.0, 1.0 + aug.coarser_z);
            let phase = uniform(rng, 0.0, coarse.min((patch[0] - 1) as f32));
            img = reacquire_z(&img, patch, coarse, phase);
            acquired_step = Some(coarse);
        }
    }
    if gamma != 1.0 {
        img.iter_mut().for_each(|v| *v = v.max(0.0).powf(gamma));
    }
    if aug.depth_ramp > 0.0 {
        let l = (1.0 + aug.depth_ramp).ln();
        depth_ramp(&mut img, patch, uniform(rng, -l, l));
    }
    // Offset and noise in the volume's normalised units, before the gain:
    // inference normalises every volume, so what a network meets is noise
    // relative to the normalised range, whatever the camera's gain. (Added
    // after a gain of up to 4, σ 0.1 was mostly a few per cent of the
    // range, and a simulated noisier microscope broke the crowded stages.)
    let offset = uniform(rng, -aug.offset, aug.offset);
    let sigma = uniform(rng, 0.0, aug.noise);
    if offset != 0.0 {
        img.iter_mut().for_each(|v| *v += offset);
    }
    if sigma > 0.0 {
        // The z step of the noise: the acquisition's above, or (without
        // `coarser_z`) the sample's own up to a quarter coarser.
        let step = match acquired_step {
            Some(step) => step,
            None => z_step.max(1.0) * uniform(rng, 1.0, 1.25),
        };
        let noise = acquisition_noise(patch, sigma, step, rng);
        img.iter_mut().zip(&noise).for_each(|(v, n)| *v += n);
    }
    if scale != 1.0 {
        img.iter_mut().for_each(|v| *v *= scale);
    }
    Patch { image: img, target: tgt, weight }
}

/// Multiplies slice `z` of a (D, H, W) patch by `exp(g · (z / (D − 1) − ½))`:
/// brightness changing smoothly with depth, by a factor `exp(g)` from the
/// first slice to the last, unchanged at the middle.
pub fn depth_ramp(img: &mut [f32], patch: [usize; 3], g: f32) {
    let plane = patch[1] * patch[2];
    let span = patch[0].saturating_sub(1).max(1) as f32;
    for (z, slice) in img.chunks_mut(plane).enumerate() {
        let m = (g * (z as f32 / span - 0.5)).exp();
        slice.iter_mut().for_each(|v| *v *= m);
    }
}

/// Gaussian read noise of standard deviation `sigma` for a (D, H, W) patch
/// whose z was interpolated from slices `z_step` voxels apart: independent
/// draws on those slices (at a random phase), linearly interpolated along z
/// as [`crate::preprocess::resample`] interpolates the image. What a
/// network meets after isotropic interpolation is noise correlated along z
/// over about `z_step` voxels, whose variance dips between slices; noise
/// drawn independently per isotropic voxel looks unlike it. `z_step` 1:
/// independent per voxel.
pub fn acquisition_noise(patch: [usize; 3], sigma: f32, z_step: f32, rng: &mut impl Rng) -> Vec<f32> {
    let [d, h, w] = patch;
    let plane = h * w;
    let normal = rand_distr::Normal::new(0.0f32, sigma).expect("finite sigma");
    if z_step <= 1.0 {
        return (0..d * plane).map(|_| rng.sample(normal)).collect();
    }
    let phase = uniform(rng, 0.0, 1.0);
    let last = ((d.saturating_sub(1)) as f32 / z_step + phase).floor() as usize + 1;
    let coarse: Vec<f32> = (0..(last + 1) * plane).map(|_| rng.sample(normal)).collect();
    let mut out = vec![0f32; d * plane];
    for z in 0..d {
        let c = z as f32 / z_step + phase;
        let k = c.floor() as usize;
        let t = c - k as f32;
        let (a, b) = (&coarse[k * plane..(k + 1) * plane], &coarse[(k + 1) * plane..(k + 2) * plane]);
        for ((o, &x0), &x1) in out[z * plane..(z + 1) * plane].iter_mut().zip(a).zip(b) {
            *o = (1.0 - t) * x0 + t * x1;
        }
    }
    out
}

/// A (D, H, W) image as if acquired with slices `step` voxels apart (the
/// first at z = `phase`, in `0..D`) and linearly interpolated back to its
/// voxels, as [`crate::preprocess::resample`] interpolates a stack: the
/// slices are sampled linearly from the image, and voxels before the first
/// slice or after the last take that slice (edge mode, as `resample`
/// clamps). A function linear in z is kept exactly between the first and
/// the last slice; every value stays within its column's range. `step` ≤ 1
/// (no coarser than the voxels) returns the image.
pub fn reacquire_z(img: &[f32], dims: [usize; 3], step: f32, phase: f32) -> Vec<f32> {
    let [d, h, w] = dims;
    let plane = h * w;
    assert_eq!(img.len(), d * plane, "reacquire_z: image length does not match dims {dims:?}");
    if step <= 1.0 || d < 2 {
        return img.to_vec();
    }
    let top = (d - 1) as f64;
    let (step, phase) = (step as f64, (phase as f64).clamp(0.0, top));
    let n = ((top - phase) / step).floor() as usize + 1; // slices inside the image
    let mut slices = vec![0f32; n * plane];
    for (k, s) in slices.chunks_exact_mut(plane).enumerate() {
        plane_at(img, plane, phase + k as f64 * step, s);
    }
    let mut out = vec![0f32; d * plane];
    for (z, o) in out.chunks_exact_mut(plane).enumerate() {
        plane_at(&slices, plane, ((z as f64 - phase) / step).clamp(0.0, (n - 1) as f64), o);
    }
    out
}

/// The plane at z = `u` (in `0..=len-1`, fractional) of a stack of planes
/// of `plane` values, linear between the two nearest, into `out`.
fn plane_at(stack: &[f32], plane: usize, u: f64, out: &mut [f32]) {
    let len = stack.len() / plane;
    let k0 = (u.floor() as usize).min(len - 1);
    let k1 = (k0 + 1).min(len - 1);
    let t = (u - k0 as f64) as f32;
    let (a, b) = (&stack[k0 * plane..(k0 + 1) * plane], &stack[k1 * plane..(k1 + 1) * plane]);
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = a + (b - a) * t;
    }
}

/// [`extract`] of a `region` (D, H, W) resampled to `patch`: the image
/// trilinear, the target nearest (it stays 0/1), as
/// [`crate::preprocess::resample`] does (voxel centres aligned, so flipping
/// before or after is the same).
pub fn extract_zoomed(
    s: &Sample,
    origin: [isize; 3],
    region: [usize; 3],
    patch: [usize; 3],
    flip: [bool; 3],
) -> (Vec<f32>, Vec<f32>) {
    use crate::preprocess::{resample, Interp};
    let (img, tgt) = extract(s, origin, region, flip);
    (resample(img, region, patch, Interp::Linear), resample(tgt, region, patch, Interp::Nearest))
}

/// The patch at `origin` (may be negative or run past the end: reflected),
/// optionally flipped per axis.
pub fn extract(s: &Sample, origin: [isize; 3], patch: [usize; 3], flip: [bool; 3]) -> (Vec<f32>, Vec<f32>) {
    (gather(&s.image, origin, patch, flip), gather(&s.target, origin, patch, flip))
}

/// The values of `v` in the patch at `origin`, as [`extract`] cuts it.
pub fn gather(v: &Vol, origin: [isize; 3], patch: [usize; 3], flip: [bool; 3]) -> Vec<f32> {
    let [d, h, w] = v.dims;
    let mut out = Vec::with_capacity(patch.iter().product());
    let src = |a: usize, i: usize, len: usize| -> usize {
        let i = if flip[a] { patch[a] - 1 - i } else { i };
        reflect_index(origin[a] + i as isize, len)
    };
    for z in 0..patch[0] {
        let sz = src(0, z, d);
        for y in 0..patch[1] {
            let sy = src(1, y, h);
            for x in 0..patch[2] {
                out.push(v.data[(sz * h + sy) * w + src(2, x, w)]);
            }
        }
    }
    out
}

/// Dilation of a 0/1 volume by a ball of `radius` voxels that never joins
/// two objects (26-connected components, e.g. the nucleus-centre markers of
/// the NDN's ground truth): each voxel within `radius` of an object goes to
/// the nearest one (ties to the lower-numbered), and of two touching voxels
/// (26-neighbours) of different objects the farther from its own object is
/// cleared (ties: the higher-numbered), so every object keeps its voxels,
/// grows by up to `radius`, and never touches another (the tests check that
/// the number of objects stays the same). A plain dilation joins the markers of neighbouring nuclei at the
/// crowded stages (BBBC050 Emb01-Emb10, t301-t501: radius 2 joins 15 of
/// the markers, radius 4 joins 88), and a network trained on joined markers
/// learns to give two nuclei one.
pub fn dilate(v: &Vol, radius: usize) -> Vol {
    dilate_in(v, radius, None)
}

/// [`dilate`], where no object grows into another nucleus: `nuclei` (the
/// instance labels on the same grid, 0 for background) names each voxel's
/// nucleus, an object's own nucleus is the label most of its voxels lie in
/// (0 when none), and an object grows only into background and its own
/// nucleus. Its own voxels stay whatever lies under them. The markers of
/// small nuclei need it: dilated by 3 voxels on the 0.8 µm grid, a fifth of
/// the target of a nucleus under 300 voxels (of the stack) lies in its
/// neighbours (BBBC050 Emb01-Emb10, t401-t501: 93 markers, over a quarter
/// in 33; 2 % for larger nuclei; `tools/marker_spill.py`), so the network
/// learns to answer a small nucleus with a blob over the large one beside
/// it.
pub fn dilate_within(v: &Vol, radius: usize, nuclei: &[u32]) -> Result<Vol> {
    if nuclei.len() != v.data.len() {
        return Err(Error::invalid(format!(
            "instance labels hold {} voxels, the markers {:?} need {}",
            nuclei.len(),
            v.dims,
            v.data.len()
        )));
    }
    Ok(dilate_in(v, radius, Some(nuclei)))
}

fn dilate_in(v: &Vol, radius: usize, nuclei: Option<&[u32]>) -> Vol {
    if radius == 0 {
        return v.clone();
    }
    let dims = v.dims;
    let [d, h, w] = dims;
    let mask: Vec<u8> = v.data.iter().map(|&x| (x > 0.5) as u8).collect();
    let (objects, count) = crate::postprocess::ccl::reference::label(&mask, dims, Connectivity::TwentySix);
    // Each object's own nucleus: the most common label under its voxels.
    let own: Vec<u32> = match nuclei {
        None => Vec::new(),
        Some(n) => {
            let mut votes: Vec<std::collections::HashMap<u32, usize>> = vec![Default::default(); count as usize + 1];
            for (i, &id) in objects.iter().enumerate() {
                if id != 0 && n[i] != 0 {
                    *votes[id as usize].entry(n[i]).or_default() += 1;
                }
            }
            votes
                .iter()
                .map(|m| m.iter().max_by_key(|(l, c)| (**c, std::cmp::Reverse(**l))).map_or(0, |(l, _)| *l))
                .collect()
        }
    };
    let r = radius as isize;
    let mut ball = Vec::new();
    for dz in -r..=r {
        for dy in -r..=r {
            for dx in -r..=r {
                let d2 = dz * dz + dy * dy + dx * dx;
                if d2 <= r * r {
                    ball.push((dz, dy, dx, d2 as u32));
                }
            }
        }
    }
    // Nearest object (squared distance, object number) of every voxel in
    // reach (its own voxels at distance 0; others only where it may grow).
    let mut near = vec![(u32::MAX, 0u32); mask.len()];
    for z in 0..d {
        for y in 0..h {
            for x in 0..w {
                let id = objects[(z * h + y) * w + x];
                if id == 0 {
                    continue;
                }
                for &(dz, dy, dx, d2) in &ball {
                    let (zz, yy, xx) = (z as isize + dz, y as isize + dy, x as isize + dx);
                    if zz >= 0 && yy >= 0 && xx >= 0 && (zz as usize) < d && (yy as usize) < h && (xx as usize) < w {
                        let j = (zz as usize * h + yy as usize) * w + xx as usize;
                        let allowed = objects[j] == id || nuclei.is_none_or(|n| n[j] == 0 || n[j] == own[id as usize]);
                        if allowed {
                            near[j] = near[j].min((d2, id));
                        }
                    }
                }
            }
        }
    }
    let offs = Connectivity::TwentySix.offsets();
    let data = (0..mask.len())
        .map(|i| {
            let me = near[i];
            let kept = me.1 != 0
                && Connectivity::neighbours(&offs, dims, i).all(|j| {
                    let other = near[j];
                    other.1 == 0 || other.1 == me.1 || other > me
                });
            if kept {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    Vol { dims, data }
}

/// Foreground IoU of `prob > threshold` against `target > 0.5`; 1 when both
/// are empty.
pub fn foreground_iou(prob: &[f32], target: &[f32], threshold: f32) -> f64 {
    let (mut inter, mut union) = (0u64, 0u64);
    for (&p, &t) in prob.iter().zip(target) {
        let a = p > threshold;
        let b = t > 0.5;
        inter += (a && b) as u64;
        union += (a || b) as u64;
    }
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}
