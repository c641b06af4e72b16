//! The `qcanet-gpu infer` and `figure` commands as a user runs them, with tiny
//! random-initialised networks (plumbing, not accuracy): outputs, exit codes,
//! messages naming the file, weights for the wrong network, no partial files.

mod common;
use common::files_in;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use qcanet_gpu::io;
use qcanet_gpu::model::weights::{write_weights, WeightsMeta};
use qcanet_gpu::model::{Arch, Layout, NetConfig, Network};
use qcanet_gpu::preprocess::Normalization;

const DIMS: [usize; 3] = [9, 20, 22];
const VOXEL: [f64; 3] = [0.8, 0.8, 1.75];

fn meta(arch: Arch) -> WeightsMeta {
    WeightsMeta {
        config: NetConfig { arch, depth: 1, base: 4, kernel: 3, in_channels: 1, classes: 2 },
        normalization: Normalization::default(),
        isotropic: true,
        pixel_um: None,
        trained_on: "nothing (random init, test)".into(),
        epochs: 0,
        val_iou: None,
        threshold: None,
        marker_dynamic: None,
        extent_threshold: None,
        min_volume_um3: None,
        label_unmarked: None,
    }
}

/// Tiny NSN and NDN weights in `dir`.
fn weights(dir: &Path) -> (PathBuf, PathBuf) {
    let ctx = common::ctx();
    let (n, d) = (dir.join("nsn.safetensors"), dir.join("ndn.safetensors"));
    Network::new(ctx, meta(Arch::Nsn), 1).unwrap().save(ctx, &n).unwrap();
    Network::new(ctx, meta(Arch::Ndn), 2).unwrap().save(ctx, &d).unwrap();
    (n, d)
}

fn stack(path: &Path) {
    let n: usize = DIMS.iter().product();
    let data: Vec<u16> = (0..n).map(|i| (100 + (i * 7919) % 1000) as u16).collect();
    io::write_u16(path, DIMS, &data, Some(VOXEL)).unwrap();
}

fn run(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_qcanet-gpu"));
    c.args(args).env("RUST_LOG", "info");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn infer_writes_labels_and_criteria_and_resumes() {
    let w = tempfile::tempdir().unwrap();
    let (n, d) = weights(w.path());
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("st.tif");
    stack(&input);
    let args =
        ["infer", s(&input), "--nsn", s(&n), "--ndn", s(&d), "--tile", "16", "--stride", "8", "--save-probabilities"];
    let o = run(&args, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        files_in(dir.path()),
        vec!["st.tif", "st_criteria.csv", "st_labels.tif", "st_ndn_prob.tif", "st_nsn_prob.tif"],
        "{}",
        stderr(&o)
    );
    let l = io::read_volume(&dir.path().join("st_labels.tif")).unwrap();
    assert_eq!(l.dims, DIMS);
    let v = l.voxel_um.unwrap();
    assert!((0..3).all(|i| (v[i] - VOXEL[i]).abs() < 1e-4), "{v:?}");
    let csv = std::fs::read_to_string(dir.path().join("st_criteria.csv")).unwrap();
    assert!(csv.lines().next().unwrap().starts_with("label"), "{csv}");
    // Second run: skipped, says so, exit 0.
    let o = run(&args, &[]);
    assert!(o.status.success());
    assert!(stderr(&o).contains("skipped"), "{}", stderr(&o));
}

#[test]
fn weights_for_the_wrong_network_are_refused() {
    let w = tempfile::tempdir().unwrap();
    let (n, d) = weights(w.path());
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("st.tif");
    stack(&input);
    // An NDN file passed as --nsn.
    let o = run(&["infer", s(&input), "--nsn", s(&d), "--ndn", s(&n)], &[]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("ndn.safetensors") && e.contains("NDN network") && e.contains("--nsn"), "{e}");
    // A file whose tensors do not fit what its metadata describes: the tensor is named.
    let bad = w.path().join("bad.safetensors");
    let small = meta(Arch::Nsn);
    let mut big = small.clone();
    big.config.base = 8;
    let ctx = common::ctx();
    let net = Network::new(ctx, small.clone(), 3).unwrap();
    let params = net.net.params_to_host(ctx).unwrap();
    let buffers = net.net.buffers_to_host(ctx).unwrap();
    let layout = Layout::new(&small.config);
    write_weights(&bad, &big, &layout, &params, &buffers, &[], Default::default(), false).unwrap();
    let o = run(&["infer", s(&input), "--nsn", s(&bad), "--ndn", s(&d)], &[]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("bad.safetensors") && e.contains("enc"), "tensor not named: {e}");
    // A missing file.
    let o = run(&["infer", s(&input), "--nsn", "/no/such/nsn.safetensors", "--ndn", s(&d)], &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/no/such/nsn.safetensors"), "{}", stderr(&o));
    assert_eq!(files_in(dir.path()), vec!["st.tif"], "outputs written despite the errors");
}

#[test]
fn bad_input_exits_non_zero_naming_the_file() {
    use tiff::encoder::{colortype, TiffEncoder};
    let w = tempfile::tempdir().unwrap();
    let (n, d) = weights(w.path());
    let dir = tempfile::tempdir().unwrap();
    let flat = dir.path().join("flat.tif");
    let mut e = TiffEncoder::new(std::fs::File::create(&flat).unwrap()).unwrap();
    e.write_image::<colortype::Gray16>(8, 6, &[7u16; 48]).unwrap();
    drop(e);
    let o = run(&["infer", s(&flat), "--nsn", s(&n), "--ndn", s(&d)], &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("flat.tif"), "{}", stderr(&o));
    let o = run(&["infer", s(&dir.path().join("missing.tif")), "--nsn", s(&n), "--ndn", s(&d)], &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("missing.tif"), "{}", stderr(&o));
    let o = run(&["infer", s(&flat), "--shard", "3/3", "--nsn", s(&n), "--ndn", s(&d)], &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("shard"), "{}", stderr(&o));
    assert_eq!(files_in(dir.path()), vec!["flat.tif"]);
}

#[test]
fn missing_default_weights_say_where_they_were_looked_for() {
    let e = qcanet_gpu::infer::predictors::locate_weights("no-such-net.safetensors").unwrap_err().to_string();
    assert!(
        e.contains("looked in") && e.contains("QCANET_WEIGHTS") && e.contains("weights/no-such-net.safetensors"),
        "{e}"
    );
}

#[test]
fn figure_draws_a_png() {
    let w = tempfile::tempdir().unwrap();
    let (n, d) = weights(w.path());
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("st.tif");
    stack(&input);
    let png = dir.path().join("fig.png");
    let o = run(
        &["figure", s(&input), "-o", s(&png), "--nsn", s(&n), "--ndn", s(&d), "--tile", "16", "--stride", "8"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let b = std::fs::read(&png).unwrap();
    assert_eq!(&b[..4], b"\x89PNG");
    assert!(stderr(&o).contains("QCANet: ") && stderr(&o).contains(" objects"), "{}", stderr(&o));

    // An existing PNG or label file is kept unless --overwrite, and the refusal comes before any prediction.
    std::fs::write(&png, b"mine").unwrap();
    let labels = dir.path().join("labels");
    std::fs::create_dir(&labels).unwrap();
    let qc = labels.join("st_qcanet_labels.tif");
    let base = ["figure", s(&input), "-o", s(&png), "--nsn", s(&n), "--ndn", s(&d), "--tile", "16", "--stride", "8"];
    let o = run(&base, &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("fig.png exists") && stderr(&o).contains("--overwrite"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("objects"), "refused after predicting: {}", stderr(&o));
    assert_eq!(std::fs::read(&png).unwrap(), b"mine");
    std::fs::write(&qc, b"mine too").unwrap();
    let with_labels = [&base[..], &["--save-labels", s(&labels), "--overwrite"]].concat();
    let o = run(&with_labels[..with_labels.len() - 1], &[]);
    assert!(!o.status.success());
    assert_eq!(std::fs::read(&png).unwrap(), b"mine");
    assert_eq!(std::fs::read(&qc).unwrap(), b"mine too");
    let o = run(&with_labels, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(&std::fs::read(&png).unwrap()[..4], b"\x89PNG");
    assert_eq!(io::read_volume(&qc).unwrap().dims, DIMS);
    assert!(labels.join("st_nsn_ccl_labels.tif").exists());
}

#[test]
fn test_time_augmentation_runs_and_a_bad_view_count_is_refused() {
    let w = tempfile::tempdir().unwrap();
    let (n, d) = weights(w.path());
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("st.tif");
    stack(&input);
    let o = run(&["infer", s(&input), "--nsn", s(&n), "--ndn", s(&d), "--tile", "16", "--tta", "3"], &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--tta") && stderr(&o).contains("3 views"), "{}", stderr(&o));
    assert!(!dir.path().join("st_labels.tif").exists());
    let o =
        run(&["infer", s(&input), "--nsn", s(&n), "--ndn", s(&d), "--tile", "16", "--stride", "8", "--tta", "4"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let l = io::read_volume(&dir.path().join("st_labels.tif")).unwrap();
    assert_eq!(l.dims, DIMS);
}

#[test]
fn a_negative_minimum_volume_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("st.tif");
    stack(&input);
    let data = dir.path().to_str().unwrap();
    for cmd in [
        vec!["infer", s(&input)],
        vec!["postprocess", "--seg", s(&input), "--det", s(&input), "-o", "x.tif"],
        vec!["calibrate", "--data", data, "-o", "x"],
        vec!["train", "--model", "ndn", "--data", data, "--out", "x"],
    ] {
        let mut args = cmd.clone();
        args.push("--min-volume=-1");
        let o = run(&args, &[]);
        assert!(!o.status.success(), "{cmd:?}");
        assert!(stderr(&o).contains("--min-volume") && stderr(&o).contains("0 or more"), "{}", stderr(&o));
    }
    assert_eq!(files_in(dir.path()), vec!["st.tif"]);
}

#[test]
fn the_floor_on_object_volume_comes_from_the_ndn_unless_given() {
    // Threshold 0: the whole stack is one object (about 4,400 µm³), whatever
    // the random networks predict; an NDN calibrated with a floor above that
    // drops it, `--min-volume` overrides the NDN's floor.
    let w = tempfile::tempdir().unwrap();
    let (n, _) = weights(w.path());
    let ctx = common::ctx();
    let floored = w.path().join("ndn_floor.safetensors");
    let m = WeightsMeta { min_volume_um3: Some(1e6), ..meta(Arch::Ndn) };
    Network::new(ctx, m, 2).unwrap().save(ctx, &floored).unwrap();
    assert_eq!(Network::load(ctx, &floored).unwrap().meta.min_volume_or_default(), 1e6);
    let (_, plain) = weights(w.path());
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("st.tif");
    stack(&input);
    let objects = |ndn: &Path, extra: &[&str]| -> u32 {
        let out = tempfile::tempdir().unwrap();
        let mut args =
            vec!["infer", s(&input), "--nsn", s(&n), "--ndn", s(ndn), "--threshold", "0", "-o", s(out.path())];
        args.extend_from_slice(extra);
        let o = run(&args, &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        let l = io::read_volume(&out.path().join("st_labels.tif")).unwrap();
        l.data.iter().fold(0f32, |a, &b| a.max(b)) as u32
    };
    assert_eq!(objects(&plain, &[]), 1, "no floor stored: the default, 18 µm³, keeps the stack-sized object");
    assert_eq!(objects(&floored, &[]), 0, "the NDN's floor of 1e6 µm³ drops it");
    assert_eq!(objects(&floored, &["--min-volume", "0"]), 1, "--min-volume overrides the NDN's floor");
    // calibrate records the floor it chose the settings with in the NDN it writes.
    let data = dir.path().join("data");
    for sub in ["images_raw", "labels_instance", "split_list"] {
        std::fs::create_dir_all(data.join(sub)).unwrap();
    }
    stack(&data.join("images_raw/st.tif"));
    let truth: Vec<u8> = (0..DIMS.iter().product::<usize>()).map(|i| (i % 22 < 11) as u8 + 1).collect();
    io::write_u8(&data.join("labels_instance/st.tif"), DIMS, &truth, Some(VOXEL)).unwrap();
    std::fs::write(data.join("split_list/validation.txt"), "st.tif\n").unwrap();
    let cal = dir.path().join("cal");
    let args = ["calibrate", "--nsn", s(&n), "--ndn", s(&plain), "--data", s(&data), "-o", s(&cal)];
    let o = run(&[&args[..], &["--thresholds", "0.5", "--dynamics", "0", "--min-volume", "7.5"]].concat(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(Network::load(ctx, &cal.join("ndn.safetensors")).unwrap().meta.min_volume_um3, Some(7.5));
}

#[test]
fn an_nsn_whose_weights_say_so_labels_its_unmarked_components() {
    // The NSN at threshold 0: the whole stack is one component (about 4,400 µm³); the NDN at
    // 0.9999, which these random networks (outputs near 0.5) never reach: no marker. The
    // component counts as a nucleus only where the NSN's weights say so (or --label-unmarked).
    let w = tempfile::tempdir().unwrap();
    let ctx = common::ctx();
    let nsn = |name: &str, label_unmarked: Option<bool>| -> PathBuf {
        let p = w.path().join(name);
        let m = WeightsMeta { threshold: Some(0.0), label_unmarked, ..meta(Arch::Nsn) };
        Network::new(ctx, m, 1).unwrap().save(ctx, &p).unwrap();
        p
    };
    let (plain, labelling) = (nsn("plain.safetensors", None), nsn("labelling.safetensors", Some(true)));
    let ndn = w.path().join("ndn.safetensors");
    Network::new(ctx, WeightsMeta { threshold: Some(0.9999), ..meta(Arch::Ndn) }, 2).unwrap().save(ctx, &ndn).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("st.tif");
    stack(&input);
    let objects = |nsn: &Path, extra: &[&str]| -> u32 {
        let out = tempfile::tempdir().unwrap();
        let mut args = vec!["infer", s(&input), "--nsn", s(nsn), "--ndn", s(&ndn), "-o", s(out.path())];
        args.extend_from_slice(extra);
        let o = run(&args, &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        let l = io::read_volume(&out.path().join("st_labels.tif")).unwrap();
        l.data.iter().fold(0f32, |a, &b| a.max(b)) as u32
    };
    assert_eq!(objects(&plain, &[]), 0, "no marker, and the plain NSN's components are dropped");
    assert_eq!(objects(&plain, &["--label-unmarked"]), 1, "--label-unmarked keeps the component");
    assert_eq!(objects(&labelling, &[]), 1, "the labelling NSN's weights keep it");
    // calibrate scores with the NSN's unmarked components as nuclei, and keeps the flag in the NSN it writes.
    let data = dir.path().join("data");
    for sub in ["images_raw", "labels_instance", "split_list"] {
        std::fs::create_dir_all(data.join(sub)).unwrap();
    }
    stack(&data.join("images_raw/st.tif"));
    io::write_u8(&data.join("labels_instance/st.tif"), DIMS, &vec![1u8; DIMS.iter().product()], Some(VOXEL)).unwrap();
    std::fs::write(data.join("split_list/validation.txt"), "st.tif\n").unwrap();
    let f1_of = |nsn: &Path, extra: &[&str]| -> (String, PathBuf) {
        let cal = dir.path().join(format!("cal-{}{}", nsn.file_stem().unwrap().to_str().unwrap(), extra.concat()));
        let args = ["calibrate", "--nsn", s(nsn), "--ndn", s(&ndn), "--data", s(&data), "-o", s(&cal)];
        let o = run(&[&args[..], &["--thresholds", "0.2,0.9999", "--dynamics", "0"], extra].concat(), &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        (std::fs::read_to_string(cal.join("calibration.csv")).unwrap(), cal.join("nsn.safetensors"))
    };
    // The row at NSN 0.2 (the random NSN covers the stack), NDN 0.9999 (no marker): F1 1 only when labelled.
    let row = |csv: &str| csv.lines().find(|l| l.starts_with("0.200,0.200,1.000,")).map(str::to_owned);
    let f1 =
        |csv: &str| row(csv).and_then(|r| r.split(',').nth(4).map(str::to_owned)).unwrap_or_else(|| panic!("{csv}"));
    let unmarked = |p: &Path| Network::load(ctx, p).unwrap().meta.label_unmarked;
    let (csv, cal_nsn) = f1_of(&labelling, &[]);
    assert_eq!((f1(&csv).as_str(), unmarked(&cal_nsn)), ("1.000000", Some(true)));
    // Beside the means, each setting's scores on each volume: here the one volume, one nucleus found.
    let per_volume = std::fs::read_to_string(cal_nsn.with_file_name("calibration_volumes.csv")).unwrap();
    assert_eq!(per_volume.lines().count(), csv.lines().count(), "one volume: a row per setting\n{per_volume}");
    assert!(
        per_volume.lines().any(|l| l.starts_with("0.200,0.200,1.000,0.000,st.tif,1,1,1,1.000000,")),
        "{per_volume}"
    );
    let (csv, cal_nsn) = f1_of(&plain, &[]);
    assert_eq!((f1(&csv).as_str(), unmarked(&cal_nsn)), ("0.000000", None));
    // --label-unmarked overrides the NSN's own either way, and the NSN written records it.
    let (csv, cal_nsn) = f1_of(&labelling, &["--label-unmarked", "off"]);
    assert_eq!((f1(&csv).as_str(), unmarked(&cal_nsn)), ("0.000000", Some(false)));
    let (csv, cal_nsn) = f1_of(&plain, &["--label-unmarked", "on"]);
    assert_eq!((f1(&csv).as_str(), unmarked(&cal_nsn)), ("1.000000", Some(true)));
}

#[test]
fn a_channel_of_a_hyperstack_is_labelled_as_that_channel_saved_alone() {
    use tiff::encoder::{colortype, TiffEncoder};
    let w = tempfile::tempdir().unwrap();
    let (n, d) = weights(w.path());
    let dir = tempfile::tempdir().unwrap();
    // Two channels, ImageJ order (channel fastest): the second is the stack `stack` writes,
    // the first a different pattern; no voxel size in either (infer's default applies to both).
    let plane = DIMS[1] * DIMS[2];
    let second: Vec<u16> = (0..DIMS.iter().product::<usize>()).map(|i| (100 + (i * 7919) % 1000) as u16).collect();
    let first: Vec<u16> = second.iter().map(|&v| 1200 - v).collect();
    let hyper = dir.path().join("two.tif");
    let mut e = TiffEncoder::new(std::fs::File::create(&hyper).unwrap()).unwrap();
    for z in 0..DIMS[0] {
        for (c, src) in [&first, &second].into_iter().enumerate() {
            let mut img = e.new_image::<colortype::Gray16>(DIMS[2] as u32, DIMS[1] as u32).unwrap();
            if z == 0 && c == 0 {
                let desc =
                    format!("ImageJ=1.53t\nimages={}\nchannels=2\nslices={}\nhyperstack=true\n", 2 * DIMS[0], DIMS[0]);
                img.encoder().write_tag(tiff::tags::Tag::ImageDescription, desc.as_str()).unwrap();
            }
            img.write_data(&src[z * plane..(z + 1) * plane]).unwrap();
        }
    }
    drop(e);
    let alone = dir.path().join("alone.tif");
    io::write_u16(&alone, DIMS, &second, None).unwrap();
    let weights_args = ["--nsn", s(&n), "--ndn", s(&d), "--threshold", "0.5"];

    let o = run(&[&["infer", s(&hyper)][..], &weights_args].concat(), &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("two.tif") && stderr(&o).contains("--channel 1..2"), "{}", stderr(&o));
    let twice = format!("{0}: {0}", hyper.display());
    assert!(!stderr(&o).contains(&twice), "the summary names the file once: {}", stderr(&o));
    let o = run(&[&["infer", s(&hyper), "--channel", "3"][..], &weights_args].concat(), &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("two.tif") && stderr(&o).contains("2 channels"), "{}", stderr(&o));
    assert_eq!(files_in(dir.path()), vec!["alone.tif", "two.tif"], "nothing written for the refused runs");

    // The same probabilities and labels as the channel saved alone, and not the first channel's.
    let prob = |input: &Path, extra: &[&str], stem: &str| -> (Vec<f32>, Vec<f32>) {
        let out = tempfile::tempdir().unwrap();
        let args =
            [&["infer", s(input), "--save-probabilities", "-o", s(out.path())][..], extra, &weights_args].concat();
        let o = run(&args, &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        let read = |suffix: &str| io::read_volume(&out.path().join(format!("{stem}{suffix}.tif"))).unwrap();
        let (p, l) = (read("_nsn_prob"), read("_labels"));
        assert_eq!(l.dims, DIMS);
        (p.data, l.data)
    };
    let (p2, l2) = prob(&hyper, &["--channel", "2"], "two");
    let (pa, la) = prob(&alone, &[], "alone");
    let (p1, _) = prob(&hyper, &["--channel", "1"], "two");
    assert_eq!(p2, pa, "channel 2 of the hyperstack is predicted as the same stack saved alone");
    assert_eq!(l2, la);
    assert_ne!(p1, p2, "channel 1 is another image");
}

#[test]
fn flags_and_input_lists_that_cannot_work_are_refused_before_any_work() {
    let w = tempfile::tempdir().unwrap();
    let (n, d) = weights(w.path());
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = (dir.path().join("x"), dir.path().join("y"));
    std::fs::create_dir_all(&x).unwrap();
    std::fs::create_dir_all(&y).unwrap();
    let (a, b) = (x.join("st.tif"), y.join("st.tif"));
    stack(&a);
    stack(&b);
    let out = dir.path().join("out");
    let nets = ["--nsn", s(&n), "--ndn", s(&d)];
    let refused = |extra: &[&str], says: &[&str]| {
        let args = [&["infer", s(&a)][..], &nets[..], extra].concat();
        let o = run(&args, &[]);
        let e = stderr(&o);
        assert!(!o.status.success() && !e.contains("panicked"), "{extra:?}: {e}");
        assert!(says.iter().all(|w| e.contains(w)), "{extra:?} should say {says:?}: {e}");
    };
    // Two inputs whose outputs share a name in one folder: both named.
    refused(&[s(&b), "-o", s(&out)], &[s(&a), s(&b), "same outputs"]);
    for t in ["nan", "5", "1"] {
        refused(&["--threshold", t, "-o", s(&out)], &["--threshold", "from 0 up to"]);
    }
    refused(&["--tile", "16", "--stride", "24", "-o", s(&out)], &["--stride", "longer than the tile"]);
    refused(&["--tile", "18446744073709551615", "-o", s(&out)], &["--tile", "1 to 1024"]);
    assert!(!out.exists(), "nothing written");

    // A voxel size in nm taken for µm: the input is named, nothing aborts.
    let c = dir.path().join("nm.tif");
    let nvox: usize = DIMS.iter().product();
    io::write_u16(&c, DIMS, &vec![100u16; nvox], Some([800.0, 800.0, 1750.0])).unwrap();
    let o = run(&[&["infer", s(&c)][..], &nets[..], &["-o", s(&out)]].concat(), &[]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("nm.tif") && e.contains("more than 2^31") && e.contains("--voxel-size"), "{e}");

    // A tile given alone gets a stride within it.
    let o = run(&[&["infer", s(&a)][..], &nets[..], &["--tile", "16", "-o", s(&out)]].concat(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.join("st_labels.tif").is_file());
}

#[test]
fn postprocess_refuses_one_name_for_labels_and_criteria() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("st.tif");
    stack(&input);
    let o1 = dir.path().join("o1.tif");
    let o = run(&["postprocess", "--seg", s(&input), "--det", s(&input), "--out", s(&o1), "--csv", s(&o1)], &[]);
    let e = stderr(&o);
    assert!(!o.status.success() && e.contains("--csv and --out") && e.contains("o1.tif"), "{e}");
    assert!(!o1.exists());
    // And never writes over an input, however it is named.
    let dotted = dir.path().join(".").join("st.tif");
    let o = run(&["postprocess", "--seg", s(&input), "--det", s(&input), "--out", s(&dotted)], &[]);
    let e = stderr(&o);
    assert!(!o.status.success() && e.contains("is also an input"), "{e}");
}
