//! Normalisation, z-resampling, mirror padding and cropping against
//! obviously-correct references on random odd-shaped volumes.

use qcanet_gpu::preprocess::{self, Interp, NetGrid, Normalization};
use rand::{Rng, SeedableRng};

fn random(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(lo..hi)).collect()
}

/// NumPy-style percentile by full sort.
fn percentile_ref(data: &[f32], p: f64) -> f64 {
    let mut v: Vec<f64> = data.iter().map(|&x| x as f64).collect();
    v.sort_by(f64::total_cmp);
    let pos = p / 100.0 * (v.len() - 1) as f64;
    let i = pos.floor() as usize;
    let j = (i + 1).min(v.len() - 1);
    v[i] + (pos - i as f64) * (v[j] - v[i])
}

#[test]
fn percentile_matches_sorted_reference() {
    for (n, seed) in [(1usize, 1u64), (2, 2), (7, 3), (1001, 4), (7 * 9 * 11, 5)] {
        let d = random(n, seed, -50.0, 300.0);
        for p in [0.0f32, 1.0, 12.5, 50.0, 99.8, 100.0] {
            let got = preprocess::percentile(&d, p) as f64;
            let want = percentile_ref(&d, p as f64);
            assert!((got - want).abs() <= 1e-4 * want.abs().max(1.0), "n={n} p={p}: {got} vs {want}");
        }
    }
}

#[test]
fn percentile_normalisation_maps_percentiles_to_0_and_1_without_clipping() {
    let mut d = random(5 * 7 * 9, 6, 90.0, 4200.0);
    // A few hot voxels, as in a real stack.
    d[3] = 20_000.0;
    d[100] = 15_000.0;
    let n = Normalization::Percentile { low: 1.0, high: 99.8 };
    let (lo, hi) = (percentile_ref(&d, 1.0), percentile_ref(&d, 99.8));
    let orig = d.clone();
    preprocess::normalize(&mut d, n);
    for (o, v) in orig.iter().zip(&d) {
        let want = (*o as f64 - lo) / (hi - lo);
        assert!((*v as f64 - want).abs() < 1e-5 * want.abs().max(1.0), "{o} → {v}, want {want}");
    }
    assert!((preprocess::percentile(&d, 1.0)).abs() < 1e-5);
    assert!((preprocess::percentile(&d, 99.8) - 1.0).abs() < 1e-5);
    assert!(d.iter().cloned().fold(f32::MIN, f32::max) > 1.0, "not clipped above");
    assert!(d.iter().cloned().fold(f32::MAX, f32::min) < 0.0, "not clipped below");
    let (rl, rh) = preprocess::normalization_range(&orig, n);
    assert!((rl as f64 - lo).abs() < 1e-5 * lo.abs() && (rh as f64 - hi).abs() < 1e-5 * hi.abs(), "{rl} {rh}");
}

/// A bright "nucleus" (a cube of random intensities 800-1,200 counts) in a
/// background of 80-120 counts, as a crop of `side` voxels a side around
/// it, or the same with `pad` times the width and height of background.
fn nucleus_in_field(side: usize, pad: usize, seed: u64) -> (Vec<f32>, [usize; 3]) {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let dims = [side, side * pad, side * pad];
    let (c0, c1) = (side * pad / 2 - side / 6, side * pad / 2 + side / 6);
    let (z0, z1) = (side / 2 - side / 6, side / 2 + side / 6);
    let mut v = vec![0f32; dims.iter().product()];
    for (i, x) in v.iter_mut().enumerate() {
        let (z, y, xx) = (i / (dims[1] * dims[2]), (i / dims[2]) % dims[1], i % dims[2]);
        let inside = (z0..z1).contains(&z) && (c0..c1).contains(&y) && (c0..c1).contains(&xx);
        *x = if inside { r.random_range(800.0..1200.0) } else { r.random_range(80.0..120.0) };
    }
    (v, dims)
}

#[test]
fn high_anchor_stays_on_the_nuclei_of_a_wider_field() {
    let n = Normalization::default();
    // Voxels of 10 µm³: a 33³ crop holds 359,370 µm³, under the cap's
    // 1.25 million, so its range is the plain percentiles' to the bit.
    let um3 = 10.0;
    let (crop, _) = nucleus_in_field(33, 1, 21);
    assert_eq!(preprocess::stack_normalization_range(&crop, n, um3), preprocess::normalization_range(&crop, n));
    let (_, crop_hi) = preprocess::normalization_range(&crop, n);
    assert!(crop_hi > 800.0, "the crop's 99.8th percentile lies on the nucleus: {crop_hi}");
    // Four times the width and height (5.7 million µm³): the plain 99.8th
    // percentile falls into the background, the capped anchor stays on the
    // nucleus, at the percentile that leaves 2,500 µm³ above it.
    let (wide, dims) = nucleus_in_field(33, 4, 22);
    let (_, plain_hi) = preprocess::normalization_range(&wide, n);
    assert!(plain_hi < 130.0, "the plain anchor of the wide field is background: {plain_hi}");
    let (lo, hi) = preprocess::stack_normalization_range(&wide, n, um3);
    let p = 100.0 * (1.0 - preprocess::HIGH_ANCHOR_UM3 / (wide.len() as f64 * um3));
    let want = percentile_ref(&wide, p);
    assert!((hi as f64 - want).abs() <= 1e-3 * want, "capped anchor {hi}, want the {p}th percentile {want}");
    assert!(hi > 800.0, "the capped anchor lies on the nucleus: {hi}");
    assert!((lo as f64 - percentile_ref(&wide, 1.0)).abs() < 1e-3, "the low anchor is the plain 1st percentile");
    // A network sees the wide field through these anchors (voxels of
    // 2 × 2 × 2.5 = 10 µm³ on a grid of 2 µm pixels that keeps z: nothing
    // resampled); the noise estimate measures against the same range.
    let grid = NetGrid { pixel_um: 2.0, isotropic: false };
    let (w, wd) = preprocess::for_network(wide.clone(), dims, [2.0, 2.0, 2.5], grid, n).unwrap();
    assert_eq!(wd, dims);
    let k = wide.iter().position(|&x| x > 800.0).unwrap();
    let want = (wide[k] as f64 - lo as f64) / (hi as f64 - lo as f64);
    assert!((w[k] as f64 - want).abs() < 1e-5, "{} vs {want}", w[k]);
    let plain = preprocess::noise_sigma(&wide, dims, n, None);
    let capped = preprocess::noise_sigma(&wide, dims, n, Some(um3));
    assert!(capped < plain / 5.0, "noise relative to the nuclei's range: {capped} (plain range: {plain})");
}

#[test]
fn padding_is_shown_as_the_images_background() {
    let n = Normalization::default();
    // The nucleus-in-a-field crop, framed by 6 voxels of zeros in y and x
    // (over half the voxels): as a registered or stitched stack's corners.
    let (crop, cd) = nucleus_in_field(21, 1, 31);
    let f = 6;
    let dims = [cd[0], cd[1] + 2 * f, cd[2] + 2 * f];
    let mut framed = vec![0f32; dims.iter().product()];
    for z in 0..cd[0] {
        for y in 0..cd[1] {
            let src = &crop[(z * cd[1] + y) * cd[2]..][..cd[2]];
            framed[(z * dims[1] + y + f) * dims[2] + f..][..cd[2]].copy_from_slice(src);
        }
    }
    assert_eq!(preprocess::padding_value(&framed), Some(0.0));
    assert_eq!(preprocess::padding_value(&crop), None, "a noisy background is not padding");
    // Filled with the rest's 1st percentile: the crop's background level.
    let mut filled = framed.clone();
    let (pad, level) = preprocess::fill_padding(&mut filled, n).unwrap();
    let want = percentile_ref(&crop, 1.0);
    assert_eq!(pad, 0.0);
    assert!((level as f64 - want).abs() < 1e-3, "padding filled with {level}, want the crop's 1st percentile {want}");
    assert!(filled.iter().all(|&x| x >= 80.0), "no padding left");
    // On the network's grid (no resampling: 1 µm voxels, a 1 µm grid), the
    // framed stack's background maps to about 0 as the crop's does, and the
    // frame to exactly 0; without the fill its low anchor would be 0 and the
    // background would sit near 0.1.
    let grid = NetGrid { pixel_um: 1.0, isotropic: true };
    let (x, xd) = preprocess::for_network(framed.clone(), dims, [1.0; 3], grid, n).unwrap();
    assert_eq!(xd, dims);
    assert_eq!(x[0], 0.0, "the frame is background");
    let (lo, hi) = preprocess::normalization_range(&framed, n);
    assert_eq!(lo, 0.0, "the plain low anchor of the framed stack is the padding");
    let k = (7 * dims[1] + f + 1) * dims[2] + f + 1; // a background voxel of the image
    assert!(framed[k] < 130.0);
    assert!((x[k] as f64) < 0.05, "image background at {} (plain anchors: {})", x[k], (framed[k] - lo) / (hi - lo));
    assert!((framed[k] - lo) / (hi - lo) > 0.06);
    // A stack without padding is normalised exactly as before.
    let (y, _) = preprocess::for_network(crop.clone(), cd, [1.0; 3], grid, n).unwrap();
    let mut z = crop.clone();
    preprocess::normalize(&mut z, n);
    assert_eq!(y, z);
    // The lowest value held by 1 % of the voxels or fewer is image, not padding.
    let mut few = crop.clone();
    let m = few.len() / 100;
    few[..m].iter_mut().for_each(|x| *x = 0.0);
    assert_eq!(preprocess::padding_value(&few), None);
    few[m] = 0.0;
    assert_eq!(preprocess::padding_value(&few), Some(0.0));
    // All padding: nothing else to take a level from.
    assert_eq!(preprocess::fill_padding(&mut [3.0; 50], n), None);
}

#[test]
fn minmax_normalisation_and_constant_images() {
    let mut d = random(3 * 5 * 7, 7, -3.0, 11.0);
    preprocess::normalize(&mut d, Normalization::MinMax);
    let (mn, mx) = d.iter().fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    assert!(mn.abs() < 1e-6 && (mx - 1.0).abs() < 1e-6, "{mn} {mx}");
    for n in [Normalization::MinMax, Normalization::default()] {
        let mut c = vec![417.0f32; 99];
        preprocess::normalize(&mut c, n);
        assert!(c.iter().all(|&x| x == 0.0), "constant image must give zeros, got {:?}", &c[..3]);
        let mut e: Vec<f32> = vec![];
        preprocess::normalize(&mut e, n);
    }
    // Mostly-constant image (percentiles coincide) gives zeros, never NaN.
    let mut m = vec![5.0f32; 1000];
    m[0] = 9.0;
    preprocess::normalize(&mut m, Normalization::default());
    assert!(m.iter().all(|x| x.is_finite()));
}

#[test]
fn normalization_parses_and_serialises() {
    assert_eq!("minmax".parse::<Normalization>().unwrap(), Normalization::MinMax);
    assert_eq!("percentile".parse::<Normalization>().unwrap(), Normalization::default());
    assert_eq!("2,99.5".parse::<Normalization>().unwrap(), Normalization::Percentile { low: 2.0, high: 99.5 });
    assert_eq!("1..99.8".parse::<Normalization>().unwrap(), Normalization::default());
    for bad in ["", "50,40", "1,101", "x,y", "1"] {
        assert!(bad.parse::<Normalization>().is_err(), "{bad}");
    }
    let s = serde_json::to_string(&Normalization::default()).unwrap();
    assert_eq!(serde_json::from_str::<Normalization>(&s).unwrap(), Normalization::default());
}

#[test]
fn linear_z_resampling_is_exact_on_a_ramp() {
    let dims = [7usize, 5, 3];
    let (a, b, c) = (1.75f64, -0.5, 0.25);
    let f = |z: f64, y: usize, x: usize| a * z + b * y as f64 + c * x as f64 + 10.0;
    let mut data = vec![0f32; 7 * 5 * 3];
    for z in 0..7 {
        for y in 0..5 {
            for x in 0..3 {
                data[(z * 5 + y) * 3 + x] = f(z as f64, y, x) as f32;
            }
        }
    }
    for new_d in [15usize, 16, 4, 7, 1] {
        let out = preprocess::resample(data.clone(), dims, [new_d, 5, 3], Interp::Linear);
        assert_eq!(out.len(), new_d * 15);
        let mut inside = 0;
        for z in 0..new_d {
            let s = preprocess::source_z(z, 7, new_d);
            let sc = s.clamp(0.0, 6.0);
            inside += (s == sc) as usize;
            for y in 0..5 {
                for x in 0..3 {
                    let want = f(sc, y, x);
                    let got = out[(z * 5 + y) * 3 + x] as f64;
                    assert!((got - want).abs() < 1e-5, "new_d={new_d} z={z}: {got} vs {want}");
                }
            }
        }
        assert!(inside >= new_d.min(3), "ramp test must cover interior slices");
    }
    // Same depth is the identity.
    assert_eq!(preprocess::resample(data.clone(), dims, dims, Interp::Linear), data);
}

#[test]
fn nearest_z_resampling_keeps_label_values_and_round_trips() {
    let dims = [9usize, 4, 5];
    let mut r = rand::rngs::StdRng::seed_from_u64(8);
    // Label values up to 70,000: exact in f32.
    let labels: Vec<f32> = (0..9 * 20).map(|_| r.random_range(0..70_000) as f32).collect();
    for new_d in [20usize, 19, 9, 5, 2] {
        let up = preprocess::resample(labels.clone(), dims, [new_d, 4, 5], Interp::Nearest);
        // Every output slice is one whole input slice.
        for z in 0..new_d {
            let sl = &up[z * 20..(z + 1) * 20];
            assert!((0..9).any(|k| sl == &labels[k * 20..(k + 1) * 20]), "slice {z} is not a source slice");
        }
        if new_d >= 9 {
            // Up then back down with nearest is the identity (what inference does with labels).
            assert_eq!(preprocess::resample(up, [new_d, 4, 5], dims, Interp::Nearest), labels, "new_d={new_d}");
        }
    }
}

#[test]
fn network_grid_sizes() {
    let iso = NetGrid { pixel_um: 0.8, isotropic: true };
    // The example embryos: x and y kept, 51 slices of 1.75 µm -> 112.
    assert_eq!(iso.dims([51, 120, 124], [0.8, 0.8, 1.75]), [112, 120, 124]);
    assert_eq!(NetGrid { pixel_um: 1.0, isotropic: true }.dims([10, 7, 9], [1.0, 1.0, 1.0]), [10, 7, 9]);
    assert_eq!(NetGrid { pixel_um: 2.0, isotropic: true }.dims([3, 4, 4], [2.0, 2.0, 0.1]), [1, 4, 4]);
    // Pixels of 0.4 µm (x) and 0.5 µm (y): x and y shrink to the network's
    // 0.8 µm, z as before; anisotropic networks keep the slices.
    assert_eq!(iso.dims([51, 200, 300], [0.4, 0.5, 1.75]), [112, 125, 150]);
    assert_eq!(NetGrid { pixel_um: 0.8, isotropic: false }.dims([51, 200, 300], [0.4, 0.5, 1.75]), [51, 125, 150]);
    // A voxel size that is not a size leaves the axis as it is.
    assert_eq!(iso.dims([5, 6, 7], [f64::NAN, 0.8, 0.0]), [5, 6, 7]);
}

#[test]
fn network_grid_voxels_are_the_extent_over_the_new_sizes() {
    let close = |a: [f64; 3], b: [f64; 3]| a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-12);
    let iso = NetGrid { pixel_um: 0.8, isotropic: true };
    // 51 slices of 1.75 µm on 112: 89.25 µm / 112; x and y kept at 0.8.
    let v = iso.voxel_um([51, 120, 124], [0.8, 0.8, 1.75]);
    assert!(close(v, [51.0 * 1.75 / 112.0, 0.8, 0.8]), "{v:?}");
    // 300 pixels of 0.4 µm in x on 150, 200 of 0.5 µm in y on 125 (exact);
    // an anisotropic grid keeps the slices and their thickness.
    let v = NetGrid { pixel_um: 0.8, isotropic: false }.voxel_um([51, 200, 300], [0.4, 0.5, 1.75]);
    assert!(close(v, [1.75, 0.8, 0.8]), "{v:?}");
    // 7 slices of 0.3 µm on round(2.625) = 3: 0.7 µm each, not the pixel.
    let v = iso.voxel_um([7, 10, 10], [0.8, 0.8, 0.3]);
    assert!(close(v, [0.7, 0.8, 0.8]), "{v:?}");
    // Every axis's extent is kept: voxel times the new size is the old extent.
    for (dims, vox) in [([51, 129, 127], [0.8, 0.8, 1.75]), ([13, 33, 41], [0.55, 1.3, 2.0])] {
        let nd = iso.dims(dims, vox);
        let v = iso.voxel_um(dims, vox);
        for k in 0..3 {
            assert!((v[k] * nd[k] as f64 - vox[2 - k] * dims[k] as f64).abs() < 1e-9, "{dims:?} {vox:?} axis {k}");
        }
    }
}

#[test]
fn resampling_every_axis_is_trilinear_and_exact_on_a_ramp() {
    // f linear in z, y and x: trilinear resampling reproduces it wherever
    // the source coordinate is inside the stack (edge mode clamps outside).
    let dims = [5usize, 6, 7];
    let f = |z: f64, y: f64, x: f64| 1.75 * z - 0.5 * y + 0.25 * x + 10.0;
    let mut data = vec![0f32; 5 * 6 * 7];
    for z in 0..5 {
        for y in 0..6 {
            for x in 0..7 {
                data[(z * 6 + y) * 7 + x] = f(z as f64, y as f64, x as f64) as f32;
            }
        }
    }
    for new in [[9usize, 11, 4], [5, 13, 7], [2, 6, 15], [5, 6, 7]] {
        let out = preprocess::resample(data.clone(), dims, new, Interp::Linear);
        assert_eq!(out.len(), new.iter().product::<usize>());
        let src = |i: usize, a: usize| preprocess::source_z(i, dims[a], new[a]).clamp(0.0, (dims[a] - 1) as f64);
        for z in 0..new[0] {
            for y in 0..new[1] {
                for x in 0..new[2] {
                    let want = f(src(z, 0), src(y, 1), src(x, 2));
                    let got = out[(z * new[1] + y) * new[2] + x] as f64;
                    assert!((got - want).abs() < 1e-4, "{new:?} at {z},{y},{x}: {got} vs {want}");
                }
            }
        }
    }
    // Same size: the identity.
    assert_eq!(preprocess::resample(data.clone(), dims, dims, Interp::Linear), data);
    // Nearest keeps values and, up then down, gives the labels back (what
    // inference does with a network's probabilities on a finer grid).
    let mut r = rand::rngs::StdRng::seed_from_u64(9);
    let labels: Vec<f32> = (0..5 * 6 * 7).map(|_| r.random_range(0..1000) as f32).collect();
    let up = preprocess::resample(labels.clone(), dims, [11, 13, 15], Interp::Nearest);
    assert!(up.iter().all(|v| labels.contains(v)));
    assert_eq!(preprocess::resample(up, [11, 13, 15], dims, Interp::Nearest), labels);
}

#[test]
fn reflect_padding_matches_definition_and_crop_undoes_it() {
    // 1-D definition: d c b | a b c d | c b a
    let idx: Vec<usize> = (-3..7).map(|i| preprocess::reflect_index(i, 4)).collect();
    assert_eq!(idx, vec![3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
    assert_eq!(preprocess::reflect_index(-5, 1), 0);
    assert_eq!(preprocess::reflect_index(9, 3), 1); // period 4 → 9 ≡ 1

    let dims = [3usize, 5, 4];
    let data = random(60, 9, -1.0, 1.0);
    let (before, after) = ([2usize, 1, 7], [4usize, 0, 3]); // larger than the axis on purpose
    let p = preprocess::pad_reflect(&data, dims, before, after);
    let nd = [9usize, 6, 14];
    assert_eq!(p.len(), nd.iter().product::<usize>());
    for z in 0..nd[0] {
        for y in 0..nd[1] {
            for x in 0..nd[2] {
                let s = |i: usize, b: usize, n: usize| preprocess::reflect_index(i as isize - b as isize, n);
                let want = data[(s(z, 2, 3) * 5 + s(y, 1, 5)) * 4 + s(x, 7, 4)];
                assert_eq!(p[(z * nd[1] + y) * nd[2] + x], want);
            }
        }
    }
    assert_eq!(preprocess::crop(&p, nd, before, dims), data);

    // Crop then paste back restores the region.
    let c = preprocess::crop(&data, dims, [1, 2, 1], [2, 3, 2]);
    assert_eq!(c.len(), 12);
    assert_eq!(c[0], data[(5 + 2) * 4 + 1]);
    let mut z = vec![0f32; 60];
    preprocess::paste(&mut z, dims, &c, [1, 2, 1], [2, 3, 2]);
    assert_eq!(preprocess::crop(&z, dims, [1, 2, 1], [2, 3, 2]), c);
    assert_eq!(z.iter().filter(|&&v| v != 0.0).count(), 12);
    // Works for label types too.
    let l: Vec<u32> = (0..60).collect();
    assert_eq!(preprocess::crop(&preprocess::pad_reflect(&l, dims, [1; 3], [1; 3]), [5, 7, 6], [1; 3], dims), l);
}

#[test]
fn noise_estimate_recovers_added_noise_and_ignores_smooth_structure() {
    use rand_distr::{Distribution, Normal};
    // Smooth blobs (nucleus-like, 0..1000 counts over a 100-count
    // background) on a 24 x 40 x 44 grid, then Gaussian noise of known σ.
    let dims = [24usize, 40, 44];
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let centres: Vec<[f64; 3]> = (0..6)
        .map(|_| [rng.random_range(4.0..20.0), rng.random_range(6.0..34.0), rng.random_range(6.0..38.0)])
        .collect();
    let clean: Vec<f32> = (0..dims.iter().product::<usize>())
        .map(|i| {
            let (z, y, x) = ((i / (dims[1] * dims[2])) as f64, ((i / dims[2]) % dims[1]) as f64, (i % dims[2]) as f64);
            let v: f64 = centres
                .iter()
                .map(|c| (-((z - c[0]).powi(2) + (y - c[1]).powi(2) + (x - c[2]).powi(2)) / (2.0 * 16.0)).exp())
                .sum();
            (100.0 + 1000.0 * v.min(1.0)) as f32
        })
        .collect();
    let n = Normalization::default();
    let (lo, hi) = preprocess::normalization_range(&clean, n);
    let smooth = preprocess::noise_sigma(&clean, dims, n, None);
    assert!(smooth < 0.01, "smooth image without noise: estimate {smooth}");
    for sigma_rel in [0.02f64, 0.05, 0.1] {
        let sd = sigma_rel * (hi - lo) as f64;
        let noise = Normal::new(0.0, sd).unwrap();
        let noisy: Vec<f32> = clean.iter().map(|&v| v + noise.sample(&mut rng) as f32).collect();
        // The range is measured on the noisy image (as infer does), which
        // the noise widens a little: compare with σ over that range.
        let (lo2, hi2) = preprocess::normalization_range(&noisy, n);
        let want = sd / (hi2 - lo2) as f64;
        let got = preprocess::noise_sigma(&noisy, dims, n, None) as f64;
        assert!((got / want - 1.0).abs() < 0.15, "σ {sigma_rel} of the range: estimate {got:.4}, expected {want:.4}");
    }
    // Degenerate inputs: constant, two voxels wide.
    assert_eq!(preprocess::noise_sigma(&vec![5.0; 60], [3, 4, 5], n, None), 0.0);
    assert_eq!(preprocess::noise_sigma(&random(24, 1, 0.0, 1.0), [3, 4, 2], n, None), 0.0);
}
