//! The synthetic embryo generator: determinism, ground-truth consistency
//! (labels, NSN mask, NDN blobs), touching neighbours, value ranges, the
//! dataset layout and the `synth` command.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use qcanet_gpu::io;
use qcanet_gpu::synth::{self, SynthConfig, SynthEmbryo};

/// Connected components of `mask` (26- or 6-connectivity): a component id per voxel (0 = off).
fn components(mask: &[bool], dims: [usize; 3], full: bool) -> (Vec<u32>, usize) {
    let [d, h, w] = dims;
    let mut id = vec![0u32; mask.len()];
    let mut n = 0;
    for s in 0..mask.len() {
        if !mask[s] || id[s] != 0 {
            continue;
        }
        n += 1;
        id[s] = n as u32;
        let mut stack = vec![s];
        while let Some(v) = stack.pop() {
            let (z, y, x) = ((v / (h * w)) as isize, ((v / w) % h) as isize, (v % w) as isize);
            for dz in -1isize..=1 {
                for dy in -1isize..=1 {
                    for dx in -1isize..=1 {
                        let k = dz.abs() + dy.abs() + dx.abs();
                        if k == 0 || (!full && k > 1) {
                            continue;
                        }
                        let (zz, yy, xx) = (z + dz, y + dy, x + dx);
                        if zz < 0 || yy < 0 || xx < 0 || zz >= d as isize || yy >= h as isize || xx >= w as isize {
                            continue;
                        }
                        let u = (zz as usize * h + yy as usize) * w + xx as usize;
                        if mask[u] && id[u] == 0 {
                            id[u] = n as u32;
                            stack.push(u);
                        }
                    }
                }
            }
        }
    }
    (id, n)
}

fn check_consistent(e: &SynthEmbryo, cfg: &SynthConfig, what: &str) {
    let dims = cfg.dims;
    let len: usize = dims.iter().product();
    assert_eq!(e.raw.dims, dims);
    assert_eq!((e.raw.data.len(), e.nsn.len(), e.ndn.len(), e.labels.len()), (len, len, len, len));
    assert_eq!(e.raw.voxel_um, Some(cfg.voxel_um));
    // Labels are exactly 1..=nuclei.
    let set: BTreeSet<u32> = e.labels.iter().copied().filter(|&l| l > 0).collect();
    assert_eq!(set, (1..=e.nuclei as u32).collect::<BTreeSet<_>>(), "{what}: labels are not 1..=nuclei");
    // NSN is exactly the labelled voxels, 0/255.
    for (v, (&m, &l)) in e.nsn.iter().zip(&e.labels).enumerate() {
        assert_eq!(m, if l > 0 { 255 } else { 0 }, "{what}: nsn disagrees with labels at {v}");
    }
    // Each label is one connected piece; the mask's components are one per nucleus (touching ones separated).
    let fg: Vec<bool> = e.labels.iter().map(|&l| l > 0).collect();
    for full in [false, true] {
        let (cc, n) = components(&fg, dims, full);
        assert_eq!(n, e.nuclei, "{what}: mask has {n} components (26-conn {full}) for {} nuclei", e.nuclei);
        let mut map = BTreeMap::new();
        for (c, l) in cc.iter().zip(&e.labels) {
            if *l > 0 {
                assert_eq!(*map.entry(*c).or_insert(*l), *l, "{what}: a mask component holds two labels");
            }
        }
    }
    // NDN: 0/255, inside the mask, one blob per nucleus, each inside one nucleus.
    assert!(e.ndn.iter().all(|&v| v == 0 || v == 255));
    let blobs: Vec<bool> = e.ndn.iter().map(|&v| v == 255).collect();
    let (cc, n) = components(&blobs, dims, true);
    assert_eq!(n, e.nuclei, "{what}: {n} NDN blobs for {} nuclei", e.nuclei);
    let mut blob_label = BTreeMap::new();
    for (v, &c) in cc.iter().enumerate() {
        if c > 0 {
            assert!(e.labels[v] > 0, "{what}: NDN blob outside the nuclei");
            assert_eq!(*blob_label.entry(c).or_insert(e.labels[v]), e.labels[v], "{what}: blob spans two nuclei");
        }
    }
    let labels_with_blob: BTreeSet<u32> = blob_label.values().copied().collect();
    assert_eq!(labels_with_blob.len(), e.nuclei, "{what}: some nucleus has no blob");
    // Raw: uint16 values, background near the camera offset, nuclei brighter.
    assert!(e.raw.data.iter().all(|&x| (0.0..=65535.0).contains(&x) && x.fract() == 0.0));
    let median = |sel: bool| {
        let mut v: Vec<f32> = e.raw.data.iter().zip(&fg).filter(|(_, &f)| f == sel).map(|(&x, _)| x).collect();
        v.sort_by(f32::total_cmp);
        v[v.len() / 2]
    };
    let (bg, fgm) = (median(false), median(true));
    assert!((98.0..=125.0).contains(&bg), "{what}: background median {bg}");
    assert!(fgm > bg + 50.0, "{what}: nuclei median {fgm} not above background {bg}");
}

#[test]
fn generator_is_deterministic_for_a_seed() {
    let cfg = SynthConfig { dims: [21, 50, 47], nuclei: 5, ..Default::default() };
    let a = synth::generate(&cfg, 7);
    let b = synth::generate(&cfg, 7);
    assert_eq!(a.raw.data, b.raw.data);
    assert_eq!(a.labels, b.labels);
    assert_eq!(a.ndn, b.ndn);
    let c = synth::generate(&cfg, 8);
    assert_ne!(a.raw.data, c.raw.data);
    assert_ne!(a.labels, c.labels);
}

#[test]
fn ground_truth_is_consistent_across_stages() {
    for (n, seed) in [(2usize, 1u64), (5, 2), (8, 3), (16, 4), (16, 5), (33, 6), (64, 7)] {
        let cfg = SynthConfig { nuclei: n, ..Default::default() };
        let e = synth::generate(&cfg, seed);
        assert_eq!(e.nuclei, n, "asked for {n} nuclei");
        check_consistent(&e, &cfg, &format!("n={n} seed={seed}"));
    }
    // Odd small stacks and another voxel size too.
    let cfg = SynthConfig { dims: [23, 61, 57], voxel_um: [0.5, 0.6, 1.2], nuclei: 6, ..Default::default() };
    let e = synth::generate(&cfg, 9);
    check_consistent(&e, &cfg, "small");
}

#[test]
fn nuclei_get_smaller_with_the_stage_and_neighbours_touch() {
    let mean_size = |n: usize| {
        let cfg = SynthConfig { nuclei: n, mitotic_fraction: 0.0, ..Default::default() };
        let e = synth::generate(&cfg, 11);
        e.labels.iter().filter(|&&l| l > 0).count() as f64 / e.nuclei as f64
    };
    let (s4, s32) = (mean_size(4), mean_size(32));
    assert!(s4 > 1.5 * s32, "4-cell nuclei ({s4} voxels) should be much larger than 32-cell ones ({s32})");

    // Touching pairs: two labels within 2 voxels (the annotation gap) of each other.
    let cfg = SynthConfig::default();
    let [d, h, w] = cfg.dims;
    let mut touching = 0;
    for seed in 0..3 {
        let e = synth::generate(&cfg, seed);
        let mut pairs = BTreeSet::new();
        for z in 0..d {
            for y in 0..h {
                for x in 0..w - 2 {
                    let (a, b) = (e.labels[(z * h + y) * w + x], e.labels[(z * h + y) * w + x + 2]);
                    if a > 0 && b > 0 && a != b {
                        pairs.insert((a.min(b), a.max(b)));
                    }
                }
            }
        }
        touching += pairs.len();
    }
    assert!(touching >= 3, "only {touching} touching pairs in 3 embryos of 16 nuclei");
}

#[test]
fn invalid_configs_are_refused() {
    for (cfg, needle) in [
        (SynthConfig { nuclei: 1, ..Default::default() }, "nuclei"),
        (SynthConfig { nuclei: 65, ..Default::default() }, "nuclei"),
        (SynthConfig { nuclei_range: Some([9, 4]), ..Default::default() }, "nuclei"),
        (SynthConfig { dims: [2, 50, 50], ..Default::default() }, "dims"),
        (SynthConfig { voxel_um: [0.8, 0.0, 1.0], ..Default::default() }, "voxel"),
        (SynthConfig { gain_adu: -1.0, ..Default::default() }, "gain"),
        (SynthConfig { touch_fraction: f64::NAN, ..Default::default() }, "touch_fraction"),
    ] {
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }
    SynthConfig::default().validate().unwrap();
}

#[test]
fn dataset_layout_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SynthConfig { dims: [17, 45, 43], nuclei: 3, nuclei_range: Some([2, 5]), ..Default::default() };
    let names = synth::write_dataset(dir.path(), &cfg, 3, 1, 42).unwrap();
    assert_eq!(names, vec!["synth_000.tif", "synth_001.tif", "synth_002.tif"]);
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    assert_eq!(read(&dir.path().join("split_list/train.txt")), "synth_000.tif\nsynth_001.tif\n");
    assert_eq!(read(&dir.path().join("split_list/validation.txt")), "synth_002.tif\n");
    let meta: serde_json::Value = serde_json::from_str(&read(&dir.path().join("synth_config.json"))).unwrap();
    assert_eq!(meta["seed"], 42);
    let back: SynthConfig = serde_json::from_value(meta["config"].clone()).unwrap();
    assert_eq!(back, cfg);
    for n in &names {
        let raw = io::read_volume(&dir.path().join("images_raw").join(n)).unwrap();
        let nsn = io::read_volume(&dir.path().join("images_nsn").join(n)).unwrap();
        let ndn = io::read_volume(&dir.path().join("images_ndn").join(n)).unwrap();
        let lab = io::read_volume(&dir.path().join("labels_instance").join(n)).unwrap();
        for v in [&raw, &nsn, &ndn, &lab] {
            assert_eq!(v.dims, cfg.dims);
            let vx = v.voxel_um.expect("voxel size written");
            assert!((vx[2] - 1.75).abs() < 1e-9 && (vx[0] - 0.8).abs() < 1e-6, "{vx:?}");
        }
        let k = lab.data.iter().cloned().fold(0.0f32, f32::max) as usize;
        assert!((2..=5).contains(&k), "{n}: {k} nuclei outside 2..=5");
        assert!(nsn.data.iter().zip(&lab.data).all(|(&m, &l)| (m == 255.0) == (l > 0.0)));
    }
    // Same seed, same files.
    let dir2 = tempfile::tempdir().unwrap();
    synth::write_dataset(dir2.path(), &cfg, 3, 1, 42).unwrap();
    for n in &names {
        let a = std::fs::read(dir.path().join("images_raw").join(n)).unwrap();
        let b = std::fs::read(dir2.path().join("images_raw").join(n)).unwrap();
        assert!(a == b, "{n} differs between runs with the same seed");
    }
    assert!(synth::write_dataset(dir2.path(), &cfg, 2, 3, 1).is_err(), "validation > count must fail");
}

#[test]
fn synth_command_writes_and_refuses_to_overwrite() {
    let exe = env!("CARGO_BIN_EXE_qcanet-gpu");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let run = |extra: &[&str]| {
        std::process::Command::new(exe)
            .args(["synth", "-o", out.to_str().unwrap(), "--count", "2", "--validation", "1"])
            .args(["--nuclei", "3..4", "--seed", "5", "--dims", "15,40,41"])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.join("images_raw/synth_001.tif").exists());
    assert_eq!(io::read_volume(&out.join("images_raw/synth_000.tif")).unwrap().dims, [15, 40, 41]);
    let o = run(&[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not empty") && err.contains("--overwrite"), "{err}");
    let o = run(&["--overwrite"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&["--overwrite", "--nuclei", "1..99"]);
    assert!(!o.status.success());
}
