//! Folder evaluation (`eval --pred DIR --gt DIR`): pairing by name, scores of
//! hand-made volumes whose answers are known, the table, CSV and plot, every
//! error naming its file, and the command as a user runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use qcanet_gpu::io;
use qcanet_gpu::metrics::dataset::{self, Pair, CSV_HEADER};
use qcanet_gpu::postprocess::Connectivity;

const DIMS: [usize; 3] = [3, 12, 16];
const CROWDED_DIMS: [usize; 3] = [2, 20, 40];
const CONN: Connectivity = Connectivity::TwentySix;

/// A box of voxels with one label: `(label, [z0, z1], [y0, y1], [x0, x1])`.
type LabelBox = (u32, [usize; 2], [usize; 2], [usize; 2]);

/// A label volume of `dims` with `b` painted in.
fn boxes(dims: [usize; 3], b: &[LabelBox]) -> Vec<u32> {
    let mut v = vec![0u32; dims.iter().product()];
    for &(l, z, y, x) in b {
        for zz in z[0]..z[1] {
            for yy in y[0]..y[1] {
                for xx in x[0]..x[1] {
                    v[(zz * dims[1] + yy) * dims[2] + xx] = l;
                }
            }
        }
    }
    v
}

/// Two nuclei: 1 (3·4·4 = 48 voxels) and 2 (3·4·3 = 36).
fn gt_a(label: [u32; 2]) -> Vec<u32> {
    boxes(DIMS, &[(label[0], [0, 3], [1, 5], [1, 5]), (label[1], [0, 3], [6, 10], [8, 11])])
}

/// Three nuclei: 1 (3·4·4 = 48 voxels) and 2 (3·4·2 = 24) touching along x,
/// and 3 (3·3·3 = 27) apart.
fn gt_b() -> Vec<u32> {
    boxes(DIMS, &[(1, [0, 3], [2, 6], [2, 6]), (2, [0, 3], [2, 6], [6, 8]), (3, [0, 3], [8, 11], [11, 14])])
}

/// `gt_b` with nuclei 1 and 2 merged into one object.
fn merged_b() -> Vec<u32> {
    gt_b()
        .iter()
        .map(|&l| match l {
            0 => 0,
            1 | 2 => 5,
            _ => 8,
        })
        .collect()
}

/// 40 nuclei of 2·2·2 voxels in a 4 × 10 grid; `keep` of them (the first ones).
fn crowded(keep: usize) -> Vec<u32> {
    let b: Vec<_> = (0..40)
        .take(keep)
        .map(|k| (k as u32 + 1, [0, 2], [4 * (k / 10) + 1, 4 * (k / 10) + 3], [4 * (k % 10) + 1, 4 * (k % 10) + 3]))
        .collect();
    boxes(CROWDED_DIMS, &b)
}

fn write(path: &Path, dims: [usize; 3], labels: &[u32]) {
    io::write_labels(path, dims, labels, Some([0.8, 0.8, 1.75])).unwrap();
}

/// Ground truth `a`, `b`, `c` (40 nuclei) and predictions as `infer` names
/// them: `a` perfect (renumbered), `b` with two nuclei merged, `c` missing 4
/// nuclei; beside them the files `infer` also writes and the input stacks.
fn dataset_dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let (pred, gt) = (t.path().join("pred"), t.path().join("gt"));
    std::fs::create_dir_all(&pred).unwrap();
    std::fs::create_dir_all(&gt).unwrap();
    write(&gt.join("a.tif"), DIMS, &gt_a([1, 2]));
    write(&gt.join("b.tif"), DIMS, &gt_b());
    write(&gt.join("c.tif"), CROWDED_DIMS, &crowded(40));
    write(&pred.join("a_labels.tif"), DIMS, &gt_a([9, 4]));
    write(&pred.join("b_labels.tif"), DIMS, &merged_b());
    write(&pred.join("c_labels.tif"), CROWDED_DIMS, &crowded(36));
    // Not predictions: probabilities (fractional, would be refused as
    // labels), criteria, and an input stack with integer grey values.
    let n: usize = DIMS.iter().product();
    let prob: Vec<f32> = (0..n).map(|i| (i % 7) as f32 / 7.0).collect();
    io::write_f32(&pred.join("a_nsn_prob.tif"), DIMS, &prob, None).unwrap();
    io::write_f32(&pred.join("a_ndn_prob.tif"), DIMS, &prob, None).unwrap();
    std::fs::write(pred.join("a_criteria.csv"), "label,volume\n1,48\n").unwrap();
    let raw: Vec<u16> = (0..n).map(|i| (100 + i * 37 % 900) as u16).collect();
    io::write_u16(&pred.join("a.tif"), DIMS, &raw, None).unwrap();
    (t, pred, gt)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn pairs_by_labels_suffix_and_ignores_other_outputs() {
    let (_t, pred, gt) = dataset_dirs();
    let pairs = dataset::pair_folders(&pred, &gt, None).unwrap();
    let want: Vec<Pair> = ["a", "b", "c"]
        .iter()
        .map(|n| Pair {
            name: n.to_string(),
            pred: pred.join(format!("{n}_labels.tif")),
            gt: gt.join(format!("{n}.tif")),
        })
        .collect();
    assert_eq!(pairs, want);
    // Without `*_labels.tif` files, NAME.tif pairs with NAME.tif.
    let plain = _t.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    write(&plain.join("b.tif"), DIMS, &merged_b());
    let list = _t.path().join("only_b.txt");
    std::fs::write(&list, "# validation\nsome/folder/b.tif\n\n").unwrap();
    let pairs = dataset::pair_folders(&plain, &gt, Some(&list)).unwrap();
    assert_eq!(pairs, vec![Pair { name: "b".into(), pred: plain.join("b.tif"), gt: gt.join("b.tif") }]);
}

#[test]
fn ome_tiff_ground_truth_pairs_with_what_infer_writes() {
    // `infer x.ome.tif` writes x_labels.tif; ground truth x.ome.tif pairs with it.
    let t = tempfile::tempdir().unwrap();
    let (pred, gt) = (t.path().join("pred"), t.path().join("gt"));
    std::fs::create_dir_all(&pred).unwrap();
    std::fs::create_dir_all(&gt).unwrap();
    write(&gt.join("x.ome.tif"), DIMS, &gt_b());
    write(&pred.join("x_labels.tif"), DIMS, &merged_b());
    let list = t.path().join("list.txt");
    std::fs::write(&list, "x.ome.tif\n").unwrap();
    for l in [None, Some(list.as_path())] {
        let pairs = dataset::pair_folders(&pred, &gt, l).unwrap();
        assert_eq!(pairs, vec![Pair { name: "x".into(), pred: pred.join("x_labels.tif"), gt: gt.join("x.ome.tif") }]);
    }
}

#[test]
fn known_scores_table_csv_and_plot() {
    let (_t, pred, gt) = dataset_dirs();
    let e = dataset::evaluate_folders(&pred, &gt, None, CONN).unwrap();
    let names: Vec<&str> = e.volumes.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    let (a, b, c) = (&e.volumes[0].scores, &e.volumes[1].scores, &e.volumes[2].scores);
    // a: perfect.
    assert_eq!((a.pred_objects, a.gt_objects, a.matching.tp), (2, 2, 2));
    assert!([a.matching.f1, a.seg, a.foreground_iou, a.average_precision].iter().all(|&v| v == 1.0), "{a:?}");
    // b: the merged object (72 voxels) has IoU 48/72 with nucleus 1 (matched)
    // and 24/72 with nucleus 2; nucleus 3 is exact. TP 2, FP 0, FN 1.
    assert_eq!((b.pred_objects, b.gt_objects, b.matching.tp, b.matching.fn_), (2, 3, 2, 1));
    assert!(close(b.matching.f1, 0.8), "{b:?}");
    assert!(close(b.seg, (2.0 / 3.0 + 1.0 / 3.0 + 1.0) / 3.0), "{b:?}");
    assert_eq!(b.foreground_iou, 1.0);
    // AP: 2/3 of the score at t = 0.50..0.65 (TP 2 / 3), 1/4 at 0.70..0.95 (TP 1 / 4).
    assert!(close(b.average_precision, (4.0 * 2.0 / 3.0 + 6.0 * 0.25) / 10.0), "{b:?}");
    // c: 36 of 40 nuclei found exactly.
    assert_eq!((c.pred_objects, c.gt_objects, c.matching.tp), (36, 40, 36));
    let f1_c = 72.0 / 76.0;
    assert!(close(c.matching.f1, f1_c));

    let s = &e.summary;
    assert_eq!((s.volumes, s.pred_objects, s.gt_objects, s.tp), (3, 40, 45, 40));
    assert!(close(s.f1, (1.0 + 0.8 + f1_c) / 3.0), "{s:?}");
    assert!(close(s.seg, (1.0 + 2.0 / 3.0 + 0.9) / 3.0), "{s:?}");
    assert_eq!(s.crowded_volumes, 1);
    assert!(close(s.crowded_f1.unwrap(), f1_c));

    let table = e.table();
    assert!(table.lines().any(|l| l.starts_with('b') && l.contains("0.8000")), "{table}");
    assert!(table.contains("3 volumes") && table.contains(&format!("{f1_c:.4}")), "{table}");
    assert!(table.contains("mean F1 over the 1 volume(s) with >= 40 true nuclei"), "{table}");

    let (csv_path, png_path) = dataset::report_paths(&pred, None, None);
    assert_eq!((csv_path.clone(), png_path.clone()), (pred.join("eval.csv"), pred.join("eval.png")));
    e.write_csv(&csv_path).unwrap();
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0], CSV_HEADER);
    let b_row: Vec<&str> = lines[2].split(',').collect();
    assert_eq!(b_row.len(), CSV_HEADER.split(',').count());
    assert_eq!(&b_row[..3], ["b", pred.join("b_labels.tif").to_str().unwrap(), gt.join("b.tif").to_str().unwrap()]);
    assert_eq!(&b_row[3..8], ["2", "3", "2", "0", "1"]);
    assert_eq!((b_row[10], b_row[11]), ("0.800000", "0.666667"));

    e.plot(&png_path).unwrap();
    let png = std::fs::read(&png_path).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 1000, "{} bytes", png.len());
    let left: Vec<_> = std::fs::read_dir(&pred)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    // The CSV and plot in the prediction folder do not disturb a rerun.
    assert_eq!(dataset::pair_folders(&pred, &gt, None).unwrap().len(), 3);
}

#[test]
fn list_restricts_and_names_unknown_volumes() {
    let (t, pred, gt) = dataset_dirs();
    std::fs::remove_file(pred.join("a_labels.tif")).unwrap();
    let list = t.path().join("val.txt");
    std::fs::write(&list, "b.tif\nc.tif\nb.tif\n").unwrap();
    let e = dataset::evaluate_folders(&pred, &gt, Some(&list), CONN).unwrap();
    assert_eq!(e.volumes.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["b", "c"]);
    std::fs::write(&list, "b.tif\nzz_t001.tif\n").unwrap();
    let msg = dataset::evaluate_folders(&pred, &gt, Some(&list), CONN).unwrap_err().to_string();
    assert!(msg.contains("val.txt") && msg.contains("zz_t001") && msg.contains("no ground truth"), "{msg}");
    std::fs::write(&list, "# nothing\n\n").unwrap();
    let msg = dataset::evaluate_folders(&pred, &gt, Some(&list), CONN).unwrap_err().to_string();
    assert!(msg.contains("val.txt"), "{msg}");
}

fn err(pred: &Path, gt: &Path) -> String {
    dataset::evaluate_folders(pred, gt, None, CONN).unwrap_err().to_string()
}

#[test]
fn missing_files_are_named() {
    let (_t, pred, gt) = dataset_dirs();
    std::fs::remove_file(pred.join("b_labels.tif")).unwrap();
    write(&pred.join("extra_labels.tif"), DIMS, &gt_b());
    let msg = err(&pred, &gt);
    assert!(msg.contains("1 ground-truth file(s) have no prediction"), "{msg}");
    assert!(msg.contains(gt.join("b.tif").to_str().unwrap()), "{msg}");
    assert!(msg.contains("1 prediction(s) have no ground truth"), "{msg}");
    assert!(msg.contains(pred.join("extra_labels.tif").to_str().unwrap()), "{msg}");
    assert!(!msg.contains("a.tif,") && !msg.contains("c.tif"), "only the missing ones: {msg}");
}

#[test]
fn shape_mismatch_and_non_label_images_are_named() {
    let (_t, pred, gt) = dataset_dirs();
    write(&pred.join("b_labels.tif"), CROWDED_DIMS, &crowded(3));
    let msg = err(&pred, &gt);
    assert!(msg.contains("b_labels.tif") && msg.contains(gt.join("b.tif").to_str().unwrap()), "{msg}");
    assert!(msg.contains("[3, 12, 16]") && msg.contains("[2, 20, 40]"), "{msg}");
    write(&pred.join("b_labels.tif"), DIMS, &merged_b());

    // Probabilities saved under a label name: fractional values.
    let n: usize = DIMS.iter().product();
    let prob: Vec<f32> = gt_b().iter().map(|&l| if l > 0 { 0.75 } else { 0.125 }).collect();
    io::write_f32(&pred.join("c_labels.tif"), DIMS, &prob, None).unwrap();
    let msg = err(&pred, &gt);
    assert!(msg.contains("c_labels.tif") && msg.contains("not a label"), "{msg}");
    // Negative values in the ground truth.
    let neg: Vec<f32> = (0..n).map(|i| if i % 5 == 0 { -2.0 } else { (i % 3) as f32 }).collect();
    io::write_f32(&gt.join("a.tif"), DIMS, &neg, None).unwrap();
    write(&pred.join("c_labels.tif"), CROWDED_DIMS, &crowded(36));
    let msg = err(&pred, &gt);
    assert!(msg.contains(gt.join("a.tif").to_str().unwrap()) && msg.contains("value -2"), "{msg}");
}

#[test]
fn empty_and_ambiguous_folders_are_named() {
    let (t, pred, gt) = dataset_dirs();
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), "no images here").unwrap();
    let msg = err(&pred, &empty);
    assert!(msg.contains("empty") && msg.contains("no .tif"), "{msg}");
    let msg = err(&empty, &gt);
    assert!(msg.contains("empty") && msg.contains("no predicted labels"), "{msg}");
    // Two ground-truth files for one name.
    write(&gt.join("a.tiff"), DIMS, &gt_a([1, 2]));
    let msg = err(&pred, &gt);
    assert!(msg.contains("a.tif ") && msg.contains("a.tiff"), "{msg}");
}

// The command as a user runs it.

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qcanet-gpu")).args(args).env("RUST_LOG", "info").output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn cli_scores_folders() {
    let (t, pred, gt) = dataset_dirs();
    let o = run(&["eval", "--pred", s(&pred), "--gt", s(&gt)]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(out.lines().any(|l| l.starts_with("c ") && l.contains("36") && l.contains("40")), "{out}");
    assert!(out.contains("mean F1 over the 1 volume(s) with >= 40 true nuclei: 0.9474"), "{out}");
    let csv = std::fs::read_to_string(pred.join("eval.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4);
    assert!(std::fs::read(pred.join("eval.png")).unwrap().starts_with(b"\x89PNG"));

    // --json, --list, --csv and --plot elsewhere.
    let list = t.path().join("val.txt");
    std::fs::write(&list, "b.tif\n").unwrap();
    let (csv, png) = (t.path().join("out.csv"), t.path().join("fig.png"));
    let o = run(&[
        "eval",
        "--pred",
        s(&pred),
        "--gt",
        s(&gt),
        "--json",
        "--list",
        s(&list),
        "--csv",
        s(&csv),
        "--plot",
        s(&png),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["summary"]["volumes"], 1);
    assert_eq!(j["volumes"][0]["name"], "b");
    assert!((j["volumes"][0]["scores"]["matching"]["f1"].as_f64().unwrap() - 0.8).abs() < 1e-9);
    assert!(j["summary"]["crowded_f1"].is_null());
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 2);
    assert!(png.is_file());
}

#[test]
fn cli_errors_and_single_pairs() {
    let (_t, pred, gt) = dataset_dirs();
    std::fs::remove_file(pred.join("c_labels.tif")).unwrap();
    let o = run(&["eval", "--pred", s(&pred), "--gt", s(&gt)]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("error:") && e.contains(gt.join("c.tif").to_str().unwrap()) && !e.contains("panicked"), "{e}");
    assert!(!pred.join("eval.csv").exists());

    // A folder and a file.
    let b = pred.join("b_labels.tif");
    let o = run(&["eval", "--pred", s(&b), "--gt", s(&gt)]);
    let e = text(&o.stderr);
    assert!(!o.status.success() && e.contains("is a folder but") && e.contains("b_labels.tif"), "{e}");

    // Single pair of files: as before.
    let o = run(&["eval", "--pred", s(&b), "--gt", s(&gt.join("b.tif"))]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(out.contains("TP 2 FP 0 FN 1") && out.contains("F1 0.8000"), "{out}");
    let o = run(&["eval", "--pred", s(&b), "--gt", s(&gt.join("b.tif")), "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["gt_objects"], 3);
    let o = run(&["eval", "--pred", s(&b), "--gt", s(&gt.join("b.tif")), "--csv", "x.csv"]);
    assert!(!o.status.success() && text(&o.stderr).contains("apply to folders"));
}

#[test]
fn cli_never_writes_its_report_over_a_scored_file() {
    let (t, pred, gt) = dataset_dirs();
    let (g, p) = (gt.join("a.tif"), pred.join("b_labels.tif"));
    let before = [std::fs::read(&g).unwrap(), std::fs::read(&p).unwrap()];
    let csv = t.path().join("r.csv");
    for (report, target) in [(["--csv", s(&g)], &g), (["--plot", s(&p)], &p)] {
        let o = run(&["eval", "--pred", s(&pred), "--gt", s(&gt), report[0], report[1]]);
        let e = text(&o.stderr);
        assert!(!o.status.success() && e.contains("is also an input") && e.contains(s(target)), "{}: {e}", report[0]);
    }
    let o = run(&["eval", "--pred", s(&pred), "--gt", s(&gt), "--csv", s(&csv), "--plot", s(&csv)]);
    assert!(!o.status.success() && text(&o.stderr).contains("both the CSV and the plot"), "{}", text(&o.stderr));
    assert_eq!([std::fs::read(&g).unwrap(), std::fs::read(&p).unwrap()], before);
    assert!(!csv.exists() && !pred.join("eval.csv").exists(), "nothing written when refused");
}

#[test]
fn labels_at_or_above_2_24_are_refused_not_merged() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("big.tif");
    let n: usize = DIMS.iter().product();
    // 2^24 and 2^24 + 1 read as one float; 2^24 - 1 and 2^24 - 2 are exact.
    let mut l: Vec<u32> = (0..n).map(|i| if i % 3 == 0 { 16_777_215 } else { 16_777_214 }).collect();
    io::write_u32(&f, DIMS, &l, None).unwrap();
    let ok = qcanet_gpu::metrics::read_labels(&f, CONN).unwrap();
    assert_eq!(ok.labels, l);
    l[5] = 16_777_216;
    l[6] = 16_777_217;
    io::write_u32(&f, DIMS, &l, None).unwrap();
    let e = qcanet_gpu::metrics::read_labels(&f, CONN).unwrap_err().to_string();
    assert!(e.contains("big.tif") && e.contains("2^24"), "{e}");
}
