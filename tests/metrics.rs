//! Segmentation and instance scores on hand-made label images whose answers
//! are known exactly.

use qcanet_gpu::metrics::{self, evaluate, labels_from_mask};
use qcanet_gpu::postprocess::Connectivity;

const DIMS: [usize; 3] = [1, 4, 10];

/// Rows of 10 voxels; each string is one row, digits are labels.
fn img(rows: [&str; 4]) -> Vec<u32> {
    rows.iter().flat_map(|r| r.chars().map(|c| c.to_digit(10).unwrap())).collect()
}

#[test]
fn identical_images_score_one() {
    let gt = img(["1110002200", "1110002200", "0000000000", "0333300000"]);
    let e = evaluate(&gt, &gt, DIMS).unwrap();
    assert_eq!((e.pred_objects, e.gt_objects), (3, 3));
    for v in [e.foreground_iou, e.foreground_dice, e.seg, e.mucov, e.matching.f1, e.average_precision] {
        assert_eq!(v, 1.0, "{e:?}");
    }
    // Renumbering does not matter.
    let re: Vec<u32> = gt.iter().map(|&l| if l == 0 { 0 } else { 10 - l }).collect();
    assert_eq!(evaluate(&re, &gt, DIMS).unwrap().average_precision, 1.0);
}

#[test]
fn known_partial_scores() {
    // GT: object 1 = 6 voxels, object 2 = 4 voxels.
    let gt = img(["1110002200", "1110002200", "0000000000", "0000000000"]);
    // Pred: object 5 covers 4 of GT 1's 6 voxels plus 2 background voxels;
    // object 6 covers 1 voxel of GT 2 and 1 background voxel; object 7 is a
    // false positive.
    let pred = img(["0550000600", "0550000600", "0550000000", "0000000077"]);
    let o = metrics::overlaps(&pred, &gt).unwrap();
    // IoU(5, 1) = 4 / (6 + 6 - 4) = 0.5; IoU(6, 2) = 2 / (4 + 2 - 2) = 0.5.
    assert!((o.iou(5, 1) - 0.5).abs() < 1e-12);
    assert!((o.iou(6, 2) - 0.5).abs() < 1e-12);
    // SEG: GT 1 is covered > 50 % by 5 (4/6) -> 0.5; GT 2 only 2/4 = 50 %, not
    // more -> 0. Mean 0.25.
    assert!((metrics::seg(&o) - 0.25).abs() < 1e-12);
    // MUCov over predictions: (0.5 + 0.5 + 0) / 3.
    assert!((metrics::mucov(&o) - 1.0 / 3.0).abs() < 1e-12);
    // Foreground: |P| = 10, |G| = 10, |P ∩ G| = 6.
    assert!((metrics::foreground_iou(&o) - 6.0 / 14.0).abs() < 1e-12);
    assert!((metrics::foreground_dice(&o) - 12.0 / 20.0).abs() < 1e-12);
    let m = metrics::match_instances(&o, 0.5);
    assert_eq!((m.tp, m.fp, m.fn_), (2, 1, 0));
    assert!((m.precision - 2.0 / 3.0).abs() < 1e-12 && m.recall == 1.0);
    assert!((m.f1 - 0.8).abs() < 1e-12);
    let m = metrics::match_instances(&o, 0.55);
    assert_eq!((m.tp, m.fp, m.fn_), (0, 3, 2));
    // AP: only t = 0.5 scores, 2 / (2 + 1 + 0), averaged over 10 thresholds.
    assert!((metrics::average_precision(&o) - 2.0 / 3.0 / 10.0).abs() < 1e-12);
    let e = evaluate(&pred, &gt, DIMS).unwrap();
    assert_eq!(e.per_threshold.len(), 10);
    let json = serde_json::to_string(&e).unwrap();
    assert!(json.contains("\"seg\":0.25") && json.contains("\"fn\":0"), "{json}");
}

#[test]
fn one_to_one_matching_and_empty_images() {
    // Two predictions each half of one GT object: IoU 0.5 each, only one may match.
    let gt = img(["1111000000", "0000000000", "0000000000", "0000000000"]);
    let pred = img(["1122000000", "0000000000", "0000000000", "0000000000"]);
    let m = metrics::match_instances(&metrics::overlaps(&pred, &gt).unwrap(), 0.5);
    assert_eq!((m.tp, m.fp, m.fn_), (1, 1, 0));
    let zero = vec![0u32; 40];
    let e = evaluate(&zero, &zero, DIMS).unwrap();
    assert_eq!((e.seg, e.foreground_iou, e.matching.f1), (1.0, 1.0, 1.0));
    let e = evaluate(&zero, &gt, DIMS).unwrap();
    assert_eq!((e.seg, e.foreground_iou, e.matching.f1, e.average_precision), (0.0, 0.0, 0.0, 0.0));
    assert!(evaluate(&zero[1..], &gt, DIMS).is_err());
    assert!(evaluate(&zero, &gt, [1, 4, 11]).is_err());
}

#[test]
fn mask_to_labels() {
    let m: Vec<u8> = img(["1100000011", "0010000011", "0000000000", "1000000001"]).iter().map(|&v| v as u8).collect();
    let six = labels_from_mask(&m, DIMS, Connectivity::Six).unwrap();
    let all = labels_from_mask(&m, DIMS, Connectivity::TwentySix).unwrap();
    assert_eq!(six, img(["1100000022", "0030000022", "0000000000", "4000000005"]));
    assert_eq!(all, img(["1100000022", "0010000022", "0000000000", "3000000004"]));
    assert!(labels_from_mask(&m[1..], DIMS, Connectivity::Six).is_err());
}

#[test]
fn marker_detection_counts_one_marker_per_object() {
    // GT objects 1, 2, 3, 4. Markers: 5 inside 1 (found); 6 and 7 both inside
    // 2 (two markers: not found); 8 spans 3 and 4 (shared: neither found);
    // 9 hits nothing (stray).
    let gt = img(["1110222000", "1110222000", "3330004440", "3330004440"]);
    let pr = img(["0500607000", "0000000000", "0088888000", "0000000009"]);
    let o = metrics::overlaps(&pr, &gt).unwrap();
    let d = metrics::marker_detection(&o);
    assert_eq!((d.found, d.pred_objects, d.gt_objects), (1, 5, 4), "{d:?}");
    assert!((d.f1() - 2.0 / 9.0).abs() < 1e-12);
    // One marker in each object and nothing else: 1.
    let pr = img(["0100020000", "0000000000", "0300000400", "0000000000"]);
    let d = metrics::marker_detection(&metrics::overlaps(&pr, &gt).unwrap());
    assert_eq!((d.found, d.f1()), (4, 1.0));
    // Nothing predicted: 0; nothing at all: 1.
    let none = vec![0u32; gt.len()];
    assert_eq!(metrics::marker_detection(&metrics::overlaps(&none, &gt).unwrap()).f1(), 0.0);
    assert_eq!(metrics::marker_detection(&metrics::overlaps(&none, &none).unwrap()).f1(), 1.0);
}

#[test]
fn grid_edge_names_the_end_a_choice_sits_on() {
    use qcanet_gpu::metrics::instances::{grid_edge, DEFAULT_THRESHOLDS};
    assert_eq!(grid_edge(0.9, &DEFAULT_THRESHOLDS), Some("highest"));
    assert_eq!(grid_edge(0.8, &DEFAULT_THRESHOLDS), None);
    assert_eq!(grid_edge(0.2, &DEFAULT_THRESHOLDS), Some("lowest"));
    assert_eq!(grid_edge(0.5, &DEFAULT_THRESHOLDS), None);
    // Order does not matter; a grid of one value (or one value repeated) has no edge.
    assert_eq!(grid_edge(0.35, &[0.6, 0.35, 0.45]), Some("lowest"));
    assert_eq!(grid_edge(0.6, &[0.6, 0.35, 0.45]), Some("highest"));
    assert_eq!(grid_edge(0.5, &[0.5]), None);
    assert_eq!(grid_edge(0.5, &[0.5, 0.5]), None);
    assert_eq!(grid_edge(0.5, &[]), None);
}
