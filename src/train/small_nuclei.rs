//! Small-nucleus weights: the loss counts the markers of small nuclei more.
//! At the crowded stages BBBC050 holds nuclei of 30–150 voxels beside
//! nuclei of 1,500 (2–10 of the 40–53 nuclei of a t501 volume; 10 of the 13
//! nuclei the bundled pair missed at Emb11_t501), and the NDN answers them
//! weakly, as a shoulder of a large neighbour's response (weights/HISTORY.md,
//! "Where the crowded stage fails"). Their markers are as large as any
//! other's, but they are few and their image is faint: weighing their
//! marker voxels asks the network to answer them as it answers the rest.
//! Used through the two-channel target of
//! [`crate::ops::loss::softmax_cross_entropy`], beside the separation map
//! ([`super::separation::weighted_target`]).

use crate::error::{Error, Result};
use crate::postprocess::ccl::reference::label;
use crate::postprocess::criteria::measure;
use crate::postprocess::Connectivity;
use crate::postprocess::Grid;

/// Which nuclei are small and what their markers weigh.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmallNuclei {
    /// Weight of each voxel of a small nucleus's marker (others weigh 1).
    pub weight: f32,
    /// Nuclei under this volume (µm³, in the instance labels) are small
    /// (default [`SmallNuclei::DEFAULT_VOLUME_UM3`]).
    #[serde(default = "default_volume")]
    pub volume_um3: f32,
}

fn default_volume() -> f32 {
    SmallNuclei::DEFAULT_VOLUME_UM3
}

impl SmallNuclei {
    /// 250 µm³: about 220 voxels of BBBC050's 0.8 × 0.8 × 1.75 µm, a
    /// seventh of its median nucleus (about 2,000 voxels), above its tiny
    /// nuclei (30–150 voxels) and below all but a few others.
    pub const DEFAULT_VOLUME_UM3: f32 = 250.0;

    pub fn validate(&self) -> Result<()> {
        if !(self.weight.is_finite() && self.weight > 0.0) {
            return Err(Error::invalid(format!("small-nucleus weight {} must be a finite number > 0", self.weight)));
        }
        if !(self.volume_um3.is_finite() && self.volume_um3 > 0.0) {
            return Err(Error::invalid(format!(
                "small-nucleus volume {} µm³ must be a finite number > 0",
                self.volume_um3
            )));
        }
        Ok(())
    }
}

/// The weight map of a 0/1 marker target of `dims` (D, H, W): each
/// 26-connected object of `target > 0.5` is given to the nucleus of
/// `nuclei` (instance labels on the same grid, 0 background) at its
/// centroid, or where that voxel is background, to the nucleus holding most
/// of its voxels; the object's voxels weigh `s.weight` when that nucleus
/// is under `s.volume_um3` (its voxels on this grid times `voxel_um3`, the
/// volume of one), 1 otherwise, as does every other voxel. A marker dilated
/// past a tiny nucleus lies mostly in its neighbours, so the centroid, not
/// the majority, says whose it is.
pub fn small_nucleus_weights(
    target: &[f32],
    nuclei: &[u32],
    dims: [usize; 3],
    voxel_um3: f64,
    s: &SmallNuclei,
) -> Vec<f32> {
    let n = target.len();
    debug_assert_eq!(n, nuclei.len());
    let mut out = vec![1.0f32; n];
    let mask: Vec<u8> = target.iter().map(|&t| (t > 0.5) as u8).collect();
    let (objects, count) = label(&mask, dims, Connectivity::TwentySix);
    if count == 0 {
        return out;
    }
    let nucleus_voxels = {
        let mut v = vec![0u64; nuclei.iter().copied().max().unwrap_or(0) as usize + 1];
        nuclei.iter().for_each(|&l| v[l as usize] += 1);
        v
    };
    let [_, h, w] = dims;
    // Each object's centroid (x, y, z in voxels: unit spacing) and, for
    // the fallback, how many of its voxels lie in each nucleus.
    let measured = measure(&objects, &Grid::isotropic(dims), None).expect("labels of the target's own grid");
    let mut under: Vec<std::collections::HashMap<u32, u64>> = vec![Default::default(); count as usize + 1];
    for (i, &o) in objects.iter().enumerate() {
        if o != 0 && nuclei[i] != 0 {
            *under[o as usize].entry(nuclei[i]).or_default() += 1;
        }
    }
    let mut small = vec![false; count as usize + 1];
    for m in &measured {
        let c = m.centroid_um.map(|v| v.round() as usize);
        let at = nuclei[(c[2] * h + c[1]) * w + c[0]];
        // Ties go to the lower label, so the choice does not depend on
        // the map's order.
        let owner = if at != 0 {
            Some(at)
        } else {
            under[m.label as usize].iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(&l, _)| l)
        };
        small[m.label as usize] =
            owner.is_some_and(|l| (nucleus_voxels[l as usize] as f64 * voxel_um3) < s.volume_um3 as f64);
    }
    for (i, &o) in objects.iter().enumerate() {
        if small[o as usize] {
            out[i] = s.weight;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A box of `label` over z0..z1, y0..y1, x0..x1 of a (D, H, W) volume.
    fn fill(v: &mut [u32], dims: [usize; 3], b: [[usize; 2]; 3], l: u32) {
        let [_, h, w] = dims;
        for z in b[0][0]..b[0][1] {
            for y in b[1][0]..b[1][1] {
                for x in b[2][0]..b[2][1] {
                    v[(z * h + y) * w + x] = l;
                }
            }
        }
    }

    #[test]
    fn weighs_the_markers_of_small_nuclei_only() {
        let dims = [9usize, 13, 17];
        let n: usize = dims.iter().product();
        // A large nucleus (label 3: 6 × 9 × 8 = 432 voxels) and a small
        // one beside it (label 7: 2 voxels), touching.
        let mut nuclei = vec![0u32; n];
        fill(&mut nuclei, dims, [[1, 7], [2, 11], [1, 9]], 3);
        fill(&mut nuclei, dims, [[4, 5], [6, 7], [9, 11]], 7);
        // Markers: the large nucleus's inside it; the small one's dilated
        // past it, most of its voxels in the large nucleus and background,
        // its centroid in the small nucleus; a third marker over background.
        let mut markers = vec![0u32; n];
        fill(&mut markers, dims, [[3, 6], [4, 7], [2, 5]], 1);
        fill(&mut markers, dims, [[2, 7], [4, 9], [8, 13]], 1);
        fill(&mut markers, dims, [[0, 2], [0, 2], [14, 16]], 1);
        let target: Vec<f32> = markers.iter().map(|&m| m as f32).collect();
        let s = SmallNuclei { weight: 4.5, volume_um3: 100.0 };
        // Voxels of 2 µm³: the small nucleus is 4 µm³, the large 864. Its
        // marker has 2 voxels in it and 25 in the large one: the centroid,
        // not the majority, gives it to the small one.
        let w = small_nucleus_weights(&target, &nuclei, dims, 2.0, &s);
        let [_, h, wd] = dims;
        let at = |z: usize, y: usize, x: usize| w[(z * h + y) * wd + x];
        assert_eq!(at(4, 6, 10), 4.5, "the small nucleus's marker, at its centre");
        assert_eq!(at(2, 4, 8), 4.5, "the small nucleus's marker, in the large nucleus");
        assert_eq!(at(4, 5, 3), 1.0, "the large nucleus's marker");
        assert_eq!(at(1, 1, 15), 1.0, "a marker over background");
        assert_eq!(at(8, 12, 0), 1.0, "background");
        let weighed = w.iter().filter(|&&v| v != 1.0).count();
        assert_eq!(weighed, 5 * 5 * 5, "exactly the small nucleus's marker");
        // The same nucleus counted at a threshold under its volume: no weight.
        let s = SmallNuclei { volume_um3: 4.0, ..s };
        assert!(small_nucleus_weights(&target, &nuclei, dims, 2.0, &s).iter().all(|&v| v == 1.0));
        // A centroid over background goes to the nucleus under most of
        // the marker's labelled voxels: a marker over y 5..10, x 9..12
        // (centroid y 7, x 10: background) holding the small nucleus.
        let mut off = markers.clone();
        fill(&mut off, dims, [[2, 7], [4, 9], [8, 13]], 0);
        fill(&mut off, dims, [[3, 6], [5, 10], [9, 12]], 1);
        assert_eq!(nuclei[(4 * h + 7) * wd + 10], 0);
        let t: Vec<f32> = off.iter().map(|&m| m as f32).collect();
        let s = SmallNuclei { volume_um3: 100.0, ..s };
        let w = small_nucleus_weights(&t, &nuclei, dims, 2.0, &s);
        assert_eq!(w[(3 * h + 5) * wd + 9], 4.5);
    }

    #[test]
    fn refuses_bad_settings() {
        for (w, v) in [(0.0, 250.0), (f32::NAN, 250.0), (-1.0, 250.0), (3.0, 0.0), (3.0, f32::INFINITY)] {
            assert!(SmallNuclei { weight: w, volume_um3: v }.validate().is_err(), "{w} {v}");
        }
        SmallNuclei { weight: 3.0, volume_um3: 250.0 }.validate().unwrap();
    }
}
