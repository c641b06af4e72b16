//! A soft detection target from the instance labels: each nucleus's
//! distance to its own boundary, divided by its largest, so every nucleus,
//! small or large, peaks at 1 at its centre and falls to near 0 at its edge
//! (the object probability of StarDist, Schmidt et al., MICCAI 2018).
//!
//! QCANet's NDN learns balls around the centres (`images_ndn/`, dilated):
//! where two nuclei touch, two balls can touch too, and a small nucleus's
//! ball is a shoulder of its large neighbour's response. Here the target
//! falls to one voxel's distance at every boundary between two nuclei,
//! touching or not, and a nucleus of 40 voxels peaks as high as one of
//! 4,000. The NDN learns it with a sigmoid head and BCE (soft targets);
//! its markers are the thresholded probability as before. Tried once on
//! BBBC050 (lavapipe, 85 minutes; weights/HISTORY.md, "An NDN that learns
//! each nucleus's centre map"): not better than the bundled NDN.

use crate::error::Result;
use crate::postprocess::criteria::measure;
use crate::postprocess::edt::reference::edt;
use crate::postprocess::Grid;

/// The centre map of the instance `labels` (z, y, x, 0 background) on a
/// grid of `spacing` µm (z, y, x): at a voxel of nucleus `l`, its distance
/// to the nearest voxel not of `l` (outside the volume counts as not `l`)
/// over the largest such distance in `l`; 0 on the background. Values lie
/// in (0, 1], 1 at least once in every nucleus.
///
/// Errors ([`Grid::validate`], [`Grid::check_len`]): `labels`' length
/// differs from `dims`, an empty volume, or a spacing that is not positive.
pub fn centre_map(labels: &[u32], dims: [usize; 3], spacing: [f32; 3]) -> Result<Vec<f32>> {
    let grid = Grid::new(dims, spacing);
    grid.validate("centre_map")?;
    grid.check_len("centre_map", "label image", labels.len())?;
    let [_, h, w] = dims;
    let mut out = vec![0f32; labels.len()];
    // Each nucleus's bounding box, (x, y, z) inclusive.
    for o in measure(labels, &grid, None)? {
        let l = o.label;
        // z0, y0, x0 of the box.
        let b: [usize; 3] = std::array::from_fn(|a| o.bbox_min[2 - a]);
        // The box grown by one voxel on each side: its ring is all "not l",
        // and every voxel outside it is farther than the ring's nearest.
        let sd: [usize; 3] = std::array::from_fn(|a| o.bbox_max[2 - a] - b[a] + 3);
        // The nucleus's voxels: (index in the grown box, index in the volume).
        let mut inside = Vec::new();
        let mut mask = vec![0u8; sd.iter().product()];
        for z in 1..sd[0] - 1 {
            for y in 1..sd[1] - 1 {
                for x in 1..sd[2] - 1 {
                    let (j, i) = ((z * sd[1] + y) * sd[2] + x, ((z - 1 + b[0]) * h + y - 1 + b[1]) * w + x - 1 + b[2]);
                    if labels[i] == l {
                        mask[j] = 1;
                        inside.push((j, i));
                    }
                }
            }
        }
        let d = edt(&mask, &Grid::new(sd, spacing));
        let max = inside.iter().map(|&(j, _)| d[j]).fold(0f32, f32::max);
        for (j, i) in inside {
            out[i] = d[j] / max;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force in f64: every voxel against every voxel of another
    /// label and the ring of voxels just outside the volume.
    fn brute(labels: &[u32], dims: [usize; 3], sp: [f32; 3]) -> Vec<f32> {
        let [d, h, w] = dims;
        let sp = sp.map(|s| s as f64);
        let dist = |a: [i64; 3], b: [i64; 3]| -> f64 {
            (0..3).map(|k| ((a[k] - b[k]) as f64 * sp[k]).powi(2)).sum::<f64>().sqrt()
        };
        let coord = |i: usize| [(i / (h * w)) as i64, (i / w % h) as i64, (i % w) as i64];
        let mut raw = vec![0f64; labels.len()];
        for (i, &l) in labels.iter().enumerate() {
            if l == 0 {
                continue;
            }
            let p = coord(i);
            let mut best = f64::INFINITY;
            for (j, &m) in labels.iter().enumerate() {
                if m != l {
                    best = best.min(dist(p, coord(j)));
                }
            }
            // Just outside the volume, straight out along each axis is nearest.
            for (k, len) in [d, h, w].into_iter().enumerate() {
                let mut lo = p;
                lo[k] = -1;
                let mut hi = p;
                hi[k] = len as i64;
                best = best.min(dist(p, lo)).min(dist(p, hi));
            }
            raw[i] = best;
        }
        let mut max = std::collections::HashMap::<u32, f64>::new();
        for (&l, &r) in labels.iter().zip(&raw) {
            let m = max.entry(l).or_insert(0.0);
            *m = m.max(r);
        }
        labels.iter().zip(&raw).map(|(&l, &r)| if l == 0 { 0.0 } else { (r / max[&l]) as f32 }).collect()
    }

    /// Random blobs of a few labels that touch each other: random boxes
    /// painted over each other, then two that touch at the centre.
    fn random_labels(dims: [usize; 3], seed: u64) -> Vec<u32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut next = |m: usize| rng.random_range(0..m);
        let [d, h, w] = dims;
        let mut l = vec![0u32; d * h * w];
        for label in [3u32, 7, 8, 20, 1000] {
            let (z0, y0, x0) = (next(d), next(h), next(w));
            let (z1, y1, x1) = (
                (z0 + 1 + next(d / 2 + 1)).min(d),
                (y0 + 1 + next(h / 2 + 1)).min(h),
                (x0 + 1 + next(w / 2 + 1)).min(w),
            );
            for z in z0..z1 {
                for y in y0..y1 {
                    for x in x0..x1 {
                        l[(z * h + y) * w + x] = label;
                    }
                }
            }
        }
        // And two small boxes face to face at the centre, so labels touch whatever the seed.
        let (cz, cy, cx) = (d / 2, h / 2, w / 2);
        for z in cz - 1..=cz {
            for y in cy - 1..=cy {
                for x in cx - 2..cx + 2 {
                    l[(z * h + y) * w + x] = if x < cx { 8 } else { 20 };
                }
            }
        }
        l
    }

    #[test]
    fn centre_map_matches_brute_force_on_touching_random_blobs() {
        for (dims, sp, seed) in
            [([5, 7, 9], [2.0, 0.8, 0.8], 1), ([9, 6, 11], [0.8, 0.8, 0.8], 2), ([11, 13, 7], [1.75, 0.5, 1.1], 3)]
        {
            let l = random_labels(dims, seed);
            assert!(l.iter().filter(|&&v| v != 0).count() > 10, "seed {seed}: too few labelled voxels");
            // Two labels face to face somewhere (along z, y or x; x pairs within a row).
            let [_, h, w] = dims;
            let touching = (0..l.len()).any(|i| {
                [(i % w > 0, 1), (i / w % h > 0, w), (i >= h * w, h * w)]
                    .into_iter()
                    .any(|(inside, s)| inside && l[i] != 0 && l[i - s] != 0 && l[i] != l[i - s])
            });
            assert!(touching, "seed {seed}: no two labels touch");
            let got = centre_map(&l, dims, sp).unwrap();
            let want = brute(&l, dims, sp);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= 1e-5, "{dims:?} seed {seed} voxel {i}: {g} against {w}");
            }
        }
    }

    #[test]
    fn every_nucleus_peaks_at_one_and_touching_ones_dip_between() {
        // A big ball and a small one touching it along x.
        let dims = [15, 15, 30];
        let mut l = vec![0u32; 15 * 15 * 30];
        for z in 0..15i64 {
            for y in 0..15i64 {
                for x in 0..30i64 {
                    let i = ((z * 15 + y) * 30 + x) as usize;
                    if (z - 7).pow(2) + (y - 7).pow(2) + (x - 10).pow(2) <= 36 {
                        l[i] = 1;
                    } else if (z - 7).pow(2) + (y - 7).pow(2) + (x - 19).pow(2) <= 9 {
                        l[i] = 2;
                    }
                }
            }
        }
        let m = centre_map(&l, dims, [1.0; 3]).unwrap();
        let at = |x: usize| m[(7 * 15 + 7) * 30 + x];
        assert_eq!(at(10), 1.0, "the big ball's centre");
        assert_eq!(at(19), 1.0, "the small ball's centre");
        // The two touch at x 16 | x 17; there the map is one voxel over each radius.
        assert!(at(16) < 0.2 && at(17) < 0.6, "at the contact: {} {}", at(16), at(17));
        assert_eq!(at(25), 0.0, "background");
        assert!(m.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(centre_map(&[1, 0], [1, 1, 3], [1.0; 3]).is_err());
        assert!(centre_map(&[1, 0, 1], [1, 1, 3], [1.0, 0.0, 1.0]).is_err());
    }
}
