//! A synthetic field of touching spheres with known labels and centre
//! markers, for tests and benchmarks of the instance stage.
//!
//! Spheres (radii in µm) are packed one by one next to an existing sphere at a
//! centre distance of 0.9–0.98 × (r₁ + r₂), so neighbours overlap slightly,
//! and no pair closer than 0.9 × (r₁ + r₂). A voxel covered by several spheres
//! belongs to the one with the smallest power distance |p − c|² − r² (the
//! radical plane: exactly the neck where the two spheres meet). Markers are
//! the voxels within 0.3 r of each centre (at least the centre voxel).

use rand::{Rng, SeedableRng};

use super::Grid;

/// A field of labelled spheres.
#[derive(Clone, Debug)]
pub struct SphereField {
    pub grid: Grid,
    /// True labels 1..=n (0 background), numbered in placement order.
    pub labels: Vec<u32>,
    /// 1 inside any sphere.
    pub mask: Vec<u8>,
    /// 1 on the marker blobs.
    pub markers: Vec<u8>,
    /// Centres in µm (z, y, x) and radii in µm.
    pub centres_um: Vec<[f64; 3]>,
    pub radii_um: Vec<f64>,
}

impl SphereField {
    pub fn count(&self) -> usize {
        self.radii_um.len()
    }
}

/// Up to `n` spheres with radii uniform in `radius_um`, seeded (fewer when
/// the volume is full: see [`SphereField::count`]).
pub fn touching_spheres(grid: &Grid, n: usize, radius_um: (f64, f64), seed: u64) -> SphereField {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let sp = grid.spacing.map(|s| s as f64);
    let ext = [0, 1, 2].map(|k| (grid.dims[k] as f64 - 1.0) * sp[k]);
    let (r0, r1) = (radius_um.0.min(radius_um.1), radius_um.0.max(radius_um.1));
    let mut centres: Vec<[f64; 3]> = Vec::new();
    let mut radii: Vec<f64> = Vec::new();
    let inside = |c: &[f64; 3], r: f64| (0..3).all(|k| c[k] - r >= sp[k] && c[k] + r <= ext[k] - sp[k]);
    'outer: while centres.len() < n {
        let r = rng.random_range(r0..=r1);
        for _ in 0..2000 {
            let c = if centres.is_empty() {
                ext.map(|e| e / 2.0)
            } else {
                let j = rng.random_range(0..centres.len());
                let mut dir = [0f64; 3];
                let mut norm = 0.0;
                while norm < 1e-6 {
                    dir = [0; 3].map(|_| rng.random_range(-1.0..1.0f64));
                    norm = dir.iter().map(|v| v * v).sum::<f64>().sqrt();
                }
                let dist = (r + radii[j]) * rng.random_range(0.9..0.98);
                [0, 1, 2].map(|k| centres[j][k] + dir[k] / norm * dist)
            };
            if !inside(&c, r) {
                continue;
            }
            let ok = centres.iter().zip(&radii).all(|(ck, &rk)| {
                let d2: f64 = (0..3).map(|k| (c[k] - ck[k]).powi(2)).sum();
                d2.sqrt() >= 0.9 * (r + rk)
            });
            if ok {
                centres.push(c);
                radii.push(r);
                continue 'outer;
            }
        }
        break;
    }
    let [d, h, w] = grid.dims;
    let mut labels = vec![0u32; d * h * w];
    let mut power = vec![f64::INFINITY; d * h * w];
    let mut markers = vec![0u8; d * h * w];
    for (s, (c, &r)) in centres.iter().zip(&radii).enumerate() {
        let lo = [0, 1, 2].map(|k| ((c[k] - r) / sp[k]).floor().max(0.0) as usize);
        let hi = [0, 1, 2].map(|k| (((c[k] + r) / sp[k]).ceil() as usize).min(grid.dims[k] - 1));
        for z in lo[0]..=hi[0] {
            for y in lo[1]..=hi[1] {
                for x in lo[2]..=hi[2] {
                    let p = [z as f64 * sp[0], y as f64 * sp[1], x as f64 * sp[2]];
                    let d2: f64 = (0..3).map(|k| (p[k] - c[k]).powi(2)).sum();
                    let i = (z * h + y) * w + x;
                    if d2 <= r * r && d2 - r * r < power[i] {
                        power[i] = d2 - r * r;
                        labels[i] = s as u32 + 1;
                    }
                }
            }
        }
    }
    for (s, (c, &r)) in centres.iter().zip(&radii).enumerate() {
        let lo = [0, 1, 2].map(|k| ((c[k] - r) / sp[k]).floor().max(0.0) as usize);
        let hi = [0, 1, 2].map(|k| (((c[k] + r) / sp[k]).ceil() as usize).min(grid.dims[k] - 1));
        let centre = [0, 1, 2].map(|k| (c[k] / sp[k]).round() as usize);
        for z in lo[0]..=hi[0] {
            for y in lo[1]..=hi[1] {
                for x in lo[2]..=hi[2] {
                    let p = [z as f64 * sp[0], y as f64 * sp[1], x as f64 * sp[2]];
                    let d2: f64 = (0..3).map(|k| (p[k] - c[k]).powi(2)).sum();
                    let i = (z * h + y) * w + x;
                    if (d2 <= (0.3 * r).powi(2) || [z, y, x] == centre) && labels[i] == s as u32 + 1 {
                        markers[i] = 1;
                    }
                }
            }
        }
    }
    let mask = labels.iter().map(|&l| (l != 0) as u8).collect();
    SphereField { grid: *grid, labels, mask, markers, centres_um: centres, radii_um: radii }
}
