//! Scores of a folder of predictions against a folder of ground truth: files
//! paired by name, one [`Evaluation`] per volume, a table, a CSV and a plot of
//! F1 and SEG against the number of true nuclei.
//!
//! Pairing: a ground-truth file `NAME.tif` pairs with the prediction
//! `NAME_labels.tif` (what `infer` writes for `NAME.tif`) or, in a folder
//! without `*_labels.tif` files, `NAME.tif`. In a folder holding
//! `*_labels.tif` files only those are predictions (the input stacks `infer`
//! wrote them beside are not); probability maps (`*_nsn_prob.tif`,
//! `*_ndn_prob.tif`) and non-TIFF files are never predictions.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{evaluate_files, Evaluation};
use crate::error::{Error, Result};
use crate::io::{is_tiff, LABELS_SUFFIX, NDN_PROB_SUFFIX, NSN_PROB_SUFFIX};
use crate::postprocess::Connectivity;

/// Volumes with at least this many true nuclei get their own mean F1 (the
/// late, crowded stages, where a model breaks first).
pub const CROWDED_NUCLEI: usize = 40;

/// At most this many files are named in one "missing" error.
const NAMED_IN_ERRORS: usize = 10;

/// One prediction and its ground truth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    /// The ground truth's file stem.
    pub name: String,
    pub pred: PathBuf,
    pub gt: PathBuf,
}

fn stem(p: &Path) -> String {
    crate::io::stack_stem(p).to_string_lossy().into_owned()
}

/// The `.tif`/`.tiff` files of `dir`, sorted by name.
fn tiffs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::file(dir, format!("cannot list folder: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| f.is_file() && is_tiff(f))
        .collect();
    v.sort();
    Ok(v)
}

/// `name -> file`, refusing two files for one name (`a.tif` and `a.tiff`).
fn by_name(files: impl IntoIterator<Item = (String, PathBuf)>, what: &str) -> Result<BTreeMap<String, PathBuf>> {
    let mut m: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (name, path) in files {
        if let Some(other) = m.get(&name) {
            return Err(Error::invalid(format!(
                "{} and {} are both {what} for '{name}': keep one",
                other.display(),
                path.display()
            )));
        }
        m.insert(name, path);
    }
    Ok(m)
}

/// Prediction files of `dir` by the ground-truth name they score (see the
/// module documentation).
fn predictions(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let files: Vec<PathBuf> = tiffs(dir)?
        .into_iter()
        .filter(|f| {
            let s = stem(f);
            !(s.ends_with(NSN_PROB_SUFFIX) || s.ends_with(NDN_PROB_SUFFIX))
        })
        .collect();
    let labelled: Vec<(String, PathBuf)> =
        files.iter().filter_map(|f| stem(f).strip_suffix(LABELS_SUFFIX).map(|n| (n.to_string(), f.clone()))).collect();
    let chosen = if labelled.is_empty() {
        files.into_iter().map(|f| (stem(&f), f)).collect()
    } else {
        let others = files.len() - labelled.len();
        if others > 0 {
            log::info!(
                "{}: scoring the {} *{LABELS_SUFFIX}.tif files, not the {others} other TIFF(s)",
                dir.display(),
                labelled.len()
            );
        }
        labelled
    };
    if chosen.is_empty() {
        return Err(Error::file(
            dir,
            format!("folder holds no predicted labels (NAME{LABELS_SUFFIX}.tif or NAME.tif)"),
        ));
    }
    by_name(chosen, "predictions")
}

/// Names in a list file (one a line, as in BBBC050's `split_list/*.txt`):
/// blank lines and `#` comments skipped, folders and a `.tif`/`.tiff`
/// extension dropped, repeats kept once.
pub fn read_list(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, format!("cannot read list: {e}")))?;
    let mut names: Vec<String> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let file = Path::new(line);
        let name = match file.file_name() {
            Some(_) if is_tiff(file) => stem(file),
            Some(n) => n.to_string_lossy().into_owned(),
            None => continue,
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        return Err(Error::file(path, "list names no volume"));
    }
    Ok(names)
}

/// "a, b, c and 4 more".
fn some_of(paths: &[String]) -> String {
    let shown = paths.iter().take(NAMED_IN_ERRORS).cloned().collect::<Vec<_>>().join(", ");
    match paths.len().saturating_sub(NAMED_IN_ERRORS) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// Pairs the predictions in `pred_dir` with the ground truth in `gt_dir` by
/// name (see the module documentation), sorted by name; with `list`, only
/// the volumes it names. A ground-truth file without a prediction, a
/// prediction without ground truth (outside `list`'s restriction), a listed
/// name without ground truth and an empty folder are errors naming the files.
pub fn pair_folders(pred_dir: &Path, gt_dir: &Path, list: Option<&Path>) -> Result<Vec<Pair>> {
    let gt = by_name(tiffs(gt_dir)?.into_iter().map(|f| (stem(&f), f)), "ground truth")?;
    if gt.is_empty() {
        return Err(Error::file(gt_dir, "folder holds no .tif/.tiff ground truth"));
    }
    let pred = predictions(pred_dir)?;
    let names: Vec<String> = match list {
        Some(l) => {
            let names = read_list(l)?;
            let unknown: Vec<String> = names.iter().filter(|n| !gt.contains_key(*n)).cloned().collect();
            if !unknown.is_empty() {
                return Err(Error::file(
                    l,
                    format!(
                        "{} listed volume(s) have no ground truth in {}: {}",
                        unknown.len(),
                        gt_dir.display(),
                        some_of(&unknown)
                    ),
                ));
            }
            names
        }
        None => gt.keys().cloned().collect(),
    };
    let mut problems = Vec::new();
    let no_pred: Vec<String> =
        names.iter().filter(|n| !pred.contains_key(*n)).map(|n| gt[n].display().to_string()).collect();
    if !no_pred.is_empty() {
        problems.push(format!(
            "{} ground-truth file(s) have no prediction (NAME{LABELS_SUFFIX}.tif or NAME.tif) in {}: {}",
            no_pred.len(),
            pred_dir.display(),
            some_of(&no_pred)
        ));
    }
    if list.is_none() {
        let no_gt: Vec<String> =
            pred.iter().filter(|(n, _)| !gt.contains_key(*n)).map(|(_, p)| p.display().to_string()).collect();
        if !no_gt.is_empty() {
            problems.push(format!(
                "{} prediction(s) have no ground truth in {}: {}",
                no_gt.len(),
                gt_dir.display(),
                some_of(&no_gt)
            ));
        }
    }
    if !problems.is_empty() {
        return Err(Error::invalid(problems.join("; ")));
    }
    let mut pairs: Vec<Pair> =
        names.into_iter().map(|n| Pair { pred: pred[&n].clone(), gt: gt[&n].clone(), name: n }).collect();
    pairs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(pairs)
}

/// One volume's scores.
#[derive(Clone, Debug, serde::Serialize)]
pub struct VolumeScore {
    pub name: String,
    pub pred: PathBuf,
    pub gt: PathBuf,
    pub scores: Evaluation,
}

/// Totals and means over the volumes.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Summary {
    pub volumes: usize,
    /// Sums over the volumes.
    pub pred_objects: usize,
    pub gt_objects: usize,
    pub tp: usize,
    /// Means over the volumes.
    pub f1: f64,
    pub seg: f64,
    pub foreground_iou: f64,
    pub average_precision: f64,
    /// Volumes with at least [`CROWDED_NUCLEI`] true nuclei, and their mean
    /// F1 (`None` when there is none).
    pub crowded_volumes: usize,
    pub crowded_f1: Option<f64>,
}

impl Summary {
    pub fn of(volumes: &[VolumeScore]) -> Summary {
        let mean = |v: &[&VolumeScore], f: fn(&Evaluation) -> f64| {
            (!v.is_empty()).then(|| v.iter().map(|s| f(&s.scores)).sum::<f64>() / v.len() as f64)
        };
        let all: Vec<&VolumeScore> = volumes.iter().collect();
        let crowded: Vec<&VolumeScore> =
            all.iter().copied().filter(|s| s.scores.gt_objects >= CROWDED_NUCLEI).collect();
        let nan = f64::NAN;
        Summary {
            volumes: volumes.len(),
            pred_objects: volumes.iter().map(|s| s.scores.pred_objects).sum(),
            gt_objects: volumes.iter().map(|s| s.scores.gt_objects).sum(),
            tp: volumes.iter().map(|s| s.scores.matching.tp).sum(),
            f1: mean(&all, |e| e.matching.f1).unwrap_or(nan),
            seg: mean(&all, |e| e.seg).unwrap_or(nan),
            foreground_iou: mean(&all, |e| e.foreground_iou).unwrap_or(nan),
            average_precision: mean(&all, |e| e.average_precision).unwrap_or(nan),
            crowded_volumes: crowded.len(),
            crowded_f1: mean(&crowded, |e| e.matching.f1),
        }
    }
}

/// Every volume's scores and their summary.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DatasetEvaluation {
    pub summary: Summary,
    pub volumes: Vec<VolumeScore>,
}

/// Scores each pair (see [`evaluate_files`]); errors name the file.
pub fn evaluate_pairs(pairs: &[Pair], conn: Connectivity) -> Result<DatasetEvaluation> {
    log::info!("scoring {} volume(s)", pairs.len());
    let mut volumes = Vec::with_capacity(pairs.len());
    for (k, p) in pairs.iter().enumerate() {
        let scores = evaluate_files(&p.pred, &p.gt, conn)?;
        log::debug!("{}/{} {}: F1 {:.4}", k + 1, pairs.len(), p.name, scores.matching.f1);
        volumes.push(VolumeScore { name: p.name.clone(), pred: p.pred.clone(), gt: p.gt.clone(), scores });
    }
    Ok(DatasetEvaluation { summary: Summary::of(&volumes), volumes })
}

/// [`pair_folders`] then [`evaluate_pairs`].
pub fn evaluate_folders(
    pred_dir: &Path,
    gt_dir: &Path,
    list: Option<&Path>,
    conn: Connectivity,
) -> Result<DatasetEvaluation> {
    evaluate_pairs(&pair_folders(pred_dir, gt_dir, list)?, conn)
}

/// Where the CSV and the plot go by default: `eval.csv` in the prediction
/// folder, and the plot beside the CSV with the extension `.png`.
pub fn report_paths(pred_dir: &Path, csv: Option<&Path>, plot: Option<&Path>) -> (PathBuf, PathBuf) {
    let csv = csv.map(Path::to_path_buf).unwrap_or_else(|| pred_dir.join("eval.csv"));
    let plot = plot.map(Path::to_path_buf).unwrap_or_else(|| csv.with_extension("png"));
    (csv, plot)
}

/// Refuses a CSV or plot path that names one of the scored files, or one
/// path for both (the plot would replace the CSV).
pub fn check_report_paths(csv: &Path, plot: &Path, pairs: &[Pair]) -> Result<()> {
    if crate::io::same_file(csv, plot) {
        return Err(Error::file(csv, "is both the CSV and the plot: give --csv and --plot different names"));
    }
    let inputs: Vec<&Path> = pairs.iter().flat_map(|p| [p.pred.as_path(), p.gt.as_path()]).collect();
    crate::io::refuse_input(csv, &inputs)?;
    crate::io::refuse_input(plot, &inputs)
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The CSV's header.
pub const CSV_HEADER: &str = "name,pred_file,gt_file,pred_objects,gt_objects,tp,fp,fn,precision,recall,f1,seg,mucov,\
foreground_iou,foreground_dice,average_precision";

impl DatasetEvaluation {
    /// The per-volume table, the totals and means, and the mean F1 of the
    /// crowded volumes, as printed by `eval`.
    pub fn table(&self) -> String {
        let w = self.volumes.iter().map(|v| v.name.len()).max().unwrap_or(0).max(12);
        let mut t = String::new();
        let _ = writeln!(
            t,
            "{:<w$} {:>6} {:>6} {:>6} {:>7} {:>7} {:>7} {:>7}",
            "volume", "pred", "true", "TP", "F1", "SEG", "IoU", "AP"
        );
        let row = |t: &mut String, name: &str, counts: [usize; 3], scores: [f64; 4]| {
            let [p, g, tp] = counts;
            let [f1, seg, iou, ap] = scores;
            let _ = writeln!(t, "{name:<w$} {p:>6} {g:>6} {tp:>6} {f1:>7.4} {seg:>7.4} {iou:>7.4} {ap:>7.4}");
        };
        for v in &self.volumes {
            let e = &v.scores;
            row(
                &mut t,
                &v.name,
                [e.pred_objects, e.gt_objects, e.matching.tp],
                [e.matching.f1, e.seg, e.foreground_iou, e.average_precision],
            );
        }
        let s = &self.summary;
        row(
            &mut t,
            &format!("{} volumes", s.volumes),
            [s.pred_objects, s.gt_objects, s.tp],
            [s.f1, s.seg, s.foreground_iou, s.average_precision],
        );
        let _ = writeln!(t, "(last line: counts summed, scores averaged over volumes)");
        match s.crowded_f1 {
            Some(f) => {
                let _ = writeln!(
                    t,
                    "mean F1 over the {} volume(s) with >= {CROWDED_NUCLEI} true nuclei: {f:.4}",
                    s.crowded_volumes
                );
            }
            None => {
                let _ = writeln!(t, "no volume has >= {CROWDED_NUCLEI} true nuclei");
            }
        }
        t
    }

    /// One CSV line a volume under [`CSV_HEADER`].
    pub fn csv(&self) -> String {
        let mut t = format!("{CSV_HEADER}\n");
        for v in &self.volumes {
            let e = &v.scores;
            let m = &e.matching;
            let _ = writeln!(
                t,
                "{},{},{},{},{},{},{},{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6}",
                csv_field(&v.name),
                csv_field(&v.pred.display().to_string()),
                csv_field(&v.gt.display().to_string()),
                e.pred_objects,
                e.gt_objects,
                m.tp,
                m.fp,
                m.fn_,
                m.precision,
                m.recall,
                m.f1,
                e.seg,
                e.mucov,
                e.foreground_iou,
                e.foreground_dice,
                e.average_precision
            );
        }
        t
    }

    /// Writes [`Self::csv`] to `path` atomically.
    pub fn write_csv(&self, path: &Path) -> Result<()> {
        let text = self.csv();
        crate::io::write_atomic(path, |w| {
            w.write_all(text.as_bytes()).map_err(|e| Error::file(path, format!("write failed: {e}")))
        })
    }

    /// Draws F1 and SEG against the number of true nuclei, one point per
    /// volume, into a PNG at `path` (atomically).
    pub fn plot(&self, path: &Path) -> Result<()> {
        let points: Vec<(usize, f64, f64)> =
            self.volumes.iter().map(|v| (v.scores.gt_objects, v.scores.matching.f1, v.scores.seg)).collect();
        super::plot::scores_against_nuclei(path, &points)
    }
}
