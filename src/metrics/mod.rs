//! Segmentation and instance scores of a predicted label image against a
//! ground-truth one (both u32, 0 = background, any other value one object).
//!
//! Definitions (objects are the sets of voxels sharing a non-zero label):
//! - foreground IoU = |P ∩ G| / |P ∪ G| and Dice = 2|P ∩ G| / (|P| + |G|) of
//!   the non-zero voxels;
//! - SEG (Cell Tracking Challenge): for each GT object g, the Jaccard index
//!   with the predicted object p covering more than half of g
//!   (|p ∩ g| > 0.5 |g|), 0 if there is none; mean over GT objects;
//! - MUCov (mean unweighted coverage, as QCANet's `evaluation_seg.py`
//!   computes it): for each *predicted* object, its best IoU over GT objects;
//!   mean over predicted objects;
//! - instance matching at an IoU threshold t: pairs with IoU ≥ t matched
//!   one-to-one greedily by decreasing IoU (unique for t > 0.5); TP matched
//!   pairs, FP = predicted − TP, FN = GT − TP; precision, recall, F1;
//! - AP (average precision as in the 2018 Data Science Bowl and StarDist):
//!   mean over t = 0.50, 0.55, …, 0.95 of TP / (TP + FP + FN).
//!
//! Empty sets: a score over zero objects is 1 when both images have no
//! objects and 0 otherwise (likewise IoU and Dice of two empty foregrounds).
//!
//! [`dataset`] scores folders of predictions against folders of ground truth.

pub mod dataset;
mod plot;

pub mod instances;

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::postprocess::{ccl, Connectivity, Grid};

/// Voxel counts of objects and of their pairwise intersections.
#[derive(Clone, Debug, Default)]
pub struct Overlap {
    pub pred_sizes: HashMap<u32, u64>,
    pub gt_sizes: HashMap<u32, u64>,
    /// |p ∩ g| for every pair that intersects.
    pub inter: HashMap<(u32, u32), u64>,
    /// Non-zero voxels in both, in pred, in gt.
    pub fg_inter: u64,
    pub fg_pred: u64,
    pub fg_gt: u64,
}

impl Overlap {
    pub fn iou(&self, p: u32, g: u32) -> f64 {
        let i = *self.inter.get(&(p, g)).unwrap_or(&0) as f64;
        let u = self.pred_sizes[&p] as f64 + self.gt_sizes[&g] as f64 - i;
        if u > 0.0 {
            i / u
        } else {
            0.0
        }
    }
}

/// Counts sizes and intersections. Errors when the lengths differ.
pub fn overlaps(pred: &[u32], gt: &[u32]) -> Result<Overlap> {
    if pred.len() != gt.len() {
        return Err(crate::Error::shape(
            "evaluate",
            format!("prediction has {} voxels, ground truth {}", pred.len(), gt.len()),
        ));
    }
    let mut o = Overlap::default();
    for (&p, &g) in pred.iter().zip(gt) {
        if p != 0 {
            *o.pred_sizes.entry(p).or_default() += 1;
            o.fg_pred += 1;
        }
        if g != 0 {
            *o.gt_sizes.entry(g).or_default() += 1;
            o.fg_gt += 1;
        }
        if p != 0 && g != 0 {
            *o.inter.entry((p, g)).or_default() += 1;
            o.fg_inter += 1;
        }
    }
    Ok(o)
}

fn empty_score(o: &Overlap) -> f64 {
    (o.pred_sizes.is_empty() && o.gt_sizes.is_empty()) as u8 as f64
}

/// Foreground IoU.
pub fn foreground_iou(o: &Overlap) -> f64 {
    let u = o.fg_pred + o.fg_gt - o.fg_inter;
    if u == 0 {
        1.0
    } else {
        o.fg_inter as f64 / u as f64
    }
}

/// Foreground Dice.
pub fn foreground_dice(o: &Overlap) -> f64 {
    let s = o.fg_pred + o.fg_gt;
    if s == 0 {
        1.0
    } else {
        2.0 * o.fg_inter as f64 / s as f64
    }
}

/// SEG (Cell Tracking Challenge).
pub fn seg(o: &Overlap) -> f64 {
    if o.gt_sizes.is_empty() {
        return empty_score(o);
    }
    let mut total = 0.0;
    for (&g, &gs) in &o.gt_sizes {
        let best = o
            .inter
            .iter()
            .filter(|((_, gg), &i)| *gg == g && 2 * i > gs)
            .map(|(&(p, _), _)| o.iou(p, g))
            .next()
            .unwrap_or(0.0);
        total += best;
    }
    total / o.gt_sizes.len() as f64
}

/// MUCov as QCANet computes it: mean over predicted objects of the best IoU
/// with any GT object.
pub fn mucov(o: &Overlap) -> f64 {
    if o.pred_sizes.is_empty() {
        return empty_score(o);
    }
    let mut best: HashMap<u32, f64> = o.pred_sizes.keys().map(|&p| (p, 0.0)).collect();
    for &(p, g) in o.inter.keys() {
        let v = o.iou(p, g);
        let b = best.get_mut(&p).unwrap();
        *b = b.max(v);
    }
    best.values().sum::<f64>() / o.pred_sizes.len() as f64
}

/// Instance matching at one IoU threshold.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Matching {
    pub threshold: f64,
    pub tp: usize,
    pub fp: usize,
    #[serde(rename = "fn")]
    pub fn_: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// TP / (TP + FP + FN).
    pub score: f64,
}

/// One-to-one matching of pairs with IoU ≥ `threshold`, greedy by decreasing
/// IoU (ties by labels, so deterministic).
pub fn match_instances(o: &Overlap, threshold: f64) -> Matching {
    let mut pairs: Vec<(f64, u32, u32)> =
        o.inter.keys().map(|&(p, g)| (o.iou(p, g), p, g)).filter(|&(v, _, _)| v >= threshold && v > 0.0).collect();
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut used_p = std::collections::HashSet::new();
    let mut used_g = std::collections::HashSet::new();
    let mut tp = 0;
    for (_, p, g) in pairs {
        if !used_p.contains(&p) && !used_g.contains(&g) {
            used_p.insert(p);
            used_g.insert(g);
            tp += 1;
        }
    }
    let (np, ng) = (o.pred_sizes.len(), o.gt_sizes.len());
    let (fp, fn_) = (np - tp, ng - tp);
    let ratio = |a: usize, b: usize| if b == 0 { empty_score(o) } else { a as f64 / b as f64 };
    Matching {
        threshold,
        tp,
        fp,
        fn_,
        precision: ratio(tp, np),
        recall: ratio(tp, ng),
        f1: ratio(2 * tp, np + ng),
        score: ratio(tp, tp + fp + fn_),
    }
}

/// Marker detection: how well predicted objects (detection blobs) give one
/// marker per ground-truth object, which is what a marker watershed needs.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Detection {
    /// Ground-truth objects overlapped by exactly one predicted object that
    /// overlaps no other ground-truth object.
    pub found: usize,
    pub pred_objects: usize,
    pub gt_objects: usize,
}

impl Detection {
    /// 2·found / (predicted + ground truth): 1 when every object has exactly
    /// one marker and there is no stray one (1 also when both are empty).
    pub fn f1(&self) -> f64 {
        let n = self.pred_objects + self.gt_objects;
        if n == 0 {
            1.0
        } else {
            2.0 * self.found as f64 / n as f64
        }
    }
}

/// One-to-one marker detection by overlap (any overlap counts; no IoU
/// threshold, since markers are meant to be smaller than their objects).
/// A ground-truth object hit by two markers, or sharing its marker with
/// another object, is not found.
pub fn marker_detection(o: &Overlap) -> Detection {
    let mut per_p: HashMap<u32, usize> = HashMap::new();
    let mut per_g: HashMap<u32, Vec<u32>> = HashMap::new();
    for &(p, g) in o.inter.keys() {
        *per_p.entry(p).or_default() += 1;
        per_g.entry(g).or_default().push(p);
    }
    let found = per_g.values().filter(|ps| ps.len() == 1 && per_p[&ps[0]] == 1).count();
    Detection { found, pred_objects: o.pred_sizes.len(), gt_objects: o.gt_sizes.len() }
}

/// The thresholds 0.50, 0.55, …, 0.95.
pub fn ap_thresholds() -> Vec<f64> {
    (0..10).map(|k| 0.5 + 0.05 * k as f64).collect()
}

/// Mean over [`ap_thresholds`] of TP / (TP + FP + FN).
pub fn average_precision(o: &Overlap) -> f64 {
    let t = ap_thresholds();
    t.iter().map(|&t| match_instances(o, t).score).sum::<f64>() / t.len() as f64
}

/// Every score of one prediction.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Evaluation {
    pub pred_objects: usize,
    pub gt_objects: usize,
    pub foreground_iou: f64,
    pub foreground_dice: f64,
    pub seg: f64,
    pub mucov: f64,
    /// Matching at IoU ≥ 0.5.
    pub matching: Matching,
    pub average_precision: f64,
    /// Matching at each AP threshold.
    pub per_threshold: Vec<Matching>,
}

/// Scores `pred` against `gt` (label images of `dims` = (z, y, x)).
pub fn evaluate(pred: &[u32], gt: &[u32], dims: [usize; 3]) -> Result<Evaluation> {
    let g = Grid::isotropic(dims);
    g.validate("evaluate")?;
    g.check_len("evaluate", "prediction", pred.len())?;
    g.check_len("evaluate", "ground truth", gt.len())?;
    let o = overlaps(pred, gt)?;
    let per: Vec<Matching> = ap_thresholds().iter().map(|&t| match_instances(&o, t)).collect();
    Ok(Evaluation {
        pred_objects: o.pred_sizes.len(),
        gt_objects: o.gt_sizes.len(),
        foreground_iou: foreground_iou(&o),
        foreground_dice: foreground_dice(&o),
        seg: seg(&o),
        mucov: mucov(&o),
        matching: match_instances(&o, 0.5),
        average_precision: per.iter().map(|m| m.score).sum::<f64>() / per.len() as f64,
        per_threshold: per,
    })
}

/// Labels the connected components of a binary mask (non-zero = foreground)
/// on the CPU, numbered 1..n by lowest linear index (the GPU version is
/// [`crate::postprocess::ccl::label`]).
pub fn labels_from_mask(mask: &[u8], dims: [usize; 3], conn: Connectivity) -> Result<Vec<u32>> {
    let g = Grid::isotropic(dims);
    g.validate("labels_from_mask")?;
    g.check_len("labels_from_mask", "mask", mask.len())?;
    Ok(ccl::reference::label(mask, dims, conn).0)
}

/// A label image read from a TIFF by [`read_labels`].
#[derive(Clone, Debug)]
pub struct LabelImage {
    pub labels: Vec<u32>,
    /// z, y, x
    pub dims: [usize; 3],
    /// The file was a binary mask (one non-zero value), labelled by
    /// connected components.
    pub binary: bool,
}

/// Labels of a TIFF: kept as they are, or, for a binary mask (one non-zero
/// value), its connected components. An image with a negative or fractional
/// value (e.g. probabilities) is refused, naming the file, and so is a label
/// of 2^24 or more, which the reader's 32-bit floats cannot tell from its
/// neighbours.
pub fn read_labels(path: &Path, conn: Connectivity) -> Result<LabelImage> {
    const EXACT: f32 = 16_777_216.0;
    let v = crate::io::read_volume(path)?;
    if let Some(bad) = v.data.iter().find(|&&x| x < 0.0 || x.fract() != 0.0) {
        return Err(Error::file(path, format!("value {bad} is not a label (labels are non-negative integers)")));
    }
    if let Some(big) = v.data.iter().find(|&&x| x >= EXACT) {
        return Err(Error::file(
            path,
            format!(
                "label {big} is 2^24 (16,777,216) or more: labels that large are not read exactly; number them from 1 \
                 (skimage.segmentation.relabel_sequential)"
            ),
        ));
    }
    let mut distinct = v.data.iter().filter(|&&x| x != 0.0).map(|&x| x as u32);
    let first = distinct.next();
    let binary = first.is_some_and(|f| distinct.all(|x| x == f));
    let labels = if binary {
        let mask: Vec<u8> = v.data.iter().map(|&x| (x != 0.0) as u8).collect();
        labels_from_mask(&mask, v.dims, conn)?
    } else {
        v.data.iter().map(|&x| x as u32).collect()
    };
    Ok(LabelImage { labels, dims: v.dims, binary })
}

/// Reads a predicted and a ground-truth label image (see [`read_labels`];
/// binary masks are logged) and scores them. Errors name the file that is
/// not a label image, or both files when their shapes differ.
pub fn evaluate_files(pred: &Path, gt: &Path, conn: Connectivity) -> Result<Evaluation> {
    let p = read_labels(pred, conn)?;
    let g = read_labels(gt, conn)?;
    if p.dims != g.dims {
        return Err(Error::invalid(format!(
            "{} is {:?} (z, y, x) but {} is {:?}",
            pred.display(),
            p.dims,
            gt.display(),
            g.dims
        )));
    }
    for (path, image) in [(pred, &p), (gt, &g)] {
        if image.binary {
            log::info!("{} is a binary mask: labelled by connected components", path.display());
        }
    }
    evaluate(&p.labels, &g.labels, p.dims)
}
