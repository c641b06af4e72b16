//! Separation weights: the weight map of the U-Net paper (Ronneberger,
//! Fischer and Brox 2015, eq. 2) that makes the loss count the background
//! between two close objects more than the rest. In the crowded stages the
//! NDN misses small nuclei because its response to them runs into a large
//! neighbour's blob, so the two get one marker (weights/HISTORY.md, "Where
//! the crowded stage fails"); a target that weighs the gap between two
//! markers asks the network to keep them apart. Used through the two-channel
//! target of [`crate::ops::loss::softmax_cross_entropy`].

use crate::error::{Error, Result};
use crate::postprocess::ccl::reference::label;
use crate::postprocess::criteria::measure;
use crate::postprocess::edt::reference::edt;
use crate::postprocess::Connectivity;
use crate::postprocess::Grid;
use crate::tensor::{CpuTensor, Shape5};

/// The weight map's parameters: background voxel `x` weighs
/// `1 + w0·exp(−(d1 + d2)² / (2σ²))`, `d1` and `d2` its distances (voxels of
/// the training grid) to the nearest and the second-nearest object; object
/// voxels, and every voxel when there are fewer than two objects, weigh 1.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Separation {
    /// Extra weight of a voxel between two touching objects.
    pub w0: f32,
    /// Width of the gap that counts, in voxels (default
    /// [`Separation::DEFAULT_SIGMA`]).
    #[serde(default = "default_sigma")]
    pub sigma: f32,
}

fn default_sigma() -> f32 {
    Separation::DEFAULT_SIGMA
}

impl Separation {
    /// σ when none is given: 3 voxels (2.4 µm on the bundled networks'
    /// 0.8 µm grid), a quarter of a dilated BBBC050 marker's width.
    pub const DEFAULT_SIGMA: f32 = 3.0;

    pub fn validate(&self) -> Result<()> {
        if !(self.w0.is_finite() && self.w0 >= 0.0) {
            return Err(Error::invalid(format!("separation weight {} must be a finite number >= 0", self.w0)));
        }
        if !(self.sigma.is_finite() && self.sigma > 0.0) {
            return Err(Error::invalid(format!("separation sigma {} must be a finite number > 0 voxels", self.sigma)));
        }
        Ok(())
    }

    /// Distances beyond this many voxels are not measured: a voxel that far
    /// from its second-nearest object weighs 1 (the term left out is below
    /// `w0·e⁻⁸`).
    pub fn reach(&self) -> f32 {
        4.0 * self.sigma
    }

    /// The weight of a background voxel at distances `d1 <= d2`.
    pub fn weight(&self, d1: f32, d2: f32) -> f32 {
        if d2 > self.reach() {
            return 1.0;
        }
        let s = d1 + d2;
        1.0 + self.w0 * (-(s * s) / (2.0 * self.sigma * self.sigma)).exp()
    }
}

/// The weight map of a 0/1 target of `dims` (D, H, W): objects are its
/// 26-connected components of `target > 0.5`, distances Euclidean in voxels
/// (exact within [`Separation::reach`] of each object: each object's
/// distance transform is taken over its bounding box grown by the reach).
pub fn separation_weights(target: &[f32], dims: [usize; 3], s: &Separation) -> Vec<f32> {
    let n = target.len();
    let mut out = vec![1.0f32; n];
    let mask: Vec<u8> = target.iter().map(|&t| (t > 0.5) as u8).collect();
    let (labels, count) = label(&mask, dims, Connectivity::TwentySix);
    if count < 2 || s.w0 == 0.0 {
        return out;
    }
    let [_, h, w] = dims;
    // Each object's bounding box ((x, y, z), inclusive), one row per label.
    let objects = measure(&labels, &Grid::isotropic(dims), None).expect("labels of the target's own grid");
    let reach = s.reach();
    let r = reach.ceil() as usize;
    // The two smallest distances to an object seen so far, per voxel.
    let mut d1 = vec![f32::INFINITY; n];
    let mut d2 = vec![f32::INFINITY; n];
    for o in &objects {
        let l = o.label as usize;
        // z, y, x of the box grown by the reach, clipped to the volume.
        let b0: [usize; 3] = std::array::from_fn(|a| o.bbox_min[2 - a].saturating_sub(r));
        let b1: [usize; 3] = std::array::from_fn(|a| (o.bbox_max[2 - a] + r + 1).min(dims[a]));
        let bd = [b1[0] - b0[0], b1[1] - b0[1], b1[2] - b0[2]];
        // 0 on the object, 1 elsewhere: the transform is the distance to it.
        let mut m = vec![1u8; bd[0] * bd[1] * bd[2]];
        for z in 0..bd[0] {
            for y in 0..bd[1] {
                for x in 0..bd[2] {
                    let i = ((b0[0] + z) * h + b0[1] + y) * w + b0[2] + x;
                    if labels[i] as usize == l {
                        m[(z * bd[1] + y) * bd[2] + x] = 0;
                    }
                }
            }
        }
        let dist = edt(&m, &Grid::isotropic(bd));
        for z in 0..bd[0] {
            for y in 0..bd[1] {
                for x in 0..bd[2] {
                    let v = dist[(z * bd[1] + y) * bd[2] + x];
                    if v > reach {
                        continue;
                    }
                    let i = ((b0[0] + z) * h + b0[1] + y) * w + b0[2] + x;
                    if v < d1[i] {
                        d2[i] = d1[i];
                        d1[i] = v;
                    } else if v < d2[i] {
                        d2[i] = v;
                    }
                }
            }
        }
    }
    for i in 0..n {
        if mask[i] == 0 {
            out[i] = s.weight(d1[i], d2[i]);
        }
    }
    out
}

/// The target the loss reads: `t` itself when nothing weighs its voxels,
/// else [`weighted_target`]. The one rule training's batches and the
/// validation loss follow, so that the two losses compare.
pub fn loss_target(t: CpuTensor, s: Option<&Separation>, object_weights: Option<&CpuTensor>) -> CpuTensor {
    if s.is_none() && object_weights.is_none() {
        t
    } else {
        weighted_target(&t, s, object_weights)
    }
}

/// A batch of 0/1 targets (N, 1, D, H, W) with each sample's weight map
/// appended: (N, 2, D, H, W), the class indices then the weights, as
/// [`crate::ops::loss::softmax_cross_entropy`] reads them. A voxel's weight
/// is its separation weight (with `s`; 1 without) times its weight in
/// `object_weights` ((N, 1, D, H, W), e.g. the small-nucleus map of
/// [`super::small_nuclei`]; 1 without): the one falls on background, the
/// other on objects. The separation map is taken within each patch, so an
/// object outside the patch does not count. The samples' maps are computed
/// on threads of their own (about 50 ms a 48³ patch on one core); `fit`
/// calls this on its batch thread ([`super::prefetch`]), beside the
/// training step before.
pub fn weighted_target(t: &CpuTensor, s: Option<&Separation>, object_weights: Option<&CpuTensor>) -> CpuTensor {
    let sh = t.shape;
    debug_assert_eq!(sh.c, 1, "weighted_target takes one-channel 0/1 targets, not {sh}");
    debug_assert!(object_weights.is_none_or(|o| o.shape == sh), "object weights of another shape than the target");
    let dims = [sh.d, sh.h, sh.w];
    let sp = sh.spatial();
    let own = |n: usize| &t.data[n * sh.c * sp..n * sh.c * sp + sp];
    let maps: Vec<Vec<f32>> = std::thread::scope(|scope| {
        let jobs: Vec<_> = (0..sh.n)
            .map(|n| {
                scope.spawn(move || {
                    let mut m = match s {
                        Some(s) => separation_weights(own(n), dims, s),
                        None => vec![1.0; sp],
                    };
                    if let Some(o) = object_weights {
                        m.iter_mut().zip(&o.data[n * sp..(n + 1) * sp]).for_each(|(m, o)| *m *= o);
                    }
                    m
                })
            })
            .collect();
        jobs.into_iter().map(|j| j.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    });
    let mut data = Vec::with_capacity(2 * sh.n * sp);
    for (n, map) in maps.into_iter().enumerate() {
        data.extend_from_slice(own(n));
        data.extend(map);
    }
    CpuTensor::from_vec(Shape5::new(sh.n, 2, sh.d, sh.h, sh.w), data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Brute force over every object voxel (tiny volumes only): checks
    /// [`separation_weights`].
    fn separation_weights_brute(target: &[f32], dims: [usize; 3], s: &Separation) -> Vec<f32> {
        let mask: Vec<u8> = target.iter().map(|&t| (t > 0.5) as u8).collect();
        let (labels, count) = label(&mask, dims, Connectivity::TwentySix);
        let [d, h, w] = dims;
        let voxels: Vec<(usize, [f64; 3])> = (0..d * h * w)
            .filter(|&i| labels[i] != 0)
            .map(|i| (labels[i] as usize, [(i / (h * w)) as f64, ((i / w) % h) as f64, (i % w) as f64]))
            .collect();
        (0..d * h * w)
            .map(|i| {
                if mask[i] != 0 || count < 2 {
                    return 1.0;
                }
                let p = [(i / (h * w)) as f64, ((i / w) % h) as f64, (i % w) as f64];
                let mut best = vec![f64::INFINITY; count as usize + 1];
                for (l, q) in &voxels {
                    let dd = (0..3).map(|a| (p[a] - q[a]).powi(2)).sum::<f64>().sqrt();
                    best[*l] = best[*l].min(dd);
                }
                best.remove(0);
                best.sort_by(f64::total_cmp);
                s.weight(best[0] as f32, best[1] as f32)
            })
            .collect()
    }

    #[test]
    fn matches_brute_force_on_random_blobs() {
        // Random balls in an odd-shaped volume, some touching, some cut by
        // the border; σ small enough that the reach cuts some pairs.
        for (seed, dims, sigma) in [(1u64, [9usize, 13, 11], 1.5f32), (2, [7, 17, 15], 3.0), (3, [11, 10, 19], 0.8)] {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let [d, h, w] = dims;
            let mut t = vec![0f32; d * h * w];
            for _ in 0..6 {
                let c = [rng.random_range(0..d), rng.random_range(0..h), rng.random_range(0..w)];
                let r: f32 = rng.random_range(0.5..2.2);
                for z in 0..d {
                    for y in 0..h {
                        for x in 0..w {
                            let q = [z, y, x];
                            let dd: f32 = (0..3).map(|a| (q[a] as f32 - c[a] as f32).powi(2)).sum();
                            if dd <= r * r {
                                t[(z * h + y) * w + x] = 1.0;
                            }
                        }
                    }
                }
            }
            let s = Separation { w0: 10.0, sigma };
            let fast = separation_weights(&t, dims, &s);
            let brute = separation_weights_brute(&t, dims, &s);
            let worst = fast.iter().zip(&brute).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-4, "seed {seed}: largest difference {worst}");
            // The map is not trivial: some voxel lies between two objects.
            assert!(fast.iter().any(|&v| v > 1.01), "seed {seed}: every voxel weighs 1");
            assert!(fast.iter().zip(&t).all(|(&v, &o)| if o > 0.5 { v == 1.0 } else { v >= 1.0 }));
        }
    }

    #[test]
    fn weighted_target_appends_each_samples_own_map() {
        // Two samples with different objects: channel 0 is the target,
        // channel 1 each sample's map, not the other's.
        let dims = [3, 3, 9];
        let mut t = vec![0f32; 2 * 81];
        t[(3 + 1) * 9 + 2] = 1.0;
        t[(3 + 1) * 9 + 6] = 1.0;
        t[81 + (3 + 1) * 9] = 1.0;
        t[81 + (3 + 1) * 9 + 8] = 1.0;
        let s = Separation { w0: 10.0, sigma: 2.0 };
        let w = weighted_target(&CpuTensor::from_vec(Shape5::new(2, 1, 3, 3, 9), t.clone()), Some(&s), None);
        assert_eq!(w.shape, Shape5::new(2, 2, 3, 3, 9));
        for n in 0..2 {
            let own = &t[n * 81..(n + 1) * 81];
            assert_eq!(&w.data[2 * n * 81..(2 * n + 1) * 81], own);
            assert_eq!(w.data[(2 * n + 1) * 81..(2 * n + 2) * 81], separation_weights(own, dims, &s)[..]);
        }
        assert_ne!(w.data[81..162], w.data[3 * 81..4 * 81]);
        // Object weights multiply each sample's map, its own, voxel by voxel.
        let o: Vec<f32> = (0..2 * 81).map(|i| 1.0 + (i % 7) as f32 * 0.5).collect();
        let ow = CpuTensor::from_vec(Shape5::new(2, 1, 3, 3, 9), o.clone());
        let both = weighted_target(&CpuTensor::from_vec(Shape5::new(2, 1, 3, 3, 9), t.clone()), Some(&s), Some(&ow));
        let alone = weighted_target(&CpuTensor::from_vec(Shape5::new(2, 1, 3, 3, 9), t.clone()), None, Some(&ow));
        for n in 0..2 {
            assert_eq!(&both.data[2 * n * 81..(2 * n + 1) * 81], &t[n * 81..(n + 1) * 81]);
            for i in 0..81 {
                let (b, a) = (both.data[(2 * n + 1) * 81 + i], alone.data[(2 * n + 1) * 81 + i]);
                assert_eq!(b, w.data[(2 * n + 1) * 81 + i] * o[n * 81 + i]);
                assert_eq!(a, o[n * 81 + i]);
            }
        }
        // The loss reads the plain target when nothing weighs it, else the weighted one.
        let plain = CpuTensor::from_vec(Shape5::new(2, 1, 3, 3, 9), t.clone());
        assert_eq!(loss_target(plain.clone(), None, None).data, t);
        assert_eq!(loss_target(plain.clone(), Some(&s), Some(&ow)).data, both.data);
        assert_eq!(loss_target(plain, None, Some(&ow)).data, alone.data);
    }

    #[test]
    fn the_gap_between_two_objects_weighs_most() {
        // Two single voxels 4 apart along x: the midpoint has d1 = d2 = 2;
        // one voxel weighs 1 everywhere.
        let dims = [3, 3, 9];
        let at = |x: usize| (3 + 1) * 9 + x; // voxel (1, 1, x)
        let mut t = vec![0f32; 81];
        t[at(2)] = 1.0;
        t[at(6)] = 1.0;
        let s = Separation { w0: 10.0, sigma: 2.0 };
        let m = separation_weights(&t, dims, &s);
        let mid = m[at(4)];
        assert!((mid - (1.0 + 10.0 * (-16.0f32 / 8.0).exp())).abs() < 1e-5, "{mid}");
        // Beside the pair (the far end of the row) it weighs less.
        assert!(m[at(8)] < mid);
        assert_eq!(m[at(2)], 1.0);
        let mut one = vec![0f32; 81];
        one[40] = 1.0;
        assert!(separation_weights(&one, dims, &s).iter().all(|&v| v == 1.0));
        assert!(Separation { w0: -1.0, sigma: 1.0 }.validate().is_err());
        assert!(Separation { w0: 1.0, sigma: 0.0 }.validate().is_err());
    }
}
