//! Detection markers from the NDN's probability.
//!
//! QCANet's markers are the connected components of the NDN's thresholded
//! probability. Where nuclei crowd, the blobs of two neighbouring centres
//! touch above the threshold and become one marker, and the watershed then
//! gives the two nuclei one label. With a *dynamic* `h > 0`, the detection
//! mask keeps only the summits of the probability whose dynamic is at least
//! `h` (the h-maxima: regional maxima of the reconstruction by dilation of
//! `p − h` under `p`, Soille, *Morphological Image Analysis*, 6.3.4): two
//! centres separated by a saddle at least `h` below the lower of them stay
//! two markers, and a bump of less than `h` on a slope is no marker. `h = 0`
//! gives the plain threshold mask, QCANet's original markers.
//!
//! Plain Rust on the CPU: a priority flood, O(n log n) in the voxels (about
//! 0.3 s for a BBBC050 volume); [`reference`](mod@reference) is the obviously-correct fixed
//! point iteration the tests hold it to.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::Connectivity;
use crate::error::{Error, Result};

/// The detection mask: `p > threshold`, and with `dynamic > 0` only on the
/// h-maxima of `p` for `h = dynamic` (connectivity `conn`).
///
/// Errors: `p`'s length differs from `dims`, or a threshold or dynamic that
/// is not finite, or a dynamic below 0.
pub fn detection_mask(
    p: &[f32],
    dims: [usize; 3],
    threshold: f32,
    dynamic: f32,
    conn: Connectivity,
) -> Result<Vec<u8>> {
    let n: usize = dims.iter().product();
    if p.len() != n {
        return Err(Error::shape(
            "detection_mask",
            format!("{} probabilities for a volume of {dims:?} ({n} voxels)", p.len()),
        ));
    }
    if !(threshold.is_finite() && dynamic.is_finite() && dynamic >= 0.0) {
        return Err(Error::invalid(format!(
            "detection threshold {threshold} and marker dynamic {dynamic} must be finite, the dynamic at least 0"
        )));
    }
    let summits = (dynamic > 0.0).then(|| h_maxima(p, dims, dynamic, conn));
    Ok(above_on(p, threshold, summits.as_deref()))
}

/// `p > threshold` as a 0/1 mask, and where `summits` is given only on its
/// non-zero voxels: [`detection_mask`] with the h-maxima computed once by the
/// caller (calibration tries many thresholds per dynamic). Lengths must agree.
pub fn above_on(p: &[f32], threshold: f32, summits: Option<&[u8]>) -> Vec<u8> {
    match summits {
        None => p.iter().map(|&v| u8::from(v > threshold)).collect(),
        Some(s) => p.iter().zip(s).map(|(&v, &s)| u8::from(v > threshold && s != 0)).collect(),
    }
}

/// The h-maxima of `f` (`h > 0`): 1 on the regional maxima of the
/// reconstruction by dilation of `f − h` under `f`. Each summit of `f` whose
/// dynamic (how far one must descend from it to reach a higher summit) is at
/// least `h` gives one marker: the connected region around it within `h` of
/// its height; lower summits give none. Two summits of equal height joined
/// above both heights minus `h` give one marker.
pub fn h_maxima(f: &[f32], dims: [usize; 3], h: f32, conn: Connectivity) -> Vec<u8> {
    let seed: Vec<f32> = f.iter().map(|&v| v - h).collect();
    regional_maxima(&reconstruct(&seed, f, dims, conn), dims, conn)
}

/// 1 on every voxel of a regional maximum of `r`: a connected plateau of
/// equal values with no neighbour higher.
pub fn regional_maxima(r: &[f32], dims: [usize; 3], conn: Connectivity) -> Vec<u8> {
    let offs = conn.offsets();
    let mut out = vec![0u8; r.len()];
    let mut seen = vec![false; r.len()];
    let mut plateau = Vec::new();
    for start in 0..r.len() {
        if seen[start] {
            continue;
        }
        seen[start] = true;
        plateau.clear();
        plateau.push(start);
        let mut is_max = true;
        let mut k = 0;
        while k < plateau.len() {
            let i = plateau[k];
            k += 1;
            for j in Connectivity::neighbours(&offs, dims, i) {
                if r[j] > r[i] {
                    is_max = false;
                } else if r[j] == r[i] && !seen[j] {
                    seen[j] = true;
                    plateau.push(j);
                }
            }
        }
        if is_max {
            plateau.iter().for_each(|&i| out[i] = 1);
        }
    }
    out
}

/// Order-preserving key of an f32 (total order, NaN last).
fn key(v: f32) -> u32 {
    let b = v.to_bits();
    if b >> 31 == 1 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Reconstruction by dilation of `seed` under `mask` (`seed ≤ mask`): the
/// largest `r ≤ mask` with `r ≥ seed` such that every voxel's value is
/// reachable from a seed through voxels of `mask` at least as high. Priority
/// flood from the highest values (each voxel settled once; values are copies
/// of `seed` or `mask` values, never computed).
pub fn reconstruct(seed: &[f32], mask: &[f32], dims: [usize; 3], conn: Connectivity) -> Vec<f32> {
    let offs = conn.offsets();
    let mut r: Vec<f32> = seed.iter().zip(mask).map(|(&s, &m)| s.min(m)).collect();
    let mut heap: BinaryHeap<(u32, Reverse<u32>)> =
        r.iter().enumerate().map(|(i, &v)| (key(v), Reverse(i as u32))).collect();
    while let Some((k, Reverse(i))) = heap.pop() {
        let i = i as usize;
        if k != key(r[i]) {
            continue; // stale entry: raised since it was pushed
        }
        let v = r[i];
        for j in Connectivity::neighbours(&offs, dims, i) {
            let nv = v.min(mask[j]);
            if nv > r[j] {
                r[j] = nv;
                heap.push((key(nv), Reverse(j as u32)));
            }
        }
    }
    r
}

/// Reference for the tests: the reconstruction as the fixed point of
/// `r ← min(mask, max(r, max over neighbours of r))`, iterated until nothing
/// changes (slow: one voxel of propagation per sweep).
pub mod reference {
    use super::Connectivity;

    pub fn reconstruct(seed: &[f32], mask: &[f32], dims: [usize; 3], conn: Connectivity) -> Vec<f32> {
        let offs = conn.offsets();
        fixed_point(seed, mask, dims, &offs)
    }

    fn fixed_point(seed: &[f32], mask: &[f32], dims: [usize; 3], offs: &[[i64; 3]]) -> Vec<f32> {
        let mut r: Vec<f32> = seed.iter().zip(mask).map(|(&s, &m)| s.min(m)).collect();
        loop {
            let next: Vec<f32> = (0..r.len())
                .map(|i| {
                    let up = Connectivity::neighbours(offs, dims, i).map(|j| r[j]).fold(r[i], f32::max);
                    up.min(mask[i])
                })
                .collect();
            if next == r {
                return r;
            }
            r = next;
        }
    }

    /// Regional maxima by their morphological definition: `r − R_r(r − ε) > 0`
    /// with ε below every positive difference between values of `r` (a
    /// voxel is on a regional maximum exactly when lowering `r` by ε and
    /// reconstructing does not bring it back).
    pub fn regional_maxima(r: &[f32], dims: [usize; 3], conn: Connectivity) -> Vec<u8> {
        let mut v: Vec<f64> = r.iter().map(|&x| x as f64).collect();
        v.sort_by(f64::total_cmp);
        v.dedup();
        let gap = v.windows(2).map(|w| w[1] - w[0]).fold(1.0f64, f64::min);
        // Work in f64 so r − ε is exact enough for any gap of f32 values.
        let offs = conn.offsets();
        let rf: Vec<f64> = r.iter().map(|&x| x as f64).collect();
        let mut low: Vec<f64> = rf.iter().map(|&x| x - gap / 2.0).collect();
        loop {
            let next: Vec<f64> = (0..low.len())
                .map(|i| Connectivity::neighbours(&offs, dims, i).map(|j| low[j]).fold(low[i], f64::max).min(rf[i]))
                .collect();
            if next == low {
                break;
            }
            low = next;
        }
        rf.iter().zip(&low).map(|(a, b)| u8::from(a > b)).collect()
    }
}
