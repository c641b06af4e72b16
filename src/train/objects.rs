//! Object-centred patches: where the objects of the training targets are,
//! so that a share of the training patches can be centred on one of them,
//! every object of the training set equally likely.
//!
//! Random positions show what fills the volumes. An object that fills a
//! small part of few volumes (the tiny nuclei of BBBC050's last stages:
//! 2-9 of 50 nuclei at t501, none before t401) then appears in a patch
//! once in hundreds of steps; drawn per object, each nucleus, large or
//! tiny, crowded stage or early one, is a patch's centre as often as any
//! other (nnU-Net's foreground oversampling, per object rather than per
//! voxel).

use rand::Rng;

use super::patch::Sample;
use crate::postprocess::Connectivity;

/// Every object (26-connected component of a target's foreground) of a set
/// of samples: the sample's index and the object's voxel nearest its centre
/// of mass (a voxel of the object even when it is not convex).
#[derive(Clone, Debug, PartialEq)]
pub struct Objects {
    pub centres: Vec<(usize, [usize; 3])>,
}

impl Objects {
    /// Finds the objects of every sample's target (in sample order, each
    /// sample's in label order). A sample listed several times has its
    /// objects listed as often, as it is sampled as often.
    pub fn index(samples: &[Sample]) -> Objects {
        let mut centres = Vec::new();
        for (si, s) in samples.iter().enumerate() {
            centres.extend(object_centres(&s.target.data, s.target.dims).into_iter().map(|c| (si, c)));
        }
        Objects { centres }
    }

    pub fn len(&self) -> usize {
        self.centres.len()
    }

    pub fn is_empty(&self) -> bool {
        self.centres.is_empty()
    }

    /// One object, each equally likely (None when there is none).
    pub fn pick(&self, rng: &mut impl Rng) -> Option<(usize, [usize; 3])> {
        if self.centres.is_empty() {
            None
        } else {
            Some(self.centres[rng.random_range(0..self.centres.len())])
        }
    }
}

/// The voxel of each 26-connected component of `target > 0.5` nearest the
/// component's centre of mass (ties: the first in z-y-x order), in label
/// order.
pub fn object_centres(target: &[f32], dims: [usize; 3]) -> Vec<[usize; 3]> {
    let [_, h, w] = dims;
    let mask: Vec<u8> = target.iter().map(|&v| (v > 0.5) as u8).collect();
    let (labels, n) = crate::postprocess::ccl::reference::label(&mask, dims, Connectivity::TwentySix);
    let n = n as usize;
    let coords = |i: usize| [i / (h * w), i / w % h, i % w];
    let mut sum = vec![[0f64; 3]; n];
    let mut count = vec![0usize; n];
    for (i, &l) in labels.iter().enumerate() {
        if l > 0 {
            let c = coords(i);
            let k = l as usize - 1;
            (0..3).for_each(|a| sum[k][a] += c[a] as f64);
            count[k] += 1;
        }
    }
    let mean: Vec<[f64; 3]> = sum.iter().zip(&count).map(|(s, &c)| s.map(|v| v / c.max(1) as f64)).collect();
    let mut best = vec![(f64::INFINITY, [0usize; 3]); n];
    for (i, &l) in labels.iter().enumerate() {
        if l > 0 {
            let c = coords(i);
            let k = l as usize - 1;
            let d2: f64 = (0..3).map(|a| (c[a] as f64 - mean[k][a]).powi(2)).sum();
            if d2 < best[k].0 {
                best[k] = (d2, c);
            }
        }
    }
    best.into_iter().map(|(_, c)| c).collect()
}

/// The origin along one axis of a region of `region` voxels centred on
/// voxel `centre` of an axis of `n`, moved by up to a quarter of the region
/// at random (so the object is not always at the patch's centre) and kept
/// inside the volume where the region fits (a region larger than the
/// volume covers all of it, reflected on both sides as
/// [`super::patch::extract`] does).
pub fn centred_origin(centre: usize, region: usize, n: usize, rng: &mut impl Rng) -> isize {
    let j = (region / 4) as i64;
    let shift = if j > 0 { rng.random_range(-j..=j) as isize } else { 0 };
    let o = centre as isize - (region / 2) as isize + shift;
    let (n, p) = (n as isize, region as isize);
    if n >= p {
        o.clamp(0, n - p)
    } else {
        o.clamp(n - p, 0)
    }
}
