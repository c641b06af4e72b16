//! Scoring through the instance stage and threshold calibration, on
//! hand-made probabilities with known answers.

use qcanet_gpu::infer::calibrate::{choose, search, trial, CalibrationVolume, Search, Trial};
use qcanet_gpu::metrics::instances::{best_setting, score_instances, InstanceTruth, InstanceValidation, Role, Setting};
use qcanet_gpu::postprocess::InstanceOptions;

const DIMS: [usize; 3] = [12, 20, 28];

/// Two touching balls (labels 1, 2), radius 5, centres 9 voxels apart in x.
fn truth() -> Vec<u32> {
    let mut l = vec![0u32; DIMS.iter().product()];
    for z in 0..DIMS[0] {
        for y in 0..DIMS[1] {
            for x in 0..DIMS[2] {
                let d =
                    |cx: f64| ((z as f64 - 6.0).powi(2) + (y as f64 - 10.0).powi(2) + (x as f64 - cx).powi(2)).sqrt();
                let i = (z * DIMS[1] + y) * DIMS[2] + x;
                if d(9.5) <= 5.0 {
                    l[i] = 1;
                } else if d(18.5) <= 5.0 {
                    l[i] = 2;
                }
            }
        }
    }
    l
}

/// Pseudo-random values in 0..1 (no pattern to fit).
fn jitter(i: usize) -> f32 {
    ((i as u64).wrapping_mul(2654435761) % 1000) as f32 / 1000.0
}

/// Segmentation probability: `fg` (±0.02 jitter) inside the nuclei, 0.1 outside;
/// detection: 0.9 within 2 voxels of each centre, else `bg_det`.
fn volume(fg: f32, bg_det: f32) -> CalibrationVolume {
    let labels = truth();
    let nsn: Vec<f32> = labels
        .iter()
        .enumerate()
        .map(|(i, &l)| if l > 0 { fg + 0.04 * (jitter(i) - 0.5) } else { 0.1 * jitter(i) })
        .collect();
    let mut ndn = vec![bg_det; labels.len()];
    for z in 0..DIMS[0] {
        for y in 0..DIMS[1] {
            for x in 0..DIMS[2] {
                for cx in [9.5f64, 18.5] {
                    if ((z as f64 - 6.0).powi(2) + (y as f64 - 10.0).powi(2) + (x as f64 - cx).powi(2)).sqrt() <= 2.0 {
                        ndn[(z * DIMS[1] + y) * DIMS[2] + x] = 0.9;
                    }
                }
            }
        }
    }
    CalibrationVolume { name: "v".into(), dims: DIMS, voxel_um: [1.0; 3], nsn, ndn, labels }
}

/// The detection probability of each nucleus falls from 0.99 at its centre
/// by 0.02 per voxel, so the two blobs touch at about 0.9: at any threshold
/// of the grid they are one marker and the nuclei merge. Their summits
/// stand about 0.09 above the saddle: a dynamic of 0.05 splits them, 0.2
/// keeps only one.
fn touching_centres() -> CalibrationVolume {
    let mut v = volume(0.9, 0.05);
    let labels = truth();
    for z in 0..DIMS[0] {
        for y in 0..DIMS[1] {
            for x in 0..DIMS[2] {
                let i = (z * DIMS[1] + y) * DIMS[2] + x;
                if labels[i] > 0 {
                    let cx = if labels[i] == 1 { 9.5 } else { 18.5 };
                    let d = ((z as f64 - 6.0).powi(2) + (y as f64 - 10.0).powi(2) + (x as f64 - cx).powi(2)).sqrt();
                    v.ndn[i] = (0.99 - 0.02 * d) as f32;
                }
            }
        }
    }
    v
}

/// `v`'s ground truth with the partner's mask `partner` (no extent).
fn truth_of(v: &CalibrationVolume, partner: Vec<u8>) -> InstanceTruth {
    InstanceTruth {
        name: v.name.clone(),
        dims: v.dims,
        voxel_um: v.voxel_um,
        labels: v.labels.clone(),
        partner,
        partner_extent: None,
    }
}

#[test]
fn instance_scores_of_a_perfect_pair_and_of_swapped_roles() {
    let v = volume(0.9, 0.05);
    let opts = InstanceOptions::default();
    let markers: Vec<u8> = v.ndn.iter().map(|&p| (p > 0.5) as u8).collect();
    let seg: Vec<u8> = v.nsn.iter().map(|&p| (p > 0.5) as u8).collect();
    let t = truth_of(&v, markers);
    let iv = InstanceValidation {
        volumes: vec![],
        role: Role::Segmentation,
        settings: vec![Setting::at(0.5)],
        options: opts,
    };
    let s = score_instances(&v.nsn, DIMS, &t, &iv).unwrap()[0];
    assert_eq!((s.predicted, s.truth), (2, 2));
    assert_eq!(s.f1, 1.0);
    assert!(s.seg > 0.8 && s.iou > 0.99, "{s:?}");
    // The same pair from the detection side gives the same scores.
    let t2 = InstanceTruth { partner: seg, ..t.clone() };
    let iv2 = InstanceValidation { role: Role::Detection, ..iv.clone() };
    let s2 = score_instances(&v.ndn, DIMS, &t2, &iv2).unwrap()[0];
    assert_eq!((s2.predicted, s2.f1), (2, 1.0));
    assert!((s2.seg - s.seg).abs() < 1e-12);
    // One marker only: the two nuclei merge into one object that matches at most one.
    let one: Vec<u8> = t.partner.iter().enumerate().map(|(i, &m)| m * u8::from(i % DIMS[2] < 14)).collect();
    let s3 = score_instances(&v.nsn, DIMS, &InstanceTruth { partner: one, ..t.clone() }, &iv).unwrap()[0];
    assert_eq!(s3.predicted, 1);
    assert!(s3.f1 < 1.0 && s3.f1 > 0.0, "{s3:?}");
    // No marker at all: no nuclei, F1 0 (not an error).
    let none = vec![0u8; t.partner.len()];
    let s4 = score_instances(&v.nsn, DIMS, &InstanceTruth { partner: none, ..t.clone() }, &iv).unwrap()[0];
    assert_eq!((s4.predicted, s4.f1), (0, 0.0));
    // A prediction on a z-interpolated grid is brought back to the labels' depth.
    let deep: Vec<f32> = (0..2 * DIMS[0])
        .flat_map(|z| {
            let k = z / 2 * DIMS[1] * DIMS[2];
            v.nsn[k..k + DIMS[1] * DIMS[2]].to_vec()
        })
        .collect();
    let s5 = score_instances(&deep, [2 * DIMS[0], DIMS[1], DIMS[2]], &t, &iv).unwrap()[0];
    assert_eq!(s5.f1, 1.0);
}

#[test]
fn calibration_finds_the_thresholds_that_recover_the_nuclei() {
    // The segmentation is under-confident (0.35 inside nuclei): at 0.5 nothing
    // is found; 0.2 or 0.3 finds both nuclei. The detection background is 0.55,
    // so at 0.5 the whole volume is one marker; 0.6 or above separates them.
    // Neither threshold alone helps: only the pair does.
    let vols = vec![volume(0.35, 0.55)];
    let opts = InstanceOptions::default();
    let at_half = trial(&vols, 0.5, 0.5, 0.0, 0.5, &opts).unwrap();
    assert_eq!(at_half.f1, 0.0);
    let grid = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8];
    let Search { best, trials: all, .. } = search(&vols, &grid, &[0.0], &[], &opts).unwrap();
    assert_eq!(all.len(), 49);
    assert_eq!(all[0], at_half);
    assert_eq!(best.f1, 1.0, "{best:?}");
    assert!(best.nsn <= 0.3 && best.ndn >= 0.6, "{best:?}");
    // Among equally good values the one nearest 0.5 wins.
    assert_eq!((best.nsn, best.ndn), (0.3, 0.6));
    // Bad grids are refused.
    assert!(search(&vols, &[0.0, 0.5], &[0.0], &[], &opts).unwrap_err().to_string().contains("between 0 and 1"));
    assert!(trial(&[], 0.5, 0.5, 0.0, 0.5, &opts).is_err());
}

#[test]
fn calibration_finds_the_marker_dynamic_that_splits_touching_centres() {
    let vols = vec![touching_centres()];
    let opts = InstanceOptions::default();
    let grid = [0.3, 0.5, 0.7];
    for t in grid {
        let plain = trial(&vols, 0.5, t, 0.0, 0.5, &opts).unwrap();
        assert!(plain.f1 < 1.0, "threshold {t} alone separates the centres: {plain:?}");
    }
    assert_eq!(trial(&vols, 0.5, 0.5, 0.05, 0.5, &opts).unwrap().f1, 1.0);
    assert!(trial(&vols, 0.5, 0.5, 0.2, 0.5, &opts).unwrap().f1 < 1.0);
    let Search { best, trials: all, .. } = search(&vols, &grid, &[0.0, 0.05, 0.2], &[], &opts).unwrap();
    assert_eq!(all.len(), 27);
    assert_eq!((best.f1, best.dynamic), (1.0, 0.05), "{best:?}");
    assert_eq!((best.nsn, best.ndn), (0.5, 0.5), "nearest 0.5 among equals: {best:?}");
    assert!(search(&vols, &grid, &[], &[], &opts).is_err());
    assert!(search(&vols, &grid, &[1.0], &[], &opts).unwrap_err().to_string().contains("dynamic"));
}

#[test]
fn validation_grid_scores_each_setting_as_calibration_does_and_ranks_them_alike() {
    // Training an NDN against a fixed NSN mask: each (threshold, dynamic) of
    // the grid, scored in one call, equals calibration's trial at the same
    // setting, and the best is the one calibration picks.
    let v = touching_centres();
    let opts = InstanceOptions::default();
    let seg: Vec<u8> = v.nsn.iter().map(|&p| (p > 0.5) as u8).collect();
    let t = truth_of(&v, seg);
    let settings = Setting::grid(Role::Detection, &[0.3, 0.5, 0.7], &[0.0, 0.05, 0.2]).unwrap();
    assert_eq!(settings.len(), 9);
    assert_eq!((settings[1].threshold, settings[1].dynamic), (0.3, 0.05), "thresholds outer, dynamics inner");
    let iv = InstanceValidation { volumes: vec![], role: Role::Detection, settings: settings.clone(), options: opts };
    let scores = score_instances(&v.ndn, DIMS, &t, &iv).unwrap();
    assert_eq!(scores.len(), 9);
    let vols = vec![v];
    for (s, q) in settings.iter().zip(&scores) {
        let c = trial(&vols, 0.5, s.threshold, s.dynamic, 0.5, &opts).unwrap();
        assert_eq!((q.f1, q.seg, q.iou), (c.f1, c.seg, c.iou), "{s:?}");
    }
    let means: Vec<(f64, f64)> = scores.iter().map(|q| (q.f1, q.seg)).collect();
    let b = best_setting(&settings, &means).unwrap();
    let Search { best: cal, .. } = search(&vols, &[0.3, 0.5, 0.7], &[0.0, 0.05, 0.2], &[], &opts).unwrap();
    assert_eq!((settings[b].threshold, settings[b].dynamic), (cal.ndn, cal.dynamic));
    assert_eq!((settings[b].threshold, settings[b].dynamic, scores[b].f1), (0.5, 0.05, 1.0));

    // A segmentation's grid has thresholds only; a dynamic for it is refused,
    // as are thresholds outside (0, 1) and an empty grid.
    let g = Setting::grid(Role::Segmentation, &[0.4, 0.6], &[0.0, 0.1]).unwrap();
    assert_eq!(g, vec![Setting::at(0.4), Setting::at(0.6)]);
    let bad = InstanceValidation {
        role: Role::Segmentation,
        settings: vec![Setting { threshold: 0.5, dynamic: 0.1, extent: None }],
        ..iv.clone()
    };
    assert!(score_instances(&vols[0].nsn, DIMS, &t, &bad).unwrap_err().to_string().contains("dynamic"));
    assert!(Setting::grid(Role::Detection, &[1.0], &[0.0]).unwrap_err().to_string().contains("between 0 and 1"));
    assert!(Setting::grid(Role::Detection, &[0.5], &[-0.1]).unwrap_err().to_string().contains("dynamic"));
    assert!(Setting::grid(Role::Detection, &[], &[0.0]).is_err());
    assert!(score_instances(&vols[0].ndn, DIMS, &t, &InstanceValidation { settings: vec![], ..iv }).is_err());
}

#[test]
fn best_setting_ranks_f1_then_seg_then_thresholds_near_half_then_small_dynamics() {
    let s = |t: f32, h: f32| Setting { threshold: t, dynamic: h, extent: None };
    let settings = [s(0.3, 0.0), s(0.5, 0.1), s(0.6, 0.0), s(0.5, 0.0), s(0.7, 0.2)];
    // F1 first, whatever the SEG.
    assert_eq!(best_setting(&settings, &[(0.8, 0.9), (0.9, 0.1), (0.85, 0.9), (0.7, 0.9), (0.6, 0.9)]), Some(1));
    // Equal F1: SEG.
    assert_eq!(best_setting(&settings, &[(0.9, 0.5), (0.9, 0.4), (0.9, 0.6), (0.9, 0.5), (0.9, 0.5)]), Some(2));
    // Equal F1 and SEG: nearer 0.5, then the smaller dynamic.
    assert_eq!(best_setting(&settings, &[(0.9, 0.5); 5]), Some(3));
    assert_eq!(best_setting(&settings[..3], &[(0.9, 0.5); 3]), Some(1));
    assert_eq!(best_setting(&[], &[]), None);
}

#[test]
fn an_f1_tolerance_keeps_the_best_seg_among_settings_within_it_of_the_best_f1() {
    let t = |nsn: f32, dynamic: f32, f1: f64, seg: f64| Trial {
        nsn,
        ndn: 0.3,
        dynamic,
        extent: nsn,
        f1,
        seg,
        iou: seg + 0.05,
    };
    // The eighteenth session's case: one nucleus more at NSN 0.6 against
    // much better masks at 0.5; a third setting better still on SEG, far
    // below on F1.
    let trials = [
        t(0.4, 0.1, 0.9291, 0.7300),
        t(0.6, 0.1, 0.9410, 0.7240),
        t(0.5, 0.1, 0.9375, 0.7510),
        t(0.3, 0.0, 0.8800, 0.8000),
    ];
    assert_eq!(choose(&trials, 0.0).unwrap(), trials[1], "no tolerance: the best F1");
    assert_eq!(choose(&trials, 0.005).unwrap(), trials[2]);
    assert_eq!(choose(&trials, 0.004).unwrap(), trials[2]);
    assert_eq!(choose(&trials, 0.003).unwrap(), trials[1]);
    assert_eq!(choose(&trials, 0.2).unwrap(), trials[3]);
    // Equal SEG within the tolerance: the higher F1, then nearer 0.5, then
    // the smaller dynamic, then the first.
    let tied = [t(0.4, 0.0, 0.937, 0.75), t(0.6, 0.0, 0.940, 0.75), t(0.5, 0.1, 0.940, 0.75), t(0.5, 0.0, 0.940, 0.75)];
    assert_eq!(choose(&tied, 0.005).unwrap(), tied[3]);
    assert_eq!(choose(&tied[..3], 0.005).unwrap(), tied[2]);
    assert_eq!(choose(&[tied[3], tied[3]], 0.005).unwrap(), tied[3]);
    // At a tolerance of 0 it is the ranking training's validation uses.
    let settings: Vec<Setting> =
        trials.iter().map(|q| Setting { threshold: q.nsn, dynamic: q.dynamic, extent: None }).collect();
    let means: Vec<(f64, f64)> = trials.iter().map(|q| (q.f1, q.seg)).collect();
    assert_eq!(trials[best_setting(&settings, &means).unwrap()], choose(&trials, 0.0).unwrap());
    // Refused: a tolerance outside [0, 1), no trials.
    for bad in [-0.001, 1.0, f64::NAN] {
        assert!(choose(&trials, bad).unwrap_err().to_string().contains("F1 tolerance"), "{bad}");
    }
    assert!(choose(&[], 0.0).is_err());
}

#[test]
fn in_parallel_returns_every_index_in_order() {
    use qcanet_gpu::metrics::instances::in_parallel;
    for n in [0usize, 1, 2, 37] {
        assert_eq!(in_parallel(n, |i| i * i + 3), (0..n).map(|i| i * i + 3).collect::<Vec<_>>(), "n {n}");
    }
}

/// `calibrate --help` and `train --help` spell out the default grids, which
/// live in `metrics::instances`: the text must follow the constants.
#[test]
fn help_gives_the_default_grids_of_the_code() {
    use qcanet_gpu::metrics::instances::{DEFAULT_DYNAMICS, DEFAULT_THRESHOLDS};
    let list = |v: &[f32]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
    let (thresholds, dynamics) = (list(&DEFAULT_THRESHOLDS), list(&DEFAULT_DYNAMICS));
    assert_eq!(thresholds, "0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", "the formatting this test relies on");
    for cmd in ["calibrate", "train"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_qcanet-gpu")).args([cmd, "--help"]).output().unwrap();
        assert!(out.status.success(), "{cmd} --help failed");
        // Help text is wrapped to the terminal: compare without whitespace.
        let text: String = String::from_utf8_lossy(&out.stdout).chars().filter(|c| !c.is_whitespace()).collect();
        for (what, want) in [("thresholds", &thresholds), ("dynamics", &dynamics)] {
            assert!(
                text.contains(&format!("default{}{want}", if cmd == "calibrate" { ":" } else { "" })),
                "{cmd} --help does not give the default {what} {want}:\n{text}"
            );
        }
    }
}

/// Segmentation probability of [`truth`]'s nuclei: 0.9 (±0.02) in each
/// core (within 3 voxels of its centre), 0.45 in the shell out to radius 5,
/// 0.1 × jitter outside; detection 0.9 within 2 voxels of each centre.
fn cores_and_shells() -> CalibrationVolume {
    let mut v = volume(0.9, 0.05);
    for z in 0..DIMS[0] {
        for y in 0..DIMS[1] {
            for x in 0..DIMS[2] {
                let i = (z * DIMS[1] + y) * DIMS[2] + x;
                if v.labels[i] > 0 {
                    let cx = if v.labels[i] == 1 { 9.5 } else { 18.5 };
                    let d = ((z as f64 - 6.0).powi(2) + (y as f64 - 10.0).powi(2) + (x as f64 - cx).powi(2)).sqrt();
                    if d > 3.0 {
                        v.nsn[i] = 0.45 + 0.02 * (jitter(i) - 0.5);
                    }
                }
            }
        }
    }
    v
}

#[test]
fn calibration_grows_confident_cores_to_the_outlines() {
    // Split at 0.5 the nuclei are their cores (a fifth of each: no match at
    // IoU 0.5); grown to 0.4 they are whole again, from the same watershed.
    let vols = vec![cores_and_shells()];
    let opts = InstanceOptions::default();
    let core = trial(&vols, 0.5, 0.5, 0.0, 0.5, &opts).unwrap();
    assert_eq!(core.f1, 0.0, "{core:?}");
    assert!(core.iou < 0.4, "{core:?}");
    let grown = trial(&vols, 0.5, 0.5, 0.0, 0.4, &opts).unwrap();
    assert_eq!((grown.f1, grown.extent), (1.0, 0.4), "{grown:?}");
    assert!(grown.seg > 0.9 && grown.iou > 0.95, "{grown:?}");
    // An extent at or above the threshold is no growth.
    let same = trial(&vols, 0.5, 0.5, 0.0, 0.7, &opts).unwrap();
    assert_eq!((same.f1, same.seg, same.iou, same.extent), (core.f1, core.seg, core.iou, 0.5));
    // The search tries each NSN threshold bare, then grown to each extent below it.
    let Search { best, trials: all, .. } = search(&vols, &[0.5, 0.7], &[0.0], &[0.3, 0.4, 0.6], &opts).unwrap();
    // NSN 0.5: bare, 0.3, 0.4; NSN 0.7: bare, 0.3, 0.4, 0.6; with 2 NDN thresholds.
    assert_eq!(all.len(), 2 * (3 + 4));
    assert_eq!(all[0], core, "0.5/0.5 bare first");
    assert_eq!(best.f1, 1.0, "{best:?}");
    assert!(best.extent < best.nsn && best.extent >= 0.3, "{best:?}");
    // The same growth from the detection side: training an NDN against a
    // partner NSN that grows its nuclei scores what `infer` would label.
    let v = &vols[0];
    let t = InstanceTruth {
        partner_extent: Some(v.nsn.iter().map(|&p| u8::from(p > 0.4)).collect()),
        ..truth_of(v, v.nsn.iter().map(|&p| u8::from(p > 0.5)).collect())
    };
    let iv =
        InstanceValidation { volumes: vec![], role: Role::Detection, settings: vec![Setting::at(0.5)], options: opts };
    let s = score_instances(&v.ndn, DIMS, &t, &iv).unwrap()[0];
    assert_eq!((s.f1, s.seg, s.iou), (grown.f1, grown.seg, grown.iou));
    let bare = score_instances(&v.ndn, DIMS, &InstanceTruth { partner_extent: None, ..t.clone() }, &iv).unwrap()[0];
    assert_eq!((bare.f1, bare.iou), (core.f1, core.iou));
    // Refused: an extent outside (0, 1); an extent on a detection setting.
    assert!(search(&vols, &[0.5], &[0.0], &[1.2], &opts).unwrap_err().to_string().contains("extent"));
    let marker_extent = Setting { extent: Some(0.3), ..Setting::at(0.5) };
    let iv2 = InstanceValidation { settings: vec![marker_extent], ..iv };
    assert!(score_instances(&v.ndn, DIMS, &t, &iv2).is_err());
}

#[test]
fn search_keeps_each_settings_scores_on_every_volume() {
    // Two unlike volumes: the per-volume scores of every setting are what
    // that setting scores on the volume alone, and their mean is the
    // setting's mean; the CSV has a row per setting and volume.
    let a = CalibrationVolume { name: "under_confident".into(), ..volume(0.35, 0.55) };
    let b = CalibrationVolume { name: "touching".into(), ..touching_centres() };
    let opts = InstanceOptions::default();
    let vols = vec![a, b];
    let found = search(&vols, &[0.3, 0.6], &[0.0, 0.05], &[0.2], &opts).unwrap();
    assert_eq!(found.names, ["under_confident", "touching"]);
    assert_eq!(found.volumes.len(), found.trials.len());
    let mut differ = false;
    for (t, scores) in found.trials.iter().zip(&found.volumes) {
        assert_eq!(scores.len(), 2);
        for (v, s) in vols.iter().zip(scores) {
            let alone = trial(std::slice::from_ref(v), t.nsn, t.ndn, t.dynamic, t.extent, &opts).unwrap();
            assert_eq!((s.f1, s.seg, s.iou), (alone.f1, alone.seg, alone.iou), "{} at {t:?}", v.name);
        }
        let mean =
            |f: fn(&qcanet_gpu::metrics::instances::InstanceScores) -> f64| scores.iter().map(f).sum::<f64>() / 2.0;
        assert!((mean(|s| s.f1) - t.f1).abs() < 1e-12 && (mean(|s| s.seg) - t.seg).abs() < 1e-12, "{t:?}");
        assert!((mean(|s| s.iou) - t.iou).abs() < 1e-12, "{t:?}");
        differ |= scores[0].f1 != scores[1].f1;
    }
    assert!(differ, "the two volumes score alike everywhere: the test shows nothing");
    assert!(qcanet_gpu::metrics::instances::InstanceScores::means(&[]).0.is_nan(), "no volume: no mean");

    let csv = found.volumes_csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "nsn_threshold,nsn_extent,ndn_threshold,marker_dynamic,volume,predicted,true,matched,f1,seg,iou"
    );
    assert_eq!(lines.len(), 1 + 2 * found.trials.len());
    for (k, line) in lines[1..].iter().enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 11, "{line}");
        assert_eq!(f[4], found.names[k % 2]);
        let s = found.volumes[k / 2][k % 2];
        let (p, t, m): (usize, usize, usize) = (f[5].parse().unwrap(), f[6].parse().unwrap(), f[7].parse().unwrap());
        assert_eq!((p, t, m), (s.predicted, s.truth, s.matched), "{line}");
        assert!(m <= p.min(t), "{line}");
        // F1 = 2 matched / (predicted + true), to the CSV's six decimals.
        if p + t > 0 {
            let f1 = 2.0 * m as f64 / (p + t) as f64;
            assert!((f1 - f[8].parse::<f64>().unwrap()).abs() < 1e-6, "{line}");
        }
    }
    assert_eq!(found.trials_csv().lines().count(), 1 + found.trials.len());
}
