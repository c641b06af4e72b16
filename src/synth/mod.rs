//! Synthetic embryo generator: nuclei, ground truth, optics and camera noise,
//! for training data, tests and benchmarks.
//!
//! The physics, in order (all lengths in µm, voxel centres on the stack's
//! anisotropic grid):
//! 1. **Placement.** `nuclei` ellipsoids with random orientation and axis
//!    jitter, mean semi-axis shrinking with the stage (fewer, larger nuclei
//!    early: 10.6 µm at 2 cells, 8 µm at 8, 5.6 µm at 64) and stretched along
//!    z as annotated nuclei appear under an axially smeared PSF. Centres lie
//!    inside an embryo-sized sphere (biased to an outer shell from 32 nuclei
//!    on, like the trophectoderm); a fraction is placed in contact with an
//!    earlier nucleus, like sister nuclei after division, so touching
//!    neighbours (the hard case) are common. A few are "mitotic": smaller,
//!    flattened and about 2.5× brighter (condensed chromatin).
//! 2. **Ground truth.** Each voxel inside several ellipsoids goes to the one
//!    it is deepest in, and where two nuclei touch a one-voxel gap is left
//!    (26-neighbourhood), as in the example annotations; `labels` are
//!    1..=n, `nsn` is 255 on every label, `ndn` a small ellipsoidal blob
//!    (about 30 voxels at 0.8 × 0.8 × 1.75 µm) at each nucleus's centroid,
//!    kept inside its own nucleus so blobs never merge.
//! 3. **Fluorescence.** Per-nucleus brightness (log-normal), smooth internal
//!    texture, dark nucleolus precursor bodies, faint cytoplasmic
//!    autofluorescence inside the embryo; blurred by an anisotropic Gaussian
//!    PSF (wider in z); a random per-stack intensity scale.
//! 4. **Camera.** Background photons, Poisson shot noise, gain, Gaussian read
//!    noise and offset, rounded to uint16. Defaults give values like the
//!    example stacks (background ≈ 104 ± 10 ADU, nuclei a few hundred ADU,
//!    bright mitotic nuclei above 1000).
//!
//! Everything is seeded: the same config and seed give the same embryo.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal, Poisson};

use crate::error::{Error, Result};
use crate::io::{self, Volume};

/// Generator settings. `Default` is shaped like the example embryos
/// (51 × 120 × 122 voxels of 0.8 × 0.8 × 1.75 µm, 16 nuclei).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SynthConfig {
    /// z, y, x of the anisotropic stack.
    pub dims: [usize; 3],
    /// x, y, z voxel size in µm.
    pub voxel_um: [f64; 3],
    /// Number of nuclei for [`generate`] (2..=64).
    pub nuclei: usize,
    /// Inclusive range of nuclei per stack for [`write_dataset`] (log-uniform);
    /// `None` uses `nuclei` for every stack.
    pub nuclei_range: Option<[usize; 2]>,
    /// Mean semi-axis of a nucleus in µm; `None`: by stage, 8 · (8 / n)^0.17.
    pub nucleus_radius_um: Option<f64>,
    /// Relative s.d. of each semi-axis (shape and size variation).
    pub radius_jitter: f64,
    /// Apparent elongation of nuclei along z (annotations follow the axially smeared signal).
    pub z_stretch: f64,
    /// Embryo radius in µm; `None`: 0.85 × half the smallest field extent, at most 42 µm.
    pub embryo_radius_um: Option<f64>,
    /// Fraction of nuclei placed in contact with an earlier one.
    pub touch_fraction: f64,
    /// Fraction of nuclei that are mitotic (smaller, flattened, brighter).
    pub mitotic_fraction: f64,
    /// Gaussian PSF s.d. in µm (x, y, z).
    pub psf_sigma_um: [f64; 3],
    /// Mean nucleus signal in photons per voxel (before blur).
    pub nucleus_photons: f64,
    /// s.d. of log brightness between nuclei.
    pub brightness_sigma: f64,
    /// Relative amplitude of smooth internal texture.
    pub texture: f64,
    /// Cytoplasmic autofluorescence inside the embryo, photons per voxel.
    pub embryo_photons: f64,
    /// Background photons per voxel everywhere.
    pub background_photons: f64,
    /// Camera gain, ADU per photon.
    pub gain_adu: f64,
    /// Camera read noise s.d., ADU.
    pub read_noise_adu: f64,
    /// Camera offset, ADU.
    pub offset_adu: f64,
    /// Per-stack global signal scale drawn log-uniformly from this range
    /// (real stacks differ 2.5× in brightness); `[1, 1]` turns it off.
    pub intensity_scale: [f64; 2],
    /// Radius of the NDN detection blob in µm (x, y, z).
    pub ndn_radius_um: [f64; 3],
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            dims: [51, 120, 122],
            voxel_um: [0.8, 0.8, 1.75],
            nuclei: 16,
            nuclei_range: None,
            nucleus_radius_um: None,
            radius_jitter: 0.12,
            z_stretch: 1.6,
            embryo_radius_um: None,
            touch_fraction: 0.25,
            mitotic_fraction: 0.08,
            psf_sigma_um: [0.7, 0.7, 2.4],
            nucleus_photons: 45.0,
            brightness_sigma: 0.3,
            texture: 0.25,
            embryo_photons: 1.5,
            background_photons: 0.7,
            gain_adu: 8.0,
            read_noise_adu: 3.0,
            offset_adu: 99.0,
            intensity_scale: [0.6, 1.8],
            ndn_radius_um: [1.6, 1.6, 2.6],
        }
    }
}

impl SynthConfig {
    /// Checks every setting, with a message naming the bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(format!("synth config: {m}")));
        if self.dims.iter().any(|&d| d < 4) {
            return bad(format!("dims {:?} (z,y,x) must each be at least 4", self.dims));
        }
        if self.dims.iter().product::<usize>() > 1 << 30 {
            return bad(format!("dims {:?} are too large", self.dims));
        }
        if !self.voxel_um.iter().all(|v| v.is_finite() && *v > 0.0) {
            return bad(format!("voxel size {:?} must be positive", self.voxel_um));
        }
        let range = self.nuclei_range.unwrap_or([self.nuclei, self.nuclei]);
        if !(2..=64).contains(&self.nuclei) || range[0] < 2 || range[1] > 64 || range[0] > range[1] {
            return bad(format!("nuclei {} / range {:?} must lie in 2..=64", self.nuclei, self.nuclei_range));
        }
        let nonneg = [
            ("radius_jitter", self.radius_jitter),
            ("touch_fraction", self.touch_fraction),
            ("mitotic_fraction", self.mitotic_fraction),
            ("brightness_sigma", self.brightness_sigma),
            ("texture", self.texture),
            ("embryo_photons", self.embryo_photons),
            ("background_photons", self.background_photons),
            ("read_noise_adu", self.read_noise_adu),
            ("offset_adu", self.offset_adu),
        ];
        for (n, v) in nonneg {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("{n} = {v} must be finite and >= 0"));
            }
        }
        if self.touch_fraction > 1.0 || self.mitotic_fraction > 1.0 {
            return bad("touch_fraction and mitotic_fraction must be <= 1".into());
        }
        let pos = [
            ("z_stretch", self.z_stretch),
            ("nucleus_photons", self.nucleus_photons),
            ("gain_adu", self.gain_adu),
            ("intensity_scale[0]", self.intensity_scale[0]),
            ("intensity_scale[1]", self.intensity_scale[1]),
            ("nucleus_radius_um", self.nucleus_radius_um.unwrap_or(1.0)),
            ("embryo_radius_um", self.embryo_radius_um.unwrap_or(1.0)),
        ];
        for (n, v) in pos {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("{n} = {v} must be positive"));
            }
        }
        if self.intensity_scale[0] > self.intensity_scale[1] {
            return bad(format!("intensity_scale {:?} must be [low, high]", self.intensity_scale));
        }
        if !self.psf_sigma_um.iter().chain(&self.ndn_radius_um).all(|v| v.is_finite() && *v >= 0.0) {
            return bad("psf_sigma_um and ndn_radius_um must be >= 0".into());
        }
        Ok(())
    }

    /// Mean nucleus semi-axis (µm) for `n` nuclei.
    pub fn radius_for(&self, n: usize) -> f64 {
        self.nucleus_radius_um.unwrap_or(8.0 * (8.0 / n.max(1) as f64).powf(0.17))
    }

    fn extent_um(&self) -> [f64; 3] {
        // x, y, z physical extents
        [
            self.dims[2] as f64 * self.voxel_um[0],
            self.dims[1] as f64 * self.voxel_um[1],
            self.dims[0] as f64 * self.voxel_um[2],
        ]
    }

    fn embryo_radius(&self) -> f64 {
        let e = self.extent_um();
        self.embryo_radius_um.unwrap_or((0.85 * e[0].min(e[1]).min(e[2]) / 2.0).min(42.0))
    }
}

/// One synthetic stack with its ground truth (all z, y, x like `raw.dims`).
#[derive(Clone, Debug)]
pub struct SynthEmbryo {
    /// uint16-valued fluorescence (stored as f32), with the voxel size.
    pub raw: Volume,
    /// Segmentation ground truth: 0 background, 255 nucleus.
    pub nsn: Vec<u8>,
    /// Detection ground truth: 0, or 255 in a small blob at each nucleus centre.
    pub ndn: Vec<u8>,
    /// Instance labels 1..=nuclei, 0 background.
    pub labels: Vec<u32>,
    /// Number of nuclei (= the largest label; every label occurs).
    pub nuclei: usize,
}

/// A placed nucleus: centre (µm, x y z from the stack centre) and the
/// quadratic form `M` with `pᵀ M p <= 1` inside.
struct Nucleus {
    c: [f64; 3],
    m: [[f64; 3]; 3],
    /// Bounding half-extent along x, y, z (µm).
    half: [f64; 3],
    photons: f64,
    /// Nucleolus precursor bodies: centre offset (µm) and radius.
    npb: Vec<([f64; 3], f64)>,
}

impl Nucleus {
    fn q(&self, p: [f64; 3]) -> f64 {
        let m = &self.m;
        let mut s = 0.0;
        for i in 0..3 {
            for j in 0..3 {
                s += p[i] * m[i][j] * p[j];
            }
        }
        s
    }
    /// Distance from the centre to the surface along unit vector `u`.
    fn radius_along(&self, u: [f64; 3]) -> f64 {
        1.0 / self.q(u).sqrt()
    }
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
fn norm(a: [f64; 3]) -> f64 {
    (a[0] * a[0] + a[1] * a[1] + a[2] * a[2]).sqrt()
}
fn unit_vector(r: &mut impl Rng) -> [f64; 3] {
    let n = Normal::new(0.0, 1.0).unwrap();
    loop {
        let v = [n.sample(r), n.sample(r), n.sample(r)];
        let l = norm(v);
        if l > 1e-9 {
            return [v[0] / l, v[1] / l, v[2] / l];
        }
    }
}

/// Uniformly random rotation matrix (from a random unit quaternion).
fn random_rotation(r: &mut impl Rng) -> [[f64; 3]; 3] {
    let n = Normal::new(0.0, 1.0).unwrap();
    let mut q = [n.sample(r), n.sample(r), n.sample(r), n.sample(r)];
    let l = (q.iter().map(|x| x * x).sum::<f64>()).sqrt().max(1e-12);
    q.iter_mut().for_each(|x| *x /= l);
    let [w, x, y, z] = q;
    [
        [1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - w * z), 2.0 * (x * z + w * y)],
        [2.0 * (x * y + w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - w * x)],
        [2.0 * (x * z - w * y), 2.0 * (y * z + w * x), 1.0 - 2.0 * (x * x + y * y)],
    ]
}

/// Quadratic form of an ellipsoid with semi-axes `ax` rotated by `rot`,
/// then stretched along z by `zs`: M = S⁻¹ R diag(1/a²) Rᵀ S⁻¹.
fn ellipsoid_form(ax: [f64; 3], rot: [[f64; 3]; 3], zs: f64) -> ([[f64; 3]; 3], [f64; 3]) {
    let mut m = [[0.0; 3]; 3];
    let s = [1.0, 1.0, 1.0 / zs];
    for i in 0..3 {
        for j in 0..3 {
            let mut v = 0.0;
            for k in 0..3 {
                v += rot[i][k] * rot[j][k] / (ax[k] * ax[k]);
            }
            m[i][j] = v * s[i] * s[j];
        }
    }
    // Half-extent along each world axis: sqrt((M⁻¹)_ii) = sqrt(Σ_k (R_ik a_k)²) · stretch.
    let mut half = [0.0; 3];
    for (i, h) in half.iter_mut().enumerate() {
        *h = (0..3).map(|k| (rot[i][k] * ax[k]).powi(2)).sum::<f64>().sqrt() / s[i];
    }
    (m, half)
}

/// Places the nuclei (centres, shapes, brightness). May return fewer than
/// asked only if the embryo cannot hold them even after shrinking.
fn place(cfg: &SynthConfig, n: usize, r: &mut impl Rng) -> Vec<Nucleus> {
    let ext = cfg.extent_um();
    let big_r = cfg.embryo_radius();
    let mut r0 = cfg.radius_for(n);
    let normal = Normal::new(0.0, 1.0).unwrap();
    let margin = [cfg.voxel_um[0], cfg.voxel_um[1], cfg.voxel_um[2]];
    let mut out: Vec<Nucleus> = Vec::with_capacity(n);
    let mut failures = 0usize;
    while out.len() < n {
        let mitotic = r.random_bool(cfg.mitotic_fraction);
        let jit = |r: &mut dyn rand::RngCore| (1.0 + cfg.radius_jitter * normal.sample(r)).clamp(0.7, 1.3);
        let mut ax = [r0 * jit(r), r0 * jit(r), r0 * jit(r)];
        let mut photons = cfg.nucleus_photons * (cfg.brightness_sigma * normal.sample(r)).exp();
        if mitotic {
            // Condensed chromatin: a smaller, flattened, brighter body.
            ax = [0.8 * r0, 0.8 * r0, 0.4 * r0];
            photons *= 2.5;
        }
        let rot = random_rotation(r);
        let (m, half) = ellipsoid_form(ax, rot, cfg.z_stretch);
        // Candidate centre.
        let c = if !out.is_empty() && r.random_bool(cfg.touch_fraction) {
            let j = r.random_range(0..out.len());
            let u = unit_vector(r);
            let probe = Nucleus { c: [0.0; 3], m, half, photons, npb: vec![] };
            let d = (probe.radius_along(u) + out[j].radius_along(u)) * r.random_range(0.93..1.0);
            [out[j].c[0] + u[0] * d, out[j].c[1] + u[1] * d, out[j].c[2] + u[2] * d]
        } else {
            let u = unit_vector(r);
            let shell = n >= 32 && r.random_bool(0.75);
            let f: f64 = if shell { r.random_range(0.6f64..1.0) } else { r.random::<f64>().cbrt() };
            let d = f * big_r;
            [u[0] * d, u[1] * d, u[2] * d]
        };
        let nuc = Nucleus { c, m, half, photons, npb: vec![] };
        // Inside the embryo (centre at least half a radius from its edge) and the field.
        let rc = norm(c);
        let in_embryo =
            rc <= big_r - 0.5 * if rc > 0.0 { nuc.radius_along([c[0] / rc, c[1] / rc, c[2] / rc]) } else { 0.0 };
        let in_field = (0..3).all(|a| c[a].abs() + half[a] <= ext[a] / 2.0 - margin[a]);
        // Neighbours may touch but barely overlap.
        let clear = out.iter().all(|o| {
            let d = sub(c, o.c);
            let l = norm(d);
            if l < 1e-9 {
                return false;
            }
            let u = [d[0] / l, d[1] / l, d[2] / l];
            l >= 0.9 * (nuc.radius_along(u) + o.radius_along(u))
        });
        if in_embryo && in_field && clear {
            let mut nuc = nuc;
            if !mitotic {
                for _ in 0..r.random_range(0..=3u32) {
                    let rad = r0 * r.random_range(0.12..0.22);
                    let u = unit_vector(r);
                    let off = r0 * r.random_range(0.0..0.55);
                    nuc.npb.push(([u[0] * off, u[1] * off, u[2] * off * cfg.z_stretch], rad));
                }
            }
            out.push(nuc);
            failures = 0;
        } else {
            failures += 1;
            if failures > 4000 {
                // Too dense for this size: shrink and keep going.
                r0 *= 0.95;
                failures = 0;
                if r0 < 1.5 * cfg.voxel_um[0] {
                    log::warn!("synth: could only place {} of {n} nuclei", out.len());
                    break;
                }
            }
        }
    }
    out
}

/// Separable Gaussian blur along one axis (0 = z, 1 = y, 2 = x) with mirror edges.
fn blur_axis(data: &mut [f32], dims: [usize; 3], axis: usize, sigma_vox: f64) {
    if sigma_vox < 0.05 || dims[axis] < 2 {
        return;
    }
    let rad = (3.0 * sigma_vox).ceil() as isize;
    let mut k: Vec<f64> = (-rad..=rad).map(|i| (-(i * i) as f64 / (2.0 * sigma_vox * sigma_vox)).exp()).collect();
    let s: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= s);
    let [d, h, w] = dims;
    let (n, stride) = match axis {
        0 => (d, h * w),
        1 => (h, w),
        _ => (w, 1),
    };
    let starts: Vec<usize> = match axis {
        0 => (0..h * w).collect(),
        1 => (0..d).flat_map(|z| (0..w).map(move |x| z * h * w + x)).collect(),
        _ => (0..d * h).map(|r| r * w).collect(),
    };
    let mut line = vec![0f32; n];
    for s0 in starts {
        for (i, l) in line.iter_mut().enumerate() {
            *l = data[s0 + i * stride];
        }
        for i in 0..n {
            let mut acc = 0.0f64;
            for (t, kv) in k.iter().enumerate() {
                let j = crate::preprocess::reflect_index(i as isize + t as isize - rad, n);
                acc += kv * line[j] as f64;
            }
            data[s0 + i * stride] = acc as f32;
        }
    }
}

fn gaussian_blur(data: &mut [f32], dims: [usize; 3], sigma_um: [f64; 3], voxel_um: [f64; 3]) {
    blur_axis(data, dims, 2, sigma_um[0] / voxel_um[0]);
    blur_axis(data, dims, 1, sigma_um[1] / voxel_um[1]);
    blur_axis(data, dims, 0, sigma_um[2] / voxel_um[2]);
}

/// Generates one embryo with `cfg.nuclei` nuclei. Deterministic for a seed.
/// An invalid config (see [`SynthConfig::validate`]) is clamped to the
/// nearest valid nucleus count; call `validate` first for a clear error.
pub fn generate(cfg: &SynthConfig, seed: u64) -> SynthEmbryo {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed ^ 0x005E_ED0F_E4B7_u64);
    let n = cfg.nuclei.clamp(2, 64);
    let [d, h, w] = cfg.dims;
    let [vx, vy, vz] = cfg.voxel_um;
    let len = d * h * w;
    let nuclei = place(cfg, n, &mut r);

    // Voxel centre in µm relative to the stack centre.
    let pos = |z: usize, y: usize, x: usize| {
        [
            (x as f64 + 0.5) * vx - w as f64 * vx / 2.0,
            (y as f64 + 0.5) * vy - h as f64 * vy / 2.0,
            (z as f64 + 0.5) * vz - d as f64 * vz / 2.0,
        ]
    };
    let vox_range = |c: f64, half: f64, v: f64, n: usize| {
        let lo = ((c - half) / v + n as f64 / 2.0 - 0.5).floor().max(0.0) as usize;
        let hi = (((c + half) / v + n as f64 / 2.0 - 0.5).ceil().max(0.0) as usize).min(n - 1);
        lo..=hi
    };

    // 1-2. Ground truth: each voxel to the nucleus it is deepest in.
    let mut labels = vec![0u32; len];
    let mut depth = vec![f32::INFINITY; len];
    for (i, nu) in nuclei.iter().enumerate() {
        for z in vox_range(nu.c[2], nu.half[2], vz, d) {
            for y in vox_range(nu.c[1], nu.half[1], vy, h) {
                for x in vox_range(nu.c[0], nu.half[0], vx, w) {
                    let s = nu.q(sub(pos(z, y, x), nu.c));
                    let v = (z * h + y) * w + x;
                    if s <= 1.0 && (s as f32) < depth[v] {
                        depth[v] = s as f32;
                        labels[v] = i as u32 + 1;
                    }
                }
            }
        }
    }
    // The fluorescence follows the physical nuclei, before any annotation gap.
    let owner = labels.clone();
    // Touching nuclei are separated by a one-voxel gap (26-neighbourhood), as
    // in the example annotations, whose mask components are one per nucleus:
    // a voxel next to a voxel of a smaller different label goes to background.
    let carve: Vec<usize> = (0..len)
        .filter(|&v| {
            let l = labels[v];
            if l == 0 {
                return false;
            }
            let (z, y, x) = (v / (h * w), (v / w) % h, v % w);
            for dz in -1isize..=1 {
                for dy in -1isize..=1 {
                    for dx in -1isize..=1 {
                        let (zz, yy, xx) = (z as isize + dz, y as isize + dy, x as isize + dx);
                        if zz < 0 || yy < 0 || xx < 0 || zz >= d as isize || yy >= h as isize || xx >= w as isize {
                            continue;
                        }
                        let o = labels[(zz as usize * h + yy as usize) * w + xx as usize];
                        if o != 0 && o < l {
                            return true;
                        }
                    }
                }
            }
            false
        })
        .collect();
    carve.iter().for_each(|&v| labels[v] = 0);
    keep_largest_piece(&mut labels, cfg.dims);
    // Renumber so every label 1..=k occurs (a nucleus could in principle be swallowed).
    let mut count = vec![0usize; nuclei.len() + 1];
    labels.iter().for_each(|&l| count[l as usize] += 1);
    let mut remap = vec![0u32; nuclei.len() + 1];
    let mut kept: Vec<usize> = Vec::new();
    for i in 1..=nuclei.len() {
        if count[i] > 0 {
            kept.push(i - 1);
            remap[i] = kept.len() as u32;
        }
    }
    labels.iter_mut().for_each(|l| *l = remap[*l as usize]);
    let k = kept.len();
    let nsn: Vec<u8> = labels.iter().map(|&l| if l > 0 { 255 } else { 0 }).collect();

    // NDN: a small blob at each label's centroid, inside that label.
    let mut sums = vec![[0.0f64; 4]; k + 1];
    for z in 0..d {
        for y in 0..h {
            for x in 0..w {
                let l = labels[(z * h + y) * w + x] as usize;
                if l > 0 {
                    let s = &mut sums[l];
                    s[0] += z as f64;
                    s[1] += y as f64;
                    s[2] += x as f64;
                    s[3] += 1.0;
                }
            }
        }
    }
    let mut ndn = vec![0u8; len];
    let br = cfg.ndn_radius_um;
    for (l, s) in sums.iter().enumerate().skip(1) {
        let cz = s[0] / s[3];
        let cy = s[1] / s[3];
        let cx = s[2] / s[3];
        let (rz, ry, rx) = ((br[2] / vz).max(0.5), (br[1] / vy).max(0.5), (br[0] / vx).max(0.5));
        let mut any = false;
        let zr = (cz - rz).floor().max(0.0) as usize..=((cz + rz).ceil() as usize).min(d - 1);
        for z in zr {
            for y in (cy - ry).floor().max(0.0) as usize..=((cy + ry).ceil() as usize).min(h - 1) {
                for x in (cx - rx).floor().max(0.0) as usize..=((cx + rx).ceil() as usize).min(w - 1) {
                    let q = ((z as f64 - cz) / rz).powi(2)
                        + ((y as f64 - cy) / ry).powi(2)
                        + ((x as f64 - cx) / rx).powi(2);
                    let v = (z * h + y) * w + x;
                    if q <= 1.0 && labels[v] == l as u32 {
                        ndn[v] = 255;
                        any = true;
                    }
                }
            }
        }
        if !any {
            // Odd shape: mark the label's voxel closest to its centroid.
            let mut best = (f64::INFINITY, 0usize);
            for (v, &lv) in labels.iter().enumerate() {
                if lv == l as u32 {
                    let (z, y, x) = (v / (h * w), (v / w) % h, v % w);
                    let q = (z as f64 - cz).powi(2) + (y as f64 - cy).powi(2) + (x as f64 - cx).powi(2);
                    if q < best.0 {
                        best = (q, v);
                    }
                }
            }
            ndn[best.1] = 255;
        }
    }

    // 3. Fluorescence (photons per voxel before blur).
    let normal = Normal::new(0.0, 1.0).unwrap();
    let mut texture: Vec<f32> = (0..len).map(|_| normal.sample(&mut r) as f32).collect();
    let tex_sigma = 0.9;
    gaussian_blur(&mut texture, cfg.dims, [tex_sigma; 3], cfg.voxel_um);
    let tex_sd = (texture.iter().map(|&t| (t as f64).powi(2)).sum::<f64>() / len as f64).sqrt().max(1e-12);
    let big_r = cfg.embryo_radius();
    let mut signal = vec![0f32; len];
    for z in 0..d {
        for y in 0..h {
            for x in 0..w {
                let v = (z * h + y) * w + x;
                let p = pos(z, y, x);
                let mut s = if norm(p) <= big_r { cfg.embryo_photons } else { 0.0 };
                let o = owner[v] as usize;
                if o > 0 {
                    let nu = &nuclei[o - 1];
                    let t = (1.0 + cfg.texture * texture[v] as f64 / tex_sd).max(0.2);
                    let rel = sub(p, nu.c);
                    let in_npb = nu.npb.iter().any(|(o, rad)| norm(sub(rel, *o)) <= *rad);
                    s += nu.photons * t * if in_npb { 0.3 } else { 1.0 };
                }
                signal[v] = s as f32;
            }
        }
    }
    gaussian_blur(&mut signal, cfg.dims, cfg.psf_sigma_um, cfg.voxel_um);

    // 4. Camera.
    let [lo, hi] = cfg.intensity_scale;
    let scale = if hi > lo { (r.random_range(lo.ln()..=hi.ln())).exp() } else { lo };
    let read = Normal::new(0.0, cfg.read_noise_adu.max(0.0)).unwrap();
    let data: Vec<f32> = signal
        .iter()
        .map(|&s| {
            let lambda = s as f64 * scale + cfg.background_photons;
            let photons =
                if lambda > 0.0 { Poisson::new(lambda).map(|p| p.sample(&mut r)).unwrap_or(lambda) } else { 0.0 };
            let adu = cfg.offset_adu + cfg.gain_adu * photons + read.sample(&mut r);
            adu.round().clamp(0.0, 65535.0) as f32
        })
        .collect();

    SynthEmbryo { raw: Volume { dims: cfg.dims, data, voxel_um: Some(cfg.voxel_um) }, nsn, ndn, labels, nuclei: k }
}

/// Keeps only the largest 6-connected piece of each label (carving a gap
/// can, rarely, cut a thin corner off a nucleus); the rest goes to 0.
fn keep_largest_piece(labels: &mut [u32], dims: [usize; 3]) {
    let [d, h, w] = dims;
    let mut piece = vec![0u32; labels.len()];
    let mut best: std::collections::HashMap<u32, (usize, u32)> = Default::default();
    let mut next = 0u32;
    let mut stack = Vec::new();
    for s in 0..labels.len() {
        let l = labels[s];
        if l == 0 || piece[s] != 0 {
            continue;
        }
        next += 1;
        piece[s] = next;
        stack.push(s);
        let mut size = 0usize;
        while let Some(v) = stack.pop() {
            size += 1;
            let (z, y, x) = (v / (h * w), (v / w) % h, v % w);
            let mut visit = |u: usize| {
                if labels[u] == l && piece[u] == 0 {
                    piece[u] = next;
                    stack.push(u);
                }
            };
            if z > 0 {
                visit(v - h * w);
            }
            if z + 1 < d {
                visit(v + h * w);
            }
            if y > 0 {
                visit(v - w);
            }
            if y + 1 < h {
                visit(v + w);
            }
            if x > 0 {
                visit(v - 1);
            }
            if x + 1 < w {
                visit(v + 1);
            }
        }
        let e = best.entry(l).or_insert((0, 0));
        if size > e.0 {
            *e = (size, next);
        }
    }
    for (l, p) in labels.iter_mut().zip(&piece) {
        if *l != 0 && best[l].1 != *p {
            *l = 0;
        }
    }
}

/// Per-stack seed derived from the dataset seed (SplitMix64).
fn stack_seed(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i + 1));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Writes a dataset in the QCANet layout: `dir/images_raw/NAME.tif` (u16),
/// `dir/images_nsn/NAME.tif`, `dir/images_ndn/NAME.tif` (u8),
/// `dir/labels_instance/NAME.tif` (u16 instance labels, where `eval`, `calibrate`
/// and `train --dilate-within-nuclei` read them in BBBC050's layout), `dir/split_list/train.txt`
/// and `validation.txt` (the last `validation` stacks), and
/// `dir/synth_config.json` (config and seed, to regenerate). Returns the file
/// names (`synth_000.tif`, ...). Nuclei per stack: `cfg.nuclei_range`, log-uniform.
pub fn write_dataset(dir: &Path, cfg: &SynthConfig, count: usize, validation: usize, seed: u64) -> Result<Vec<String>> {
    write_dataset_with_progress(dir, cfg, count, validation, seed, &mut |_, _| {})
}

/// [`write_dataset`] calling `progress(done, name)` after each stack.
pub fn write_dataset_with_progress(
    dir: &Path,
    cfg: &SynthConfig,
    count: usize,
    validation: usize,
    seed: u64,
    progress: &mut dyn FnMut(usize, &str),
) -> Result<Vec<String>> {
    cfg.validate()?;
    if count == 0 {
        return Err(Error::invalid("synth: count must be at least 1"));
    }
    if validation > count {
        return Err(Error::invalid(format!("synth: validation ({validation}) exceeds count ({count})")));
    }
    for sub in ["images_raw", "images_nsn", "images_ndn", "labels_instance", "split_list"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).map_err(|e| Error::file(&p, format!("cannot create directory: {e}")))?;
    }
    let width = count.saturating_sub(1).to_string().len().max(3);
    let [lo, hi] = cfg.nuclei_range.unwrap_or([cfg.nuclei, cfg.nuclei]);
    let mut names = Vec::with_capacity(count);
    for i in 0..count {
        let s = stack_seed(seed, i as u64);
        let mut c = cfg.clone();
        if hi > lo {
            let mut r = rand::rngs::StdRng::seed_from_u64(s ^ 0xC0FFEE);
            let n = (r.random_range((lo as f64).ln()..=((hi as f64 + 0.999).ln()))).exp().floor() as usize;
            c.nuclei = n.clamp(lo, hi);
        } else {
            c.nuclei = lo;
        }
        let e = generate(&c, s);
        let name = format!("synth_{i:0width$}.tif");
        let v = Some(cfg.voxel_um);
        let raw16: Vec<u16> = e.raw.data.iter().map(|&x| x as u16).collect();
        io::write_u16(&dir.join("images_raw").join(&name), cfg.dims, &raw16, v)?;
        io::write_u8(&dir.join("images_nsn").join(&name), cfg.dims, &e.nsn, v)?;
        io::write_u8(&dir.join("images_ndn").join(&name), cfg.dims, &e.ndn, v)?;
        io::write_labels(&dir.join("labels_instance").join(&name), cfg.dims, &e.labels, v)?;
        names.push(name);
        progress(i + 1, names.last().unwrap());
    }
    let split = count - validation;
    let list = |names: &[String]| names.iter().map(|n| format!("{n}\n")).collect::<String>();
    let (train, val) = (list(&names[..split]), list(&names[split..]));
    io::write_atomic(&dir.join("split_list/train.txt"), |w| Ok(w.write_all(train.as_bytes())?))?;
    io::write_atomic(&dir.join("split_list/validation.txt"), |w| Ok(w.write_all(val.as_bytes())?))?;
    let meta = serde_json::json!({ "generator": "qcanet-gpu synth", "seed": seed, "count": count, "validation": validation, "config": cfg });
    let text = serde_json::to_string_pretty(&meta).map_err(|e| Error::invalid(e.to_string()))?;
    io::write_atomic(&dir.join("synth_config.json"), |w| Ok(w.write_all(text.as_bytes())?))?;
    Ok(names)
}
