//! Detection markers by dynamic (h-maxima): the priority-flood reconstruction
//! against the fixed-point reference on random smooth fields of odd shapes,
//! the summits kept at each dynamic on a profile worked out by hand, and the
//! detection mask's errors.

use qcanet_gpu::postprocess::markers::{detection_mask, h_maxima, reconstruct, reference, regional_maxima};
use qcanet_gpu::postprocess::Connectivity;
use rand::{Rng, SeedableRng};

/// A smooth random field in 0..1: a few Gaussian bumps of random heights and
/// widths plus a little noise (so plateaus and near-ties both occur).
fn field(dims: [usize; 3], seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let bumps: Vec<([f64; 3], f64, f64)> = (0..5)
        .map(|_| {
            let c = [0, 1, 2].map(|a| rng.random_range(0.0..dims[a] as f64));
            (c, rng.random_range(0.3..1.0), rng.random_range(1.0..3.0))
        })
        .collect();
    let mut v = Vec::with_capacity(dims.iter().product());
    for z in 0..dims[0] {
        for y in 0..dims[1] {
            for x in 0..dims[2] {
                let p = [z as f64, y as f64, x as f64];
                let s: f64 = bumps
                    .iter()
                    .map(|(c, h, w)| {
                        let d2: f64 = (0..3).map(|a| (p[a] - c[a]).powi(2)).sum();
                        h * (-d2 / (2.0 * w * w)).exp()
                    })
                    .sum();
                v.push((s.min(1.0) * 0.95 + rng.random_range(0.0..0.05)) as f32);
            }
        }
    }
    v
}

#[test]
fn reconstruction_matches_the_fixed_point_reference() {
    for (k, dims) in [[7usize, 11, 13], [5, 9, 4], [1, 17, 6], [9, 3, 8]].into_iter().enumerate() {
        let f = field(dims, 10 + k as u64);
        for conn in [Connectivity::Six, Connectivity::TwentySix] {
            for h in [0.02f32, 0.1, 0.3] {
                let seed: Vec<f32> = f.iter().map(|&v| v - h).collect();
                let fast = reconstruct(&seed, &f, dims, conn);
                let slow = reference::reconstruct(&seed, &f, dims, conn);
                assert_eq!(fast, slow, "{dims:?} {conn:?} h {h}");
                assert!(fast.iter().zip(&f).all(|(r, m)| r <= m), "above the mask");
                assert!(fast.iter().zip(&seed).all(|(r, s)| r >= s), "below the seed");
                // The markers are the regional maxima of the reconstruction,
                // by the plateau search and by the morphological definition.
                let top = h_maxima(&f, dims, h, conn);
                assert_eq!(top, regional_maxima(&fast, dims, conn), "{dims:?} {conn:?} h {h}");
                assert_eq!(top, reference::regional_maxima(&fast, dims, conn), "{dims:?} {conn:?} h {h}");
                let argmax = (0..f.len()).max_by(|&a, &b| f[a].total_cmp(&f[b])).unwrap();
                assert_eq!(top[argmax], 1, "the global maximum is always in a marker");
            }
        }
    }
}

#[test]
fn summits_are_kept_by_their_dynamic() {
    // A profile along x: summits at 1 (0.5; saddle 0.3 to the higher 0.9:
    // dynamic 0.2), 3 (0.9, the global maximum) and the plateau 5-6 (0.6;
    // saddle 0.2: dynamic 0.4). Each marker is the region within h of its
    // summit, here the summit itself.
    let f = [0.1f32, 0.5, 0.3, 0.9, 0.2, 0.6, 0.6, 0.1];
    let dims = [1, 1, f.len()];
    let on = |h: f32| -> Vec<usize> {
        let m = h_maxima(&f, dims, h, Connectivity::Six);
        (0..f.len()).filter(|&i| m[i] != 0).collect()
    };
    assert_eq!(on(0.1), vec![1, 3, 5, 6]);
    assert_eq!(on(0.3), vec![3, 5, 6]);
    assert_eq!(on(0.5), vec![3]);
    // The detection mask also needs the threshold: at 0.55 the summit at 1 goes.
    let m = detection_mask(&f, dims, 0.55, 0.1, Connectivity::Six).unwrap();
    assert_eq!(m, vec![0, 0, 0, 1, 0, 1, 1, 0]);
    // Two equal summits joined less than h below them: one marker, the
    // region within h of the summits (both peaks and the saddle).
    let g = [0.1f32, 0.9, 0.8, 0.9, 0.1];
    let m = h_maxima(&g, [1, 1, 5], 0.15, Connectivity::Six);
    assert_eq!(m, vec![0, 1, 1, 1, 0]);
    assert_eq!(h_maxima(&g, [1, 1, 5], 0.05, Connectivity::Six), vec![0, 1, 0, 1, 0]);
}

#[test]
fn zero_dynamic_is_the_plain_threshold_mask() {
    let dims = [6, 7, 9];
    let f = field(dims, 3);
    let m = detection_mask(&f, dims, 0.4, 0.0, Connectivity::TwentySix).unwrap();
    let plain: Vec<u8> = f.iter().map(|&v| u8::from(v > 0.4)).collect();
    assert_eq!(m, plain);
    assert!(m.contains(&1) && m.contains(&0), "the case tests nothing");
    // A positive dynamic keeps a subset of it.
    let h = detection_mask(&f, dims, 0.4, 0.05, Connectivity::TwentySix).unwrap();
    assert!(h.iter().zip(&m).all(|(a, b)| a <= b));
    assert!(h.iter().filter(|&&v| v == 1).count() < m.iter().filter(|&&v| v == 1).count());
}

#[test]
fn bad_inputs_are_errors() {
    let dims = [2, 3, 4];
    let f = field(dims, 4);
    let e = detection_mask(&f[1..], dims, 0.5, 0.1, Connectivity::Six).unwrap_err().to_string();
    assert!(e.contains("23 probabilities"), "{e}");
    for (t, h) in [(0.5, -0.1), (0.5, f32::NAN), (f32::INFINITY, 0.1)] {
        assert!(detection_mask(&f, dims, t, h, Connectivity::Six).is_err(), "threshold {t}, dynamic {h}");
    }
}
