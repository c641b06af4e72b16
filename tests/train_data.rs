//! Training data: dataset loading and its errors, patches, config files.

use std::path::Path;

use qcanet_gpu::io;
use qcanet_gpu::model::{Arch, LossSpec};
use qcanet_gpu::preprocess::reflect_index as reflect;
use qcanet_gpu::preprocess::{NetGrid, Normalization};
use qcanet_gpu::train::config::TrainConfig;
use qcanet_gpu::train::dataset::{load_split, DataOptions, Target};
use qcanet_gpu::train::patch::{
    acquisition_noise, depth_ramp, dilate, dilate_within, extract, random_patch, reacquire_z, Augment, Sample, Vol,
};
use qcanet_gpu::train::{plot_curves, tile_starts, EpochRecord};
use rand::{Rng, SeedableRng};

const DIMS: [usize; 3] = [6, 10, 12];

fn opts() -> DataOptions {
    DataOptions {
        target: Target::Nsn,
        voxel_um: [0.8, 0.8, 1.6],
        grid: NetGrid { pixel_um: 0.8, isotropic: true },
        normalization: Normalization::Percentile { low: 1.0, high: 99.8 },
        dilate: 0,
        dilate_within_nuclei: false,
        centre_map: false,
        separate_touching: false,
        small_nuclei: None,
    }
}

fn image(seed: u32) -> Vec<u16> {
    (0..DIMS.iter().product::<usize>())
        .map(|i| (((i as u32).wrapping_mul(2654435761u32) ^ seed) % 4000) as u16 + 100)
        .collect()
}

fn gt() -> Vec<u8> {
    (0..DIMS.iter().product::<usize>()).map(|i| if i % 7 == 0 { 255 } else { 0 }).collect()
}

/// A valid dataset with one training image `a.tif`.
fn dataset(dir: &Path) {
    for sub in ["images_raw", "images_nsn", "images_ndn", "split_list"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    io::write_u16(&dir.join("images_raw/a.tif"), DIMS, &image(1), None).unwrap();
    io::write_u8(&dir.join("images_nsn/a.tif"), DIMS, &gt(), None).unwrap();
    io::write_u8(&dir.join("images_ndn/a.tif"), DIMS, &gt(), None).unwrap();
    std::fs::write(dir.join("split_list/train.txt"), "a.tif\n").unwrap();
}

#[test]
fn loads_and_prepares_a_pair() {
    let d = tempfile::tempdir().unwrap();
    dataset(d.path());
    let s = load_split(d.path(), "train", &opts()).unwrap();
    assert_eq!(s.len(), 1);
    // z 6 × (1.6 / 0.8) = 12 slices after interpolation.
    assert_eq!(s[0].image.dims, [12, 10, 12]);
    assert_eq!(s[0].target.dims, [12, 10, 12]);
    assert!(s[0].target.data.iter().all(|&v| v == 0.0 || v == 1.0));
    assert!(s[0].target.data.contains(&1.0));
    let (lo, hi) = s[0].image.data.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert!(lo >= -0.1 && hi <= 1.1 && hi > 0.5, "normalised range {lo}..{hi}");
    // On a grid of 1.6 µm pixels: y and x halved, z 6 × (1.6 / 1.6); the
    // ground truth resampled with the image, still 0/1.
    let coarse = DataOptions { grid: NetGrid { pixel_um: 1.6, isotropic: true }, ..opts() };
    let s = load_split(d.path(), "train", &coarse).unwrap();
    assert_eq!((s[0].image.dims, s[0].target.dims), ([6, 5, 6], [6, 5, 6]));
    assert!(s[0].target.data.iter().all(|&v| v == 0.0 || v == 1.0));
    assert!((s[0].z_step - 1.0).abs() < 1e-6, "z step {}", s[0].z_step);
}

#[track_caller]
fn expect_err(dir: &Path, split: &str, needles: &[&str]) {
    let e = load_split(dir, split, &opts()).expect_err("should fail").to_string();
    for n in needles {
        assert!(e.contains(n), "error '{e}' should mention '{n}'");
    }
}

#[test]
fn missing_ground_truth_names_the_file() {
    let d = tempfile::tempdir().unwrap();
    dataset(d.path());
    std::fs::remove_file(d.path().join("images_nsn/a.tif")).unwrap();
    expect_err(d.path(), "train", &["images_nsn/a.tif", "ground truth missing"]);
}

#[test]
fn missing_split_list_is_named() {
    let d = tempfile::tempdir().unwrap();
    dataset(d.path());
    expect_err(d.path(), "validation", &["split_list/validation.txt"]);
}

#[test]
fn shape_mismatch_names_both() {
    let d = tempfile::tempdir().unwrap();
    dataset(d.path());
    io::write_u8(&d.path().join("images_nsn/a.tif"), [6, 10, 11], &vec![0u8; 660], None).unwrap();
    expect_err(d.path(), "train", &["images_nsn/a.tif", "[6, 10, 11]", "[6, 10, 12]"]);
}

#[test]
fn non_binary_ground_truth_is_refused() {
    let d = tempfile::tempdir().unwrap();
    dataset(d.path());
    let mut g = gt();
    g[1] = 128;
    io::write_u8(&d.path().join("images_nsn/a.tif"), DIMS, &g, None).unwrap();
    expect_err(d.path(), "train", &["images_nsn/a.tif", "not binary"]);
}

#[test]
fn unreadable_tiff_names_the_file() {
    let d = tempfile::tempdir().unwrap();
    dataset(d.path());
    std::fs::write(d.path().join("images_raw/a.tif"), b"this is not a TIFF file at all").unwrap();
    expect_err(d.path(), "train", &["images_raw/a.tif"]);
}

#[test]
fn nan_in_image_is_refused() {
    let d = tempfile::tempdir().unwrap();
    dataset(d.path());
    let mut v: Vec<f32> = image(3).iter().map(|&x| x as f32).collect();
    v[5] = f32::NAN;
    // io's writers refuse NaN, so write the pages with the tiff crate.
    let f = std::fs::File::create(d.path().join("images_raw/a.tif")).unwrap();
    let mut enc = tiff::encoder::TiffEncoder::new(f).unwrap();
    let plane = DIMS[1] * DIMS[2];
    for z in 0..DIMS[0] {
        enc.write_image::<tiff::encoder::colortype::Gray32Float>(
            DIMS[2] as u32,
            DIMS[1] as u32,
            &v[z * plane..(z + 1) * plane],
        )
        .unwrap();
    }
    drop(enc);
    expect_err(d.path(), "train", &["images_raw/a.tif", "NaN"]);
}

#[test]
fn unknown_config_key_is_named() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("t.toml");
    std::fs::write(&p, "model = \"ndn\"\nepochs = 3\nlearning_rate = 0.1\n").unwrap();
    let e = TrainConfig::from_toml_file(&p).unwrap_err().to_string();
    assert!(e.contains("learning_rate") && e.contains("t.toml"), "{e}");
    std::fs::write(&p, "model = \"ndn\"\nepochs = 3\npatch = 32\n[augment]\nflips = false\nbrightness = [1.0, 2.0]\ngamma = [1.0, 1.0]\n").unwrap();
    let c = TrainConfig::from_toml_file(&p).unwrap();
    assert_eq!(c.epochs, 3);
    assert_eq!(c.patch, 32);
    assert_eq!(c.net_config().unwrap().depth, 4);
    assert_eq!(c.dilate_radius(), 2);
    // Settings added later keep an older file's meaning: an augment table
    // without depth_ramp has none (a new run's default has 0.5), and the
    // markers dilate across nuclei as before.
    assert_eq!(c.augment.depth_ramp, 0.0);
    assert_eq!(TrainConfig::default().augment.depth_ramp, 0.5);
    assert!(!c.dilate_within_nuclei);
    // Round trip of the effective config.
    let back: TrainConfig = toml::from_str(&c.to_toml()).unwrap();
    assert_eq!(back, c);
    // Dilating within nuclei without a dilation is refused by name.
    std::fs::write(&p, "model = \"nsn\"\ndilate_within_nuclei = true\n").unwrap();
    let c = TrainConfig::from_toml_file(&p).unwrap();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("dilate_within_nuclei"), "{e}");
    assert!(TrainConfig { dilate: Some(2), ..c }.validate().is_ok());
    // The centre map: a soft target for one sigmoid output, no dilation,
    // positive weight 1 unless given.
    let cm = TrainConfig { model: Arch::Ndn, centre_map: true, classes: 1, ..TrainConfig::default() };
    cm.validate().unwrap();
    assert_eq!(cm.dilate_radius(), 0);
    assert_eq!(cm.loss_spec().unwrap(), LossSpec::Bce { pos_weight: 1.0 });
    let e = TrainConfig { classes: 2, ..cm.clone() }.validate().unwrap_err().to_string();
    assert!(e.contains("centre map") && e.contains("--classes 1"), "{e}");
    let e = TrainConfig { dilate: Some(2), ..cm.clone() }.validate().unwrap_err().to_string();
    assert!(e.contains("centre_map") && e.contains("no dilation"), "{e}");
    // Separated nuclei: a segmentation target with no dilation and no centre map.
    let st = TrainConfig { model: Arch::Nsn, separate_touching: true, ..TrainConfig::default() };
    st.validate().unwrap();
    for bad in [
        TrainConfig { model: Arch::Ndn, dilate: Some(0), ..st.clone() },
        TrainConfig { dilate: Some(1), ..st.clone() },
        TrainConfig { centre_map: true, classes: 1, ..st.clone() },
    ] {
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("separate_touching") && e.contains("NSN or U-Net"), "{e}");
    }
}

#[test]
fn reflect_and_tiles() {
    let r: Vec<usize> = (-3..8).map(|i| reflect(i, 4)).collect();
    assert_eq!(r, vec![3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1]);
    assert_eq!(tile_starts(10, 16, 4), vec![0]);
    assert_eq!(tile_starts(40, 16, 4), vec![0, 12, 24]);
    assert_eq!(tile_starts(16, 16, 4), vec![0]);
}

#[test]
fn patches_flip_and_reflect_consistently() {
    let dims = [3, 4, 5];
    let n = 60;
    let img: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let s = sample(dims, img.clone(), img, 1.0);
    // Identity extraction.
    let (a, b) = extract(&s, [0, 0, 0], dims, [false; 3]);
    assert_eq!(a, s.image.data);
    assert_eq!(a, b);
    // Flipping x reverses each row.
    let (f, _) = extract(&s, [0, 0, 0], dims, [false, false, true]);
    assert_eq!(&f[..5], &[4.0, 3.0, 2.0, 1.0, 0.0]);
    // Larger than the volume: reflected, image and target stay aligned.
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for _ in 0..20 {
        let (i, t) = random_patch(&s, [8, 8, 8], &Augment { flips: true, ..Augment::none() }, &mut rng);
        assert_eq!(i.len(), 512);
        assert_eq!(i, t);
    }
    // Intensity augmentation changes the image, never the target.
    let (i, t) = random_patch(&s, [3, 4, 5], &Augment::default(), &mut rng);
    assert_ne!(i, t);
    assert!(t.iter().all(|v| v.fract() == 0.0));
}

#[test]
fn dilation_never_joins_two_objects() {
    use qcanet_gpu::postprocess::{ccl, Connectivity};
    let dims = [11, 13, 17];
    let n = dims.iter().product::<usize>();
    let at = |z: usize, y: usize, x: usize| (z * dims[1] + y) * dims[2] + x;
    let count = |v: &Vol| {
        let m: Vec<u8> = v.data.iter().map(|&x| (x > 0.5) as u8).collect();
        ccl::reference::label(&m, dims, Connectivity::TwentySix).1
    };
    // Two 2x2x2 markers 5 voxels apart (a radius-3 ball of each overlaps
    // the other's), a third far away, and random single-voxel markers.
    let mut v = vec![0f32; n];
    for (z0, y0, x0) in [(4, 4, 3), (4, 4, 9)] {
        for (dz, dy, dx) in (0..8).map(|b| (b & 1, (b >> 1) & 1, b >> 2)) {
            v[at(z0 + dz, y0 + dy, x0 + dx)] = 1.0;
        }
    }
    v[at(9, 11, 15)] = 1.0;
    let vol = Vol::new(dims, v.clone()).unwrap();
    for r in 1..=4 {
        let d = dilate(&vol, r);
        assert_eq!(count(&d), 3, "radius {r}: the markers must stay three");
        // Every marker voxel is kept, and the dilation is a superset.
        assert!(v.iter().zip(&d.data).all(|(&a, &b)| a == 0.0 || b == 1.0), "radius {r}");
        // Far from the others (8.8 voxels from the nearest, so up to radius 3
        // no ball reaches another's), the lone voxel grows to a full ball.
        if r > 3 {
            continue;
        }
        let ball = (0..n).filter(|&i| {
            let (z, y, x) = (i / (dims[1] * dims[2]), (i / dims[2]) % dims[1], i % dims[2]);
            let (dz, dy, dx) = (z as i64 - 9, y as i64 - 11, x as i64 - 15);
            dz * dz + dy * dy + dx * dx <= (r * r) as i64
        });
        assert!(ball.clone().all(|i| d.data[i] == 1.0), "radius {r}: the lone marker is not a ball");
    }
    // The plain dilation would join the close pair at radius 3: this does not.
    let d = dilate(&vol, 3);
    assert_eq!(d.data[at(5, 5, 6)], 1.0, "between the pair, the first marker's side is grown");
    // Random markers: never more or fewer objects than the input had.
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut v = vec![0f32; n];
    for _ in 0..25 {
        v[rng.random_range(0..n)] = 1.0;
    }
    let vol = Vol::new(dims, v).unwrap();
    let k = count(&vol);
    for r in 1..=3 {
        assert_eq!(count(&dilate(&vol, r)), k, "radius {r}");
    }
}

#[test]
fn dilation_within_nuclei_never_grows_a_marker_into_another_nucleus() {
    use qcanet_gpu::postprocess::{ccl, Connectivity};
    let dims = [13, 15, 19];
    let n = dims.iter().product::<usize>();
    let pos = |i: usize| [i / (dims[1] * dims[2]), (i / dims[2]) % dims[1], i % dims[2]];
    let d2 = |a: [usize; 3], b: [usize; 3]| (0..3).map(|k| (a[k] as i64 - b[k] as i64).pow(2)).sum::<i64>();
    let objects = |v: &Vol| {
        let m: Vec<u8> = v.data.iter().map(|&x| (x > 0.5) as u8).collect();
        ccl::reference::label(&m, dims, Connectivity::TwentySix)
    };
    // A large nucleus (label 7, radius 5 around (6, 7, 6)) and a small one
    // beside it (label 3, radius 2 around (6, 7, 12)), each with a one-voxel
    // marker at its centre: dilated by 3 without the labels, the small
    // nucleus's marker reaches into the large one; with them, never.
    let mut nuclei = vec![0u32; n];
    let mut v = vec![0f32; n];
    for (i, l) in nuclei.iter_mut().enumerate() {
        if d2(pos(i), [6, 7, 12]) <= 4 {
            *l = 3;
        } else if d2(pos(i), [6, 7, 6]) <= 25 {
            *l = 7;
        }
    }
    let at = |p: [usize; 3]| (p[0] * dims[1] + p[1]) * dims[2] + p[2];
    v[at([6, 7, 6])] = 1.0;
    v[at([6, 7, 12])] = 1.0;
    let vol = Vol::new(dims, v.clone()).unwrap();
    let small_in_large =
        |d: &Vol| (0..n).filter(|&i| d.data[i] == 1.0 && nuclei[i] == 7 && d2(pos(i), [6, 7, 12]) <= 9).count();
    assert!(small_in_large(&dilate(&vol, 3)) > 0, "the plain dilation should reach into the large nucleus");
    let d = dilate_within(&vol, 3, &nuclei).unwrap();
    assert_eq!(small_in_large(&d), 0, "the small nucleus's marker grew into the large one");
    // It still grows into its own nucleus and the background around it.
    assert!((0..n).any(|i| d.data[i] == 1.0 && nuclei[i] == 3 && v[i] == 0.0));
    assert!((0..n).any(|i| d.data[i] == 1.0 && nuclei[i] == 0 && d2(pos(i), [6, 7, 12]) <= 9));
    // Random labels and markers: the markers stay as many, each keeps its
    // voxels, each grown voxel lies within the radius of its own object and
    // in background or that object's nucleus (the label most of its voxels
    // lie in); with every label 0 it is the plain dilation.
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for trial in 0..6 {
        let centres: Vec<[usize; 3]> = (0..8)
            .map(|_| [rng.random_range(0..dims[0]), rng.random_range(0..dims[1]), rng.random_range(0..dims[2])])
            .collect();
        let nuclei: Vec<u32> = (0..n)
            .map(|i| {
                let (k, dd) =
                    centres.iter().enumerate().map(|(k, &c)| (k, d2(pos(i), c))).min_by_key(|&(_, dd)| dd).unwrap();
                if dd <= 12 {
                    k as u32 + 1
                } else {
                    0
                }
            })
            .collect();
        let mut v = vec![0f32; n];
        for _ in 0..20 {
            v[rng.random_range(0..n)] = 1.0;
        }
        let vol = Vol::new(dims, v.clone()).unwrap();
        let (before, k) = objects(&vol);
        for r in 1..=3 {
            let d = dilate_within(&vol, r, &nuclei).unwrap();
            let (_, k2) = objects(&d);
            assert_eq!(k2, k, "trial {trial}, radius {r}: markers joined or lost");
            assert!(
                v.iter().zip(&d.data).all(|(&a, &b)| a == 0.0 || b == 1.0),
                "trial {trial}, radius {r}: a marker voxel lost"
            );
            // Each object's own nucleus, by majority of its voxels (ties: the lower label).
            let own = |id: u32| {
                let mut c = std::collections::BTreeMap::new();
                (0..n)
                    .filter(|&i| before[i] == id && nuclei[i] != 0)
                    .for_each(|i| *c.entry(nuclei[i]).or_insert(0) += 1);
                c.iter().max_by_key(|(l, c)| (**c, std::cmp::Reverse(**l))).map_or(0, |(l, _)| *l)
            };
            let owns: Vec<u32> = (0..=k).map(own).collect();
            for i in (0..n).filter(|&i| d.data[i] == 1.0 && v[i] == 0.0) {
                // The object it belongs to: the nearest marker voxel's.
                let (id, dd) = (0..n)
                    .filter(|&j| before[j] != 0)
                    .map(|j| (before[j], d2(pos(i), pos(j))))
                    .min_by_key(|&(_, dd)| dd)
                    .unwrap();
                assert!(dd <= (r * r) as i64, "trial {trial}, radius {r}: voxel {i} beyond the radius");
                let mine = (0..n).filter(|&j| before[j] != 0 && d2(pos(i), pos(j)) <= (r * r) as i64).any(|j| {
                    let o = owns[before[j] as usize];
                    nuclei[i] == 0 || nuclei[i] == o
                });
                assert!(
                    mine,
                    "trial {trial}, radius {r}: voxel {i} (nucleus {}) grown from object {id} into another nucleus",
                    nuclei[i]
                );
            }
            assert_eq!(
                dilate_within(&vol, r, &vec![0; n]).unwrap(),
                dilate(&vol, r),
                "trial {trial}, radius {r}: no labels"
            );
        }
    }
    assert!(dilate_within(&vol, 3, &nuclei[1..]).unwrap_err().to_string().contains("instance labels"));
}

#[test]
fn dilation_within_nuclei_reads_labels_instance_and_names_it_when_missing() {
    let d = tempfile::tempdir().unwrap();
    dataset(d.path());
    let o = DataOptions { target: Target::Ndn, dilate: 2, dilate_within_nuclei: true, ..opts() };
    let e = load_split(d.path(), "train", &o).expect_err("labels_instance/ is missing").to_string();
    assert!(e.contains("labels_instance/a.tif") && e.contains("within their nuclei needs labels_instance/"), "{e}");
    // With labels only under the markers (each marker voxel a nucleus of
    // its own), no marker can grow into another's nucleus that it would
    // not have reached anyway: read, resampled with the image and equal to
    // the plain dilation.
    std::fs::create_dir_all(d.path().join("labels_instance")).unwrap();
    let labels: Vec<u16> = gt().iter().enumerate().map(|(i, &g)| if g > 0 { (i % 50 + 1) as u16 } else { 0 }).collect();
    io::write_u16(&d.path().join("labels_instance/a.tif"), DIMS, &labels, None).unwrap();
    let within = load_split(d.path(), "train", &o).unwrap();
    let plain = load_split(d.path(), "train", &DataOptions { dilate_within_nuclei: false, ..o.clone() }).unwrap();
    assert_eq!(within[0].target.dims, [12, 10, 12]);
    assert_eq!(within[0].target, plain[0].target);
    // Labels of another shape are refused by name.
    io::write_u16(&d.path().join("labels_instance/a.tif"), [6, 10, 11], &vec![1u16; 660], None).unwrap();
    let e = load_split(d.path(), "train", &o).expect_err("shape").to_string();
    assert!(e.contains("labels_instance/a.tif") && e.contains("[6, 10, 11]"), "{e}");
}

/// `DIR/labels_instance/a.tif`: boxes 4 (x 1..split) and 9 (x split..11) that
/// touch along x (z 1..5, y 2..9), and a one-voxel nucleus 30 at z 5, y 0, x 0.
fn two_boxes_and_a_dot(dir: &Path, split: usize) {
    std::fs::create_dir_all(dir.join("labels_instance")).unwrap();
    let [dz, dy, dx] = DIMS;
    let mut labels = vec![0u16; dz * dy * dx];
    for z in 1..5 {
        for y in 2..9 {
            for x in 1..11 {
                labels[(z * dy + y) * dx + x] = if x < split { 4 } else { 9 };
            }
        }
    }
    labels[5 * dy * dx] = 30;
    io::write_u16(&dir.join("labels_instance/a.tif"), DIMS, &labels, None).unwrap();
}

#[test]
fn centre_map_reads_labels_instance_and_peaks_once_per_nucleus() {
    let d = tempfile::tempdir().unwrap();
    dataset(d.path());
    // Not read for a centre map: its absence must not matter.
    std::fs::remove_dir_all(d.path().join("images_ndn")).unwrap();
    let o = DataOptions { target: Target::Ndn, centre_map: true, ..opts() };
    let e = load_split(d.path(), "train", &o).expect_err("labels_instance/ is missing").to_string();
    assert!(e.contains("labels_instance/a.tif") && e.contains("the centre map needs labels_instance/"), "{e}");
    // Two boxes that touch along x, and a one-voxel nucleus.
    two_boxes_and_a_dot(d.path(), 6);
    let s = &load_split(d.path(), "train", &o).unwrap()[0];
    // On the network grid: z 6 × (1.6 / 0.8) = 12 slices, labels copied by nearest.
    assert_eq!(s.target.dims, [12, 10, 12]);
    let t = &s.target.data;
    assert!(t.iter().all(|v| (0.0..=1.0).contains(v)), "values outside [0, 1]");
    let at = |z: usize, y: usize, x: usize| t[(z * 10 + y) * 12 + x];
    assert_eq!(at(0, 5, 5), 0.0, "background");
    // Each nucleus peaks at 1; every voxel of a nucleus is above 0.
    let peak = |xs: std::ops::Range<usize>| -> Vec<f32> {
        let mut v = Vec::new();
        for z in 2..10 {
            for y in 2..9 {
                v.extend(xs.clone().map(|x| at(z, y, x)));
            }
        }
        v
    };
    assert_eq!(peak(1..6).into_iter().fold(0f32, f32::max), 1.0);
    assert_eq!(peak(6..11).into_iter().fold(0f32, f32::max), 1.0);
    assert!(peak(1..11).iter().all(|&v| v > 0.0));
    assert_eq!(at(10, 0, 0), 1.0, "the one-voxel nucleus (z 5 becomes z 10 and 11)");
    // Where the two touch, the map dips: the voxels on either side are their boxes' lowest.
    assert!(at(5, 5, 5) < 0.5 && at(5, 5, 6) < 0.5, "at the contact: {} {}", at(5, 5, 5), at(5, 5, 6));
    assert!(at(5, 5, 3) > at(5, 5, 5), "inside the first box");
}

#[test]
fn separate_touching_reads_labels_instance_and_keeps_touching_nuclei_apart() {
    let d = tempfile::tempdir().unwrap();
    dataset(d.path());
    // Not read for separated nuclei: neither its absence nor its content matters.
    std::fs::remove_dir_all(d.path().join("images_nsn")).unwrap();
    let o = DataOptions { separate_touching: true, ..opts() };
    let e = load_split(d.path(), "train", &o).expect_err("labels_instance/ is missing").to_string();
    assert!(e.contains("labels_instance/a.tif") && e.contains("separating touching nuclei"), "{e}");
    // A large box (4) touching a smaller one (9) along x, and a lone one-voxel nucleus (30).
    two_boxes_and_a_dot(d.path(), 7);
    let s = &load_split(d.path(), "train", &o).unwrap()[0];
    // On the network grid: z 6 × (1.6 / 0.8) = 12 slices, labels copied by nearest (z 1..5 becomes 2..10).
    assert_eq!(s.target.dims, [12, 10, 12]);
    let at = |z: usize, y: usize, x: usize| s.target.data[(z * 10 + y) * 12 + x];
    for z in 0..12 {
        for y in 0..10 {
            for x in 0..12 {
                let inside = (2..10).contains(&z) && (2..9).contains(&y) && (1..11).contains(&x);
                // The larger box (x 1..7) gives up its contact layer x = 6; the smaller keeps all of x 7..11.
                let want = inside && x != 6 || (z >= 10 && y == 0 && x == 0);
                assert_eq!(at(z, y, x), if want { 1.0 } else { 0.0 }, "z {z}, y {y}, x {x}");
            }
        }
    }
}

#[test]
fn small_nucleus_weights_read_labels_instance_and_weigh_only_small_nuclei_markers() {
    use qcanet_gpu::train::SmallNuclei;
    let d = tempfile::tempdir().unwrap();
    dataset(d.path());
    let sn = SmallNuclei { weight: 4.0, volume_um3: 10.0 };
    let o = DataOptions { target: Target::Ndn, small_nuclei: Some(sn), ..opts() };
    let e = load_split(d.path(), "train", &o).expect_err("labels_instance/ is missing").to_string();
    assert!(e.contains("labels_instance/a.tif") && e.contains("weighing small nuclei"), "{e}");
    // Nuclei: two boxes of 140 voxels (143 µm³ at 0.8 × 0.8 × 1.6 µm) and
    // a one-voxel nucleus (1 µm³); a marker in each, the dot's marker
    // reaching past it into the background.
    two_boxes_and_a_dot(d.path(), 6);
    let [dz, dy, dx] = DIMS;
    let mut markers = vec![0u8; dz * dy * dx];
    for (z, y, x) in [(2, 5, 3), (3, 5, 8), (5, 0, 0), (5, 0, 1), (5, 1, 0)] {
        markers[(z * dy + y) * dx + x] = 255;
    }
    io::write_u8(&d.path().join("images_ndn/a.tif"), DIMS, &markers, None).unwrap();
    let s = &load_split(d.path(), "train", &o).unwrap()[0];
    let w = s.weight.as_ref().expect("a weight map");
    assert_eq!(w.dims, s.target.dims);
    // On the network grid (z doubled): the dot's marker, 3 voxels a slice
    // over z 10 and 11, weighs 4; everything else 1.
    let at = |z: usize, y: usize, x: usize| w.data[(z * dy + y) * dx + x];
    for (z, y, x) in [(10, 0, 0), (11, 0, 1), (10, 1, 0)] {
        assert_eq!(at(z, y, x), 4.0, "z {z}, y {y}, x {x}");
    }
    assert_eq!(w.data.iter().filter(|&&v| v == 4.0).count(), 6);
    assert!(w.data.iter().all(|&v| v == 4.0 || v == 1.0));
    assert_eq!(at(4, 5, 3), 1.0, "a large nucleus's marker");
    // Above the boxes' volume every marker is a small nucleus's; without
    // the option there is no map.
    let all = DataOptions { small_nuclei: Some(SmallNuclei { volume_um3: 200.0, ..sn }), ..o.clone() };
    let s = &load_split(d.path(), "train", &all).unwrap()[0];
    let w = s.weight.as_ref().unwrap();
    let marked = s.target.data.iter().filter(|&&t| t > 0.5).count();
    assert_eq!(w.data.iter().filter(|&&v| v == 4.0).count(), marked);
    assert!(load_split(d.path(), "train", &DataOptions { small_nuclei: None, ..o }).unwrap()[0].weight.is_none());
}

#[test]
fn patch_weights_are_cut_flipped_and_zoomed_with_the_target() {
    use qcanet_gpu::train::random_patch_near;
    let dims = [7, 9, 11];
    let n: usize = dims.iter().product();
    let target: Vec<f32> = (0..n).map(|i| (i % 13) as f32).collect();
    let mut s = sample(dims, random_image(n, 3), target.clone(), 1.0);
    s.weight = Some(Vol::new(dims, target.iter().map(|&t| 1.0 + t * 0.25).collect()).unwrap());
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let aug = Augment { flips: true, ..Augment::default() };
    assert!(aug.zoom > 0.0, "the default augmentation zooms");
    for k in 0..30 {
        let centre = (k % 2 == 0).then_some([3, 4, 5]);
        let p = random_patch_near(&s, centre, [5, 8, 6], &aug, &mut rng);
        let w = p.weight.expect("the sample's weights");
        assert_eq!(w.len(), p.target.len());
        for (w, t) in w.iter().zip(&p.target) {
            assert_eq!(*w, 1.0 + t * 0.25, "patch {k}");
        }
    }
    s.weight = None;
    assert!(random_patch_near(&s, None, [5, 8, 6], &aug, &mut rng).weight.is_none());
}

#[test]
fn small_nucleus_weights_need_the_ndn_and_cross_entropy() {
    use qcanet_gpu::model::Arch;
    use qcanet_gpu::train::config::LossKind;
    use qcanet_gpu::train::SmallNuclei;
    let sn = |weight, volume_um3| Some(SmallNuclei { weight, volume_um3 });
    let ndn = TrainConfig { model: Arch::Ndn, small_nuclei: sn(5.0, 250.0), ..TrainConfig::default() };
    assert!(ndn.validate().is_ok());
    for (c, what) in [
        (TrainConfig { model: Arch::Nsn, ..ndn.clone() }, "--model ndn"),
        (TrainConfig { centre_map: true, ..ndn.clone() }, "centre map"),
        (TrainConfig { loss: Some(LossKind::Dice), ..ndn.clone() }, "cross-entropy"),
        (TrainConfig { small_nuclei: sn(0.0, 250.0), ..ndn.clone() }, "small-nucleus weight"),
        (TrainConfig { small_nuclei: sn(5.0, -1.0), ..ndn.clone() }, "small-nucleus volume"),
    ] {
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(what), "{what}: {e}");
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("small.toml");
    std::fs::write(&p, "model = \"ndn\"\n[small_nuclei]\nweight = 3.0\n").unwrap();
    let c = TrainConfig::from_toml_file(&p).unwrap();
    assert_eq!(c.small_nuclei, sn(3.0, SmallNuclei::DEFAULT_VOLUME_UM3));
    assert_eq!(toml::from_str::<TrainConfig>(&c.to_toml()).unwrap(), c);
}

#[test]
fn dilation_grows_a_point_to_a_ball() {
    let mut v = vec![0f32; 9 * 9 * 9];
    v[(4 * 9 + 4) * 9 + 4] = 1.0;
    let d = dilate(&Vol::new([9, 9, 9], v).unwrap(), 2);
    // Ball of radius 2: 33 voxels.
    assert_eq!(d.data.iter().filter(|&&x| x == 1.0).count(), 33);
}

#[test]
fn plot_is_written() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("c.png");
    let recs: Vec<EpochRecord> = (1..=4)
        .map(|e| EpochRecord {
            epoch: e,
            step: e * 10,
            train_loss: 1.0 / e as f64,
            val_loss: 1.2 / e as f64,
            val_iou: 0.2 * e as f64,
            val_detection: 0.15 * e as f64,
            val_f1: 0.1 * e as f64,
            val_seg: 0.08 * e as f64,
            val_inst_iou: 0.2 * e as f64,
            val_threshold: 0.5,
            val_dynamic: 0.1,
            seconds: 1.0,
        })
        .collect();
    plot_curves(&p, &recs).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
}

#[test]
fn best_epoch_is_chosen_by_marker_f1_then_iou() {
    let r = |d: f64, i: f64| EpochRecord {
        epoch: 1,
        step: 1,
        train_loss: 0.1,
        val_loss: 0.1,
        val_iou: i,
        val_detection: d,
        val_f1: f64::NAN,
        val_seg: f64::NAN,
        val_inst_iou: f64::NAN,
        val_threshold: f64::NAN,
        val_dynamic: f64::NAN,
        seconds: 1.0,
    };
    assert!(r(0.5, 0.2).beats(None));
    // A higher marker F1 wins over a higher IoU, and the reverse loses.
    assert!(r(0.9, 0.1).beats(Some((0.8, 0.9))));
    assert!(!r(0.7, 0.99).beats(Some((0.8, 0.1))));
    // Equal F1: IoU decides; equal both: not better.
    assert!(r(0.8, 0.5).beats(Some((0.8, 0.4))));
    assert!(!r(0.8, 0.4).beats(Some((0.8, 0.4))));
    // Runs without detection (NSN, U-Net): IoU alone.
    let n = f64::NAN;
    assert!(r(n, 0.6).beats(Some((n, 0.5))));
    assert!(!r(n, 0.4).beats(Some((n, 0.5))));
    assert!(!r(n, n).beats(None));
    // With instance scores (a partner network), F1 then SEG rank, whatever the IoU.
    let q = |f1: f64, seg: f64, iou: f64| EpochRecord { val_f1: f1, val_seg: seg, ..r(n, iou) };
    assert_eq!(q(0.9, 0.7, 0.1).key(), (0.9, 0.7));
    assert!(q(0.9, 0.1, 0.1).beats(Some(q(0.8, 0.9, 0.9).key())));
    assert!(!q(0.8, 0.9, 0.9).beats(Some(q(0.9, 0.1, 0.1).key())));
    assert!(q(0.9, 0.6, 0.1).beats(Some(q(0.9, 0.5, 0.9).key())));
    assert!(!q(0.9, 0.5, 0.9).beats(Some(q(0.9, 0.5, 0.1).key())));
}

#[test]
fn gaussian_blur_matches_a_direct_3d_convolution() {
    use qcanet_gpu::train::patch::{gaussian_blur, gaussian_kernel};
    let dims = [5, 7, 6];
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let v: Vec<f32> = (0..dims.iter().product::<usize>()).map(|_| rng.random_range(-1.0..2.0)).collect();
    let sigma = [1.3f32, 0.6, 0.9];
    let k: Vec<Vec<f32>> = sigma.iter().map(|&s| gaussian_kernel(s)).collect();
    for kk in &k {
        assert!((kk.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(kk.len() % 2 == 1 && kk.len() > 1);
    }
    assert_eq!(gaussian_kernel(0.05), vec![1.0]);
    let got = gaussian_blur(&v, dims, sigma);
    // Direct triple sum with the separable weights (f64), reflecting at the edges.
    let r: Vec<isize> = k.iter().map(|kk| (kk.len() / 2) as isize).collect();
    for z in 0..dims[0] {
        for y in 0..dims[1] {
            for x in 0..dims[2] {
                let mut acc = 0f64;
                for (a, &wa) in k[0].iter().enumerate() {
                    let zz = reflect(z as isize + a as isize - r[0], dims[0]);
                    for (b, &wb) in k[1].iter().enumerate() {
                        let yy = reflect(y as isize + b as isize - r[1], dims[1]);
                        for (c, &wc) in k[2].iter().enumerate() {
                            let xx = reflect(x as isize + c as isize - r[2], dims[2]);
                            acc += wa as f64 * wb as f64 * wc as f64 * v[(zz * dims[1] + yy) * dims[2] + xx] as f64;
                        }
                    }
                }
                let g = got[(z * dims[1] + y) * dims[2] + x];
                assert!((g as f64 - acc).abs() < 1e-5, "({z},{y},{x}): {g} vs {acc}");
            }
        }
    }
}

#[test]
fn offset_and_noise_augmentations_stay_in_their_ranges() {
    let dims = [6, 7, 8];
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let img: Vec<f32> = (0..dims.iter().product::<usize>()).map(|_| rng.random_range(0.0..1.0)).collect();
    let s = sample(dims, img.clone(), img.iter().map(|&v| (v > 0.5) as u8 as f32).collect(), 1.0);
    // Offset only: the whole patch moves by one value within ±0.2.
    let aug = Augment { offset: 0.2, ..Augment::none() };
    let mut seen = Vec::new();
    for _ in 0..20 {
        let (i, t) = random_patch(&s, dims, &aug, &mut rng);
        let d: Vec<f32> = i.iter().zip(&s.image.data).map(|(a, b)| a - b).collect();
        assert!(d.iter().all(|x| (x - d[0]).abs() < 1e-6), "one offset per patch");
        assert!(d[0].abs() <= 0.2);
        assert_eq!(t, s.target.data);
        seen.push(d[0]);
    }
    assert!(seen.iter().any(|&o| o > 0.05) && seen.iter().any(|&o| o < -0.05), "{seen:?}");
    // Noise only: zero-mean differences with a standard deviation below the cap.
    let aug = Augment { noise: 0.3, ..Augment::none() };
    let mut sds = Vec::new();
    for _ in 0..20 {
        let (i, _) = random_patch(&s, dims, &aug, &mut rng);
        let d: Vec<f64> = i.iter().zip(&s.image.data).map(|(a, b)| (a - b) as f64).collect();
        let n = d.len() as f64;
        let mean = d.iter().sum::<f64>() / n;
        let sd = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(mean.abs() < 0.05 + 3.0 * sd / n.sqrt(), "mean {mean} sd {sd}");
        assert!(sd < 0.33, "sd {sd}");
        sds.push(sd);
    }
    assert!(sds.iter().any(|&v| v > 0.1), "{sds:?}");
    // Noise is relative to the normalised range: under a gain of 4 it is
    // four times as large in absolute terms (it is added before the gain).
    let aug = Augment { noise: 0.3, brightness: [4.0, 4.0], ..Augment::none() };
    let mut rel = Vec::new();
    for _ in 0..20 {
        let (i, _) = random_patch(&s, dims, &aug, &mut rng);
        let d: Vec<f64> = i.iter().zip(&s.image.data).map(|(a, b)| (a / 4.0 - b) as f64).collect();
        let n = d.len() as f64;
        let mean = d.iter().sum::<f64>() / n;
        let sd = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(sd < 0.33, "sd {sd} relative to the range");
        rel.push(sd);
    }
    assert!(rel.iter().any(|&v| v > 0.1), "noise shrank under the gain: {rel:?}");
    // Blur only: changes the image but keeps its mean (reflecting edges keep it roughly).
    let aug = Augment { blur: 2.0, blur_z: 2.0, ..Augment::none() };
    let changed = (0..10).any(|_| random_patch(&s, dims, &aug, &mut rng).0 != s.image.data);
    assert!(changed);
    // Bad ranges are refused by name.
    let e = Augment { noise: -1.0, ..Augment::none() }.validate().unwrap_err().to_string();
    assert!(e.contains("noise"), "{e}");
}

/// A training sample of `dims` from image and target values.
fn sample(dims: [usize; 3], image: Vec<f32>, target: Vec<f32>, z_step: f32) -> Sample {
    Sample {
        name: "t".into(),
        image: Vol::new(dims, image).unwrap(),
        target: Vol::new(dims, target).unwrap(),
        weight: None,
        z_step,
    }
}

/// Sample statistics of `noise` in a (D, H, W) patch: standard deviation
/// and the correlation of neighbours along z and along x.
fn noise_stats(noise: &[f32], [d, h, w]: [usize; 3]) -> (f64, f64, f64) {
    let n = noise.len() as f64;
    let mean = noise.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = noise.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let corr = |step: usize, count: usize| {
        let mut s = 0.0;
        let mut k = 0usize;
        for i in 0..noise.len() {
            let along = if step == 1 { i % w } else { i / (h * w) };
            if along + 1 < count {
                s += (noise[i] as f64 - mean) * (noise[i + step] as f64 - mean);
                k += 1;
            }
        }
        s / k as f64 / var
    };
    (var.sqrt(), corr(h * w, d), corr(1, w))
}

#[test]
fn read_noise_is_drawn_on_the_acquisition_grid() {
    let dims = [41, 30, 33];
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    // Independent per voxel when z was not interpolated.
    let (sd, cz, cx) = noise_stats(&acquisition_noise(dims, 0.2, 1.0, &mut rng), dims);
    assert!((sd - 0.2).abs() < 0.01, "sd {sd}");
    assert!(cz.abs() < 0.05 && cx.abs() < 0.05, "correlations {cz} {cx}");
    // Slices 2.5 voxels apart, linearly interpolated: neighbours along z are
    // strongly correlated, along x not at all, and the variance dips between
    // slices (a node keeps σ², a midpoint σ²/2), so the sd lies between.
    for step in [2.19f32, 2.5] {
        let (sd, cz, cx) = noise_stats(&acquisition_noise(dims, 0.2, step, &mut rng), dims);
        assert!(sd < 0.2 && sd > 0.2 * 0.5f64.sqrt(), "step {step}: sd {sd}");
        assert!(cz > 0.5, "step {step}: z correlation {cz}");
        assert!(cx.abs() < 0.05, "step {step}: x correlation {cx}");
    }
    // random_patch draws it with the sample's z step.
    let img: Vec<f32> = (0..dims.iter().product::<usize>()).map(|_| rng.random_range(0.0..1.0)).collect();
    let s = sample(dims, img.clone(), img.clone(), 2.19);
    let aug = Augment { noise: 0.3, ..Augment::none() };
    let (i, _) = random_patch(&s, dims, &aug, &mut rng);
    let d: Vec<f32> = i.iter().zip(&img).map(|(a, b)| a - b).collect();
    let (_, cz, cx) = noise_stats(&d, dims);
    assert!(cz > 0.5 && cx.abs() < 0.1, "patch noise correlations {cz} {cx}");
}

#[test]
fn coarser_z_reacquisition_keeps_linear_profiles_and_column_ranges() {
    let dims = [23, 4, 5];
    let plane = dims[1] * dims[2];
    let n = dims[0] * plane;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // Columns linear in z (random slope and intercept each): kept exactly
    // between the first and the last acquired slice, the edge slice's value
    // outside (edge mode, as preprocess::resample clamps).
    let a: Vec<f32> = (0..plane).map(|_| rng.random_range(-1.0..1.0)).collect();
    let b: Vec<f32> = (0..plane).map(|_| rng.random_range(-1.0..1.0)).collect();
    let lin: Vec<f32> = (0..n).map(|i| a[i % plane] * (i / plane) as f32 + b[i % plane]).collect();
    for (step, phase) in [(2.5f32, 0.0f32), (2.19, 1.7), (2.857, 2.3), (1.3, 0.6), (30.0, 4.0)] {
        let r = reacquire_z(&lin, dims, step, phase);
        let slices = ((22.0 - phase) / step).floor() + 1.0;
        let last = phase + (slices - 1.0) * step;
        for (i, &v) in r.iter().enumerate() {
            let z = ((i / plane) as f32).clamp(phase, last);
            let want = a[i % plane] * z + b[i % plane];
            assert!((v - want).abs() < 1e-4, "step {step} phase {phase} voxel {i}: {v} != {want}");
        }
    }
    // No coarser than the voxels: the image itself.
    assert_eq!(reacquire_z(&lin, dims, 1.0, 0.3), lin);
    // Random columns: every value stays within its column's range, and
    // the profile along z is smoother (what thicker slices cost).
    let img: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..2.0)).collect();
    let r = reacquire_z(&img, dims, 2.5, 0.9);
    assert!(r.iter().all(|v| v.is_finite()));
    for p in 0..plane {
        let col = |v: &[f32]| (0..dims[0]).map(|z| v[z * plane + p]).collect::<Vec<f32>>();
        let (c, rc) = (col(&img), col(&r));
        let (lo, hi) = c.iter().fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        assert!(rc.iter().all(|&v| v >= lo - 1e-6 && v <= hi + 1e-6), "column {p} left its range");
        let rough = |c: &[f32]| c.windows(3).map(|w| (w[0] - 2.0 * w[1] + w[2]).abs()).sum::<f32>();
        assert!(rough(&rc) < 0.5 * rough(&c), "column {p}: {} against {}", rough(&rc), rough(&c));
    }
    // In random_patch: about half the patches are re-acquired, the target
    // never changes, and bad settings are refused by name.
    let tgt: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let s = sample(dims, img.clone(), tgt.clone(), 2.19);
    let aug = Augment { coarser_z: 0.3, ..Augment::none() };
    let mut changed = 0;
    for _ in 0..40 {
        let (i, t) = random_patch(&s, dims, &aug, &mut rng);
        assert_eq!(t, tgt);
        changed += (i != img) as usize;
    }
    assert!((8..=32).contains(&changed), "{changed} of 40 patches re-acquired");
    let e = Augment { coarser_z: -0.1, ..Augment::none() }.validate().unwrap_err().to_string();
    assert!(e.contains("coarser_z"), "{e}");
}

#[test]
fn depth_ramp_scales_each_slice_by_a_log_linear_factor_within_its_range() {
    let dims = [9, 3, 4];
    let plane = dims[1] * dims[2];
    let n = dims[0] * plane;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let img: Vec<f32> = (0..n).map(|_| rng.random_range(0.1..2.0)).collect();
    // The function: slice z multiplied by exp(g (z/8 - 1/2)) exactly.
    let mut r = img.clone();
    depth_ramp(&mut r, dims, 0.7);
    for (i, (&a, &b)) in r.iter().zip(&img).enumerate() {
        let want = b as f64 * (0.7 * ((i / plane) as f64 / 8.0 - 0.5)).exp();
        assert!((a as f64 - want).abs() < 1e-5 * want.abs(), "voxel {i}: {a} != {want}");
    }
    // In random_patch (no flips, zoom or other augmentation): the ratio to
    // the image is one factor per slice, log-linear in z, with the first
    // and last slices at most 1 + depth_ramp apart, both ways over the
    // draws; the target never changes; a bad setting is refused by name.
    let tgt: Vec<f32> = (0..n).map(|i| (i % 5) as f32).collect();
    let s = sample(dims, img.clone(), tgt.clone(), 1.0);
    let aug = Augment { depth_ramp: 0.5, ..Augment::none() };
    let (mut up, mut down) = (0, 0);
    for _ in 0..60 {
        let (i, t) = random_patch(&s, dims, &aug, &mut rng);
        assert_eq!(t, tgt);
        let logs: Vec<f64> = (0..dims[0])
            .map(|z| {
                let f: Vec<f64> = (0..plane).map(|p| (i[z * plane + p] / img[z * plane + p]) as f64).collect();
                assert!(f.iter().all(|&v| (v - f[0]).abs() < 1e-5 * f[0]), "slice {z}: factors differ {f:?}");
                f[0].ln()
            })
            .collect();
        let g = logs[dims[0] - 1] - logs[0];
        assert!(g.abs() <= 1.5f64.ln() + 1e-5, "ramp {g}");
        assert!(logs[dims[0] / 2].abs() < 1e-5, "middle slice scaled by {}", logs[dims[0] / 2]);
        for (z, l) in logs.iter().enumerate() {
            assert!((l - g * (z as f64 / 8.0 - 0.5)).abs() < 1e-5, "slice {z}: log factor {l}, ramp {g}");
        }
        up += (g > 0.05) as usize;
        down += (g < -0.05) as usize;
    }
    assert!(up >= 10 && down >= 10, "ramps up {up}, down {down} of 60");
    assert!(aug.shifts_intensity() && !aug.intensity_off().shifts_intensity());
    let e = Augment { depth_ramp: -0.2, ..Augment::none() }.validate().unwrap_err().to_string();
    assert!(e.contains("depth_ramp"), "{e}");
}

#[test]
fn intensity_shifts_are_told_apart_from_blur_and_flips() {
    // What `train --freeze-bn` warns about: gain, gamma, offset, noise.
    assert!(Augment::default().shifts_intensity());
    assert!(!Augment::default().intensity_off().shifts_intensity());
    assert!(!Augment { blur: 1.0, blur_z: 1.5, flips: true, ..Augment::none() }.shifts_intensity());
    for a in [
        Augment { brightness: [0.5, 4.0], ..Augment::none() },
        Augment { gamma: [0.7, 1.0], ..Augment::none() },
        Augment { offset: 0.1, ..Augment::none() },
        Augment { noise: 0.05, ..Augment::none() },
    ] {
        assert!(a.shifts_intensity(), "{a:?}");
    }
}

#[test]
fn zoomed_patches_show_nuclei_larger_or_smaller_and_keep_a_binary_target() {
    use qcanet_gpu::train::patch::extract_zoomed;
    // One ball of radius 4 voxels at the centre of a 24³ sample; image = a
    // smooth ramp plus the ball, so the image resampling is checked too.
    let dims = [24usize, 24, 24];
    let mut img = vec![0f32; 24 * 24 * 24];
    let mut tgt = vec![0f32; 24 * 24 * 24];
    for z in 0..24 {
        for y in 0..24 {
            for x in 0..24 {
                let r2 = [z, y, x].iter().map(|&c| (c as f32 - 11.5).powi(2)).sum::<f32>();
                let i = (z * 24 + y) * 24 + x;
                tgt[i] = f32::from(r2 <= 16.0);
                img[i] = 0.01 * (z + 2 * y + 3 * x) as f32 + tgt[i];
            }
        }
    }
    let s = sample(dims, img, tgt, 1.0);
    let fg = |t: &[f32]| t.iter().filter(|&&v| v == 1.0).count() as f64;
    // A 12³ region around the ball resampled to 24³: the ball twice the
    // radius, about 8x the voxels; the image is the region's resampling.
    let (i2, t2) = extract_zoomed(&s, [6, 6, 6], [12; 3], [24; 3], [false; 3]);
    let (i1, t1) = extract(&s, [6, 6, 6], [12; 3], [false; 3]);
    assert!(t2.iter().all(|&v| v == 0.0 || v == 1.0));
    let ratio = fg(&t2) / fg(&t1);
    assert!((6.5..=9.5).contains(&ratio), "ball grew {ratio}x in voxels, about 8 expected");
    assert_eq!(i2, qcanet_gpu::preprocess::resample(i1, [12; 3], [24; 3], qcanet_gpu::preprocess::Interp::Linear));
    // The whole 24³ at 16³: the ball about (2/3)³ of its voxels.
    let (_, t3) = extract_zoomed(&s, [0; 3], [24; 3], [16; 3], [false; 3]);
    let ratio = fg(&t3) / fg(&s.target.data);
    assert!((0.2..=0.4).contains(&ratio), "ball kept {ratio} of its voxels, about 0.3 expected");

    // random_patch with zoom 0.5: patches of the asked size, binary targets,
    // the ball both larger and smaller than unzoomed over 60 draws (region
    // sizes 16..36: the whole ball is in every patch).
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let aug = Augment { zoom: 0.5, ..Augment::none() };
    let base = fg(&s.target.data);
    let (mut larger, mut smaller) = (0, 0);
    for _ in 0..60 {
        let (i, t) = random_patch(&s, dims, &aug, &mut rng);
        assert_eq!((i.len(), t.len()), (24 * 24 * 24, 24 * 24 * 24));
        assert!(t.iter().all(|&v| v == 0.0 || v == 1.0));
        let r = fg(&t) / base;
        larger += (r > 1.3) as usize;
        smaller += (r < 0.75) as usize;
    }
    assert!(larger >= 10 && smaller >= 10, "{larger} larger, {smaller} smaller of 60");
    // Off: the sample as it is (a full-size patch, no flips).
    let (_, t) = random_patch(&s, dims, &Augment::none(), &mut rng);
    assert_eq!(t, s.target.data);
    let e = Augment { zoom: -0.1, ..Augment::none() }.validate().unwrap_err().to_string();
    assert!(e.contains("zoom"), "{e}");
    // Zoom is geometry: it stays when intensity augmentation is switched off.
    assert_eq!(Augment::default().intensity_off().zoom, Augment::default().zoom);
}

/// A (z, y, x) target holding a ball of radius `r` at each centre.
fn balls(dims: [usize; 3], centres: &[[usize; 3]], r: f32) -> Vec<f32> {
    let [d, h, w] = dims;
    let mut t = vec![0f32; d * h * w];
    for c in centres {
        for z in 0..d {
            for y in 0..h {
                for x in 0..w {
                    let r2 = [z, y, x].iter().zip(c).map(|(&a, &b)| (a as f32 - b as f32).powi(2)).sum::<f32>();
                    if r2 <= r * r {
                        t[(z * h + y) * w + x] = 1.0;
                    }
                }
            }
        }
    }
    t
}

/// A random image (values 0..1) of `n` voxels.
fn random_image(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random::<f32>()).collect()
}

#[test]
fn object_centres_are_voxels_of_their_objects_nearest_their_centre_of_mass() {
    use qcanet_gpu::train::objects::object_centres;
    let dims = [9usize, 20, 23];
    let [d, h, w] = dims;
    // Two balls and a U (not convex: its centre of mass lies outside it).
    let mut t = balls(dims, &[[2, 3, 18], [6, 15, 18]], 1.5);
    let u: Vec<[usize; 3]> = (4..12).flat_map(|y| [[4, y, 5], [4, y, 11]]).chain((5..12).map(|x| [4, 11, x])).collect();
    for &[z, y, x] in &u {
        t[(z * h + y) * w + x] = 1.0;
    }
    let c = object_centres(&t, dims);
    assert_eq!(c.len(), 3, "{c:?}");
    assert!(c.contains(&[2, 3, 18]) && c.contains(&[6, 15, 18]), "ball centres {c:?}");
    let uc = c.iter().find(|p| u.contains(p)).expect("the U's centre is one of its voxels");
    // The U's centre of mass, (4, 9.0, 8.0) or so, is background; its voxel nearest it is on the base row.
    assert_eq!(uc[1], 11, "{uc:?}");
    assert_eq!(t[(uc[0] * h + uc[1]) * w + uc[2]], 1.0);
    assert!(object_centres(&vec![0.0; d * h * w], dims).is_empty());
}

#[test]
fn object_patches_are_centred_on_objects_each_equally_likely() {
    use qcanet_gpu::train::{random_batch, Centring, Objects};
    // A large sample with one small ball in a corner region, another with three.
    let dims = [30usize, 40, 44];
    let n = dims.iter().product();
    let a = sample(dims, random_image(n, 1), balls(dims, &[[5, 6, 7]], 2.0), 1.0);
    let b = sample(dims, random_image(n, 2), balls(dims, &[[25, 33, 37], [15, 20, 8], [4, 35, 30]], 2.0), 1.0);
    let samples = vec![a, b];
    let objects = Objects::index(&samples);
    assert_eq!(objects.len(), 4);
    assert_eq!(objects.centres.iter().filter(|(s, _)| *s == 0).count(), 1);

    // Every object equally likely: sample a (one object) a quarter of the time.
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let picks = 4000;
    let a_share = (0..picks).filter(|_| objects.pick(&mut rng).unwrap().0 == 0).count() as f64 / picks as f64;
    assert!((0.22..=0.28).contains(&a_share), "sample a picked {a_share} of the time, 0.25 expected");

    // All patches centred (flips and zoom on): each holds an object; at
    // random positions many 12³ patches of these volumes hold none.
    let aug = Augment { flips: true, zoom: 0.25, ..Augment::none() };
    let centring = Centring { objects: &objects, fraction: 1.0 };
    let holds = |t: &qcanet_gpu::tensor::CpuTensor| t.data.contains(&1.0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    for i in 0..100 {
        let (x, t, _) = random_batch(&samples, 12, 1, &aug, Some(centring), &mut rng);
        assert!(x.data.iter().all(|v| v.is_finite()));
        assert!(holds(&t), "centred patch {i} holds no object");
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let empty = (0..100).filter(|_| !holds(&random_batch(&samples, 12, 1, &aug, None, &mut rng).1)).count();
    assert!(empty >= 50, "only {empty} of 100 random patches hold no object");

    // Half centred: between the two.
    let half = Centring { objects: &objects, fraction: 0.5 };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let empty_half = (0..200).filter(|_| !holds(&random_batch(&samples, 12, 1, &aug, Some(half), &mut rng).1)).count();
    assert!((40..=140).contains(&empty_half), "{empty_half} of 200 half-centred patches hold no object");

    // Share 0, or no objects: the same random numbers as random positions.
    let zero = Centring { objects: &objects, fraction: 0.0 };
    let none = Objects { centres: vec![] };
    let aug = Augment::default();
    let draw = |c: Option<Centring>| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        (0..3).map(|_| random_batch(&samples, 12, 2, &aug, c, &mut rng).0.data).collect::<Vec<_>>()
    };
    let plain = draw(None);
    assert_eq!(draw(Some(zero)), plain);
    assert_eq!(draw(Some(Centring { objects: &none, fraction: 1.0 })), plain);
}

#[test]
fn centred_origins_hold_the_centre_and_stay_inside_the_volume() {
    use qcanet_gpu::train::objects::centred_origin;
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for _ in 0..500 {
        let n = rng.random_range(5..60usize);
        let region = rng.random_range(1..80usize);
        let c = rng.random_range(0..n);
        let o = centred_origin(c, region, n, &mut rng);
        if region <= n {
            assert!(o >= 0 && o as usize + region <= n, "origin {o} region {region} axis {n}");
            assert!((o as usize..o as usize + region).contains(&c), "centre {c} outside {o}+{region}");
        } else {
            assert!(o <= 0 && o + region as isize >= n as isize, "origin {o} region {region} axis {n}");
        }
    }
}

#[test]
fn object_patch_share_outside_0_1_is_refused() {
    let c = TrainConfig { object_patches: 1.5, ..TrainConfig::default() };
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("object_patches"), "{e}");
    assert!(TrainConfig { object_patches: 0.5, ..TrainConfig::default() }.validate().is_ok());
}

#[test]
fn separation_weights_need_cross_entropy_and_valid_parameters() {
    use qcanet_gpu::model::Arch;
    use qcanet_gpu::train::config::LossKind;
    use qcanet_gpu::train::Separation;
    let sep = |w0, sigma| Some(Separation { w0, sigma });
    let ndn = TrainConfig { model: Arch::Ndn, separation: sep(10.0, 3.0), ..TrainConfig::default() };
    assert!(ndn.validate().is_ok());
    for (c, what) in [
        (TrainConfig { loss: Some(LossKind::Dice), ..ndn.clone() }, "cross-entropy"),
        (TrainConfig { classes: 1, loss: None, ..ndn.clone() }, "cross-entropy"),
        (TrainConfig { separation: sep(-1.0, 3.0), ..ndn.clone() }, "separation weight"),
        (TrainConfig { separation: sep(10.0, 0.0), ..ndn.clone() }, "sigma"),
        (TrainConfig { separation: sep(10.0, f32::NAN), ..ndn.clone() }, "sigma"),
    ] {
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(what), "{what}: {e}");
    }
    // In a config file: σ defaults, an unknown key is named, the effective
    // config round-trips, and an older file (no table) has no map.
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("sep.toml");
    std::fs::write(&p, "model = \"ndn\"\n[separation]\nw0 = 5.0\n").unwrap();
    let c = TrainConfig::from_toml_file(&p).unwrap();
    assert_eq!(c.separation, sep(5.0, Separation::DEFAULT_SIGMA));
    assert_eq!(toml::from_str::<TrainConfig>(&c.to_toml()).unwrap(), c);
    std::fs::write(&p, "model = \"ndn\"\n[separation]\nw0 = 5.0\nsigmaa = 2.0\n").unwrap();
    let e = TrainConfig::from_toml_file(&p).unwrap_err().to_string();
    assert!(e.contains("sigmaa"), "{e}");
    std::fs::write(&p, "model = \"ndn\"\n").unwrap();
    assert_eq!(TrainConfig::from_toml_file(&p).unwrap().separation, None);
}

#[test]
fn validation_drops_specks_as_infer_does_and_a_bad_floor_is_refused() {
    // Training's validation scores with infer's floor unless told otherwise.
    assert_eq!(TrainConfig::default().min_volume_um3, qcanet_gpu::postprocess::MIN_NUCLEUS_UM3);
    for bad in [-1.0, f64::NAN] {
        let e = TrainConfig { min_volume_um3: bad, ..TrainConfig::default() }.validate().unwrap_err().to_string();
        assert!(e.contains("min_volume_um3"), "{e}");
    }
    assert!(TrainConfig { min_volume_um3: 0.0, ..TrainConfig::default() }.validate().is_ok());
}

#[test]
fn settings_that_cannot_train_are_refused_before_any_data_is_read() {
    let ok = TrainConfig::default();
    assert!(ok.validate().is_ok());
    for (c, what) in [
        (TrainConfig { weight_decay: -1.0, ..ok.clone() }, "weight_decay"),
        (TrainConfig { momentum: f32::NAN, ..ok.clone() }, "momentum"),
        (TrainConfig { momentum: 1.0, ..ok.clone() }, "momentum"),
        (TrainConfig { dice_smooth: f32::NAN, ..ok.clone() }, "dice_smooth"),
        (TrainConfig { class_weights: Some(vec![0.0, 0.0]), ..ok.clone() }, "class_weights"),
        (TrainConfig { class_weights: Some(vec![1.0, -2.0]), ..ok.clone() }, "class_weights"),
        (TrainConfig { val_tile: 16, val_overlap: 16, ..ok.clone() }, "val_overlap"),
        (TrainConfig { pixel_size: Some(1e-4), ..ok.clone() }, "pixel size"),
        (TrainConfig { pixel_size: Some(f64::NAN), ..ok.clone() }, "pixel size"),
        (TrainConfig { percentiles: [150.0, -3.0], ..ok.clone() }, "percentiles"),
    ] {
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(what), "{what}: {e}");
    }
}

#[test]
fn a_resume_names_the_settings_given_that_the_checkpoint_overrides() {
    let ckpt = TrainConfig { model: Arch::Ndn, lr: 5e-4, patch: 48, ..TrainConfig::default() };
    // Left at their defaults, or equal to the checkpoint's: nothing to say.
    let given = TrainConfig { model: Arch::Ndn, ..TrainConfig::default() };
    assert!(ckpt.differences(&given).is_empty(), "{:?}", ckpt.differences(&given));
    assert!(ckpt.differences(&ckpt).is_empty());
    // What a resume takes from the command line is not named.
    let taken = TrainConfig { epochs: 99, time_budget_minutes: Some(5.0), ..given.clone() };
    assert!(ckpt.differences(&taken).is_empty());
    // Set away from both: named.
    let mut d = ckpt.differences(&TrainConfig { lr: 5.0, batch: 4, ..given });
    d.sort();
    assert_eq!(d, vec!["batch".to_string(), "lr".to_string()]);
}
