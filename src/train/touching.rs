//! A segmentation target that keeps touching nuclei apart.
//!
//! `images_nsn/` joins touching nuclei into one blob, so an NSN learns to
//! draw none of the borders between them, and at the crowded stages a tiny
//! nucleus pressed against a large one is found only if the NDN gives it a
//! marker of its own, which it rarely does (weights/HISTORY.md, "Where the
//! crowded stage fails"). Made from the instance labels instead, with the
//! contact layer between every two touching nuclei taken out, the target
//! asks the NSN for a one-voxel gap there, the borders the U-Net paper's
//! weight map was made for ([`super::separation`] then weighs that gap).
//! Each component of such a mask is one nucleus, so the components no
//! marker reaches may be labelled as nuclei of their own (`calibrate
//! --label-unmarked on`, [`crate::model::weights::WeightsMeta::label_unmarked`]);
//! they include polar bodies (weights/HISTORY.md, "An NSN that keeps
//! touching nuclei apart").

use crate::postprocess::Connectivity;

/// The 0/1 target of the instance labels `nuclei` (0 background) of `dims`
/// (D, H, W): every labelled voxel, except where a nucleus touches a smaller
/// one (a 26-neighbour with another non-zero label that has fewer voxels, or
/// as many and a lower label): the larger of two touching nuclei gives up
/// its contact layer, so no two nuclei stay 26-connected and a small nucleus
/// keeps its whole outline. A voxel of nucleus `a` beside `b` is removed
/// when `(size b, b) < (size a, a)`; were two voxels of different nuclei
/// both kept and adjacent, the one of the larger would have been removed.
pub fn separated_nuclei(nuclei: &[u32], dims: [usize; 3]) -> Vec<f32> {
    assert_eq!(nuclei.len(), dims.iter().product::<usize>(), "labels of {dims:?}");
    let max = nuclei.iter().copied().max().unwrap_or(0) as usize;
    let mut size = vec![0u64; max + 1];
    for &l in nuclei {
        size[l as usize] += 1;
    }
    let rank = |l: u32| (size[l as usize], l);
    let offs = Connectivity::TwentySix.offsets();
    (0..nuclei.len())
        .map(|i| {
            let l = nuclei[i];
            let gone = l == 0
                || Connectivity::neighbours(&offs, dims, i).any(|j| {
                    let m = nuclei[j];
                    m != 0 && m != l && rank(m) < rank(l)
                });
            if gone {
                0.0
            } else {
                1.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postprocess::ccl::reference::label;
    use rand::{Rng, SeedableRng};

    /// Random touching balls of random radii (odd shape), labelled in the
    /// order drawn; later balls overwrite earlier ones where they overlap.
    fn balls(dims: [usize; 3], n: usize, seed: u64) -> Vec<u32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let [d, h, w] = dims;
        let mut l = vec![0u32; d * h * w];
        for k in 1..=n as u32 {
            let c = [rng.random_range(0..d) as f32, rng.random_range(0..h) as f32, rng.random_range(0..w) as f32];
            let r: f32 = rng.random_range(1.0..5.0);
            for z in 0..d {
                for y in 0..h {
                    for x in 0..w {
                        let q = [z as f32 - c[0], y as f32 - c[1], x as f32 - c[2]];
                        if q.iter().map(|v| v * v).sum::<f32>() <= r * r {
                            l[(z * h + y) * w + x] = k;
                        }
                    }
                }
            }
        }
        l
    }

    #[test]
    fn touching_nuclei_come_apart_and_the_smaller_keeps_its_outline() {
        let dims = [13, 17, 19];
        for seed in 0..6 {
            let l = balls(dims, 14, seed);
            let t = separated_nuclei(&l, dims);
            let mut size = std::collections::HashMap::new();
            for &v in &l {
                *size.entry(v).or_insert(0u64) += 1;
            }
            let mut touching = 0;
            let offs = Connectivity::TwentySix.offsets();
            for i in 0..l.len() {
                // Only labelled voxels are kept.
                assert!(t[i] == 0.0 || l[i] != 0, "seed {seed}: background voxel {i} in the target");
                let mut beside_smaller = false;
                for j in Connectivity::neighbours(&offs, dims, i) {
                    let (a, b) = (l[i], l[j]);
                    if a != 0 && b != 0 && a != b {
                        touching += 1;
                        // No two kept voxels of different nuclei are neighbours.
                        assert!(t[i] == 0.0 || t[j] == 0.0, "seed {seed}: nuclei {a} and {b} still touch at {i}, {j}");
                        beside_smaller |= (size[&b], b) < (size[&a], a);
                    }
                }
                // A nucleus's voxel goes exactly where it lies beside a smaller nucleus.
                if l[i] != 0 {
                    assert_eq!(t[i] == 0.0, beside_smaller, "seed {seed}: voxel {i} of nucleus {}", l[i]);
                }
            }
            assert!(touching > 0, "seed {seed}: the balls should touch somewhere");
            // Each nucleus left is its own 26-connected component or several, never shared.
            let mask: Vec<u8> = t.iter().map(|&v| (v > 0.5) as u8).collect();
            let (cc, n) = label(&mask, dims, Connectivity::TwentySix);
            let mut owner = vec![0u32; n as usize + 1];
            for i in 0..l.len() {
                if cc[i] != 0 {
                    let o = &mut owner[cc[i] as usize];
                    assert!(*o == 0 || *o == l[i], "seed {seed}: component {} holds nuclei {o} and {}", cc[i], l[i]);
                    *o = l[i];
                }
            }
        }
    }

    #[test]
    fn a_small_nucleus_against_a_large_one_stays_whole() {
        // A 3×3×3 nucleus (2) pressed against a large slab (1), a lone nucleus (3) away from both.
        let dims = [7, 9, 11];
        let [_, h, w] = dims;
        let mut l = vec![0u32; 7 * 9 * 11];
        for z in 0..7 {
            for y in 0..9 {
                for x in 0..11 {
                    let i = (z * h + y) * w + x;
                    if x < 5 {
                        l[i] = 1;
                    } else if (2..5).contains(&z) && (3..6).contains(&y) && (5..8).contains(&x) {
                        l[i] = 2;
                    } else if z == 5 && y == 7 && x == 10 {
                        l[i] = 3;
                    }
                }
            }
        }
        let t = separated_nuclei(&l, dims);
        for (i, (&a, &v)) in l.iter().zip(&t).enumerate() {
            let x = i % w;
            match a {
                2 | 3 => assert_eq!(v, 1.0, "voxel {i} of nucleus {a}"),
                // The slab loses only its column x = 4 where the small nucleus (y 3..6, z 2..5, grown by one) lies beside it.
                1 => {
                    let (z, y) = (i / (h * w), i / w % h);
                    let contact = x == 4 && (1..6).contains(&z) && (2..7).contains(&y);
                    assert_eq!(v, if contact { 0.0 } else { 1.0 }, "voxel {i} of the slab");
                }
                _ => assert_eq!(v, 0.0),
            }
        }
    }
}
