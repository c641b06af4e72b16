//! Choosing each network's foreground threshold on validation volumes
//! (`qcanet-gpu calibrate`). The NSN's and NDN's probabilities are predicted
//! once per volume exactly as `infer` predicts them; then the instance stage
//! is scored for every pair of thresholds of a grid (a full grid: a search
//! one threshold at a time gets stuck where neither alone helps, e.g. an
//! under-confident NSN with over-confident markers), ranking by mean F1 at
//! IoU 0.5, then mean SEG; among equal scores the pair nearest 0.5 wins
//! ([`choose`]; with an F1 tolerance, the best SEG among the settings whose
//! F1 is within it of the best, so one nucleus more does not outweigh
//! masks much worse). Each
//! pair is tried with each dynamic of the NDN's markers (0: plain components
//! above the threshold; see `postprocess::markers`). The thresholds and the
//! dynamic found go into the weights' metadata, where `infer` reads them.

use crate::progress::Progress;

use crate::error::{Error, Result};
use crate::io::Volume;
use crate::metrics::instances::{
    best_ranked, check_dynamic, in_parallel, score_instances, InstanceScores, InstanceTruth, InstanceValidation,
    Ranking, Role, Setting,
};
use crate::postprocess::markers::{above_on, h_maxima};
use crate::postprocess::InstanceOptions;

use super::pipeline::{voxel_of, Inputs, SegmentOptions, Stage};

/// One validation volume's probabilities (input grid) and ground truth.
pub struct CalibrationVolume {
    pub name: String,
    pub dims: [usize; 3],
    pub voxel_um: [f64; 3],
    pub nsn: Vec<f32>,
    pub ndn: Vec<f32>,
    pub labels: Vec<u32>,
}

/// Predicts both networks' foreground probabilities of `vol` as `infer` does.
pub fn predict(
    nsn: &mut Stage,
    ndn: &mut Stage,
    name: &str,
    vol: &Volume,
    labels: Vec<u32>,
    opts: &SegmentOptions,
    pb: &Progress,
) -> Result<CalibrationVolume> {
    if labels.len() != vol.data.len() {
        return Err(Error::invalid(format!("{name}: ground truth and image differ in size")));
    }
    let voxel_um = voxel_of(vol, opts.voxel_um)?;
    let mut inputs = Inputs::new(vol, voxel_um);
    let pn = inputs.foreground(nsn, opts, pb)?;
    let pd = inputs.foreground(ndn, opts, pb)?;
    Ok(CalibrationVolume { name: name.to_string(), dims: vol.dims, voxel_um, nsn: pn, ndn: pd, labels })
}

/// Mean scores of one setting (thresholds and marker dynamic) over the volumes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Trial {
    pub nsn: f32,
    pub ndn: f32,
    /// Dynamic of the NDN's markers (0: plain components above the threshold).
    pub dynamic: f32,
    /// The NSN's lower threshold its nuclei grow to after the watershed
    /// (`postprocess::grow`); equal to `nsn`: no growth.
    pub extent: f32,
    pub f1: f64,
    pub seg: f64,
    pub iou: f64,
}

/// Scores thresholds `nsn_t`, `ndn_t` and marker dynamic `h` over `vols`
/// (instance stage on the CPU reference, as training's validation does),
/// with the nuclei grown to `extent` (below `nsn_t`; else no growth).
pub fn trial(
    vols: &[CalibrationVolume],
    nsn_t: f32,
    ndn_t: f32,
    h: f32,
    extent: f32,
    opts: &InstanceOptions,
) -> Result<Trial> {
    let summits = summits_of(vols, h, opts)?;
    Ok(trials_with(vols, nsn_t, ndn_t, h, &[extent], &summits, opts)?.swap_remove(0).0)
}

/// Each volume's h-maxima of the NDN's probability (None for `h = 0`).
fn summits_of(vols: &[CalibrationVolume], h: f32, opts: &InstanceOptions) -> Result<Vec<Option<Vec<u8>>>> {
    check_dynamic(h)?;
    Ok(vols.iter().map(|c| (h > 0.0).then(|| h_maxima(&c.ndn, c.dims, h, opts.marker_connectivity))).collect())
}

/// One trial per extent of `extents` (each with the same watershed: the
/// nuclei grown to it, none when it is not below `nsn_t`), in that order,
/// each with its scores on every volume (in the order of `vols`).
fn trials_with(
    vols: &[CalibrationVolume],
    nsn_t: f32,
    ndn_t: f32,
    h: f32,
    extents: &[f32],
    summits: &[Option<Vec<u8>>],
    opts: &InstanceOptions,
) -> Result<Vec<(Trial, Vec<InstanceScores>)>> {
    if vols.is_empty() {
        return Err(Error::invalid("calibration needs at least one volume"));
    }
    let v = InstanceValidation {
        volumes: Vec::new(),
        role: Role::Segmentation,
        settings: extents.iter().map(|&e| Setting { extent: Some(e), ..Setting::at(nsn_t) }).collect(),
        options: *opts,
    };
    let mut per_volume: Vec<Vec<InstanceScores>> = vec![Vec::with_capacity(vols.len()); extents.len()];
    for (c, top) in vols.iter().zip(summits) {
        let partner = above_on(&c.ndn, ndn_t, top.as_deref());
        let t = InstanceTruth {
            name: c.name.clone(),
            dims: c.dims,
            voxel_um: c.voxel_um,
            labels: c.labels.clone(),
            partner,
            partner_extent: None,
        };
        for (scores, s) in per_volume.iter_mut().zip(score_instances(&c.nsn, c.dims, &t, &v)?) {
            scores.push(s);
        }
    }
    Ok(extents
        .iter()
        .zip(per_volume)
        .map(|(&e, s)| {
            let (f1, seg, iou) = InstanceScores::means(&s);
            (Trial { nsn: nsn_t, ndn: ndn_t, dynamic: h, extent: e.min(nsn_t), f1, seg, iou }, s)
        })
        .collect())
}

/// Refuses a grid [`search`] cannot try: the same ranges as training's
/// validation grid (messages name the value); `calibrate` checks it before
/// predicting anything.
pub fn check_grid(grid: &[f32], dynamics: &[f32], extents: &[f32]) -> Result<()> {
    Setting::grid(Role::Detection, grid, dynamics)?;
    if let Some(e) = extents.iter().find(|e| !(e.is_finite() && **e > 0.0 && **e < 1.0)) {
        return Err(Error::invalid(format!("extent {e}: extent thresholds must lie strictly between 0 and 1")));
    }
    Ok(())
}

/// What [`search`] found: every setting's mean scores, and its scores on
/// each volume, so a choice can hold a floor per volume or per stage, not
/// only on the mean (`calibrate` writes both as CSV).
#[derive(Clone, Debug)]
pub struct Search {
    /// The best trial by F1, then SEG ([`choose`] without tolerance).
    pub best: Trial,
    /// Every trial, in the order run.
    pub trials: Vec<Trial>,
    /// The volumes' names, in the order searched.
    pub names: Vec<String>,
    /// `volumes[i][j]`: trial `i`'s scores on volume `names[j]`; their mean
    /// is `trials[i]`'s.
    pub volumes: Vec<Vec<InstanceScores>>,
}

impl Search {
    /// `calibration.csv`: one row per trial, its mean scores.
    pub fn trials_csv(&self) -> String {
        let mut csv = String::from("nsn_threshold,nsn_extent,ndn_threshold,marker_dynamic,mean_f1,mean_seg,mean_iou\n");
        for t in &self.trials {
            csv.push_str(&format!(
                "{:.3},{:.3},{:.3},{:.3},{:.6},{:.6},{:.6}\n",
                t.nsn, t.extent, t.ndn, t.dynamic, t.f1, t.seg, t.iou
            ));
        }
        csv
    }

    /// `calibration_volumes.csv`: one row per trial and volume (trials in
    /// the order run, volumes in the order searched), with the nuclei
    /// predicted, true and matched at IoU 0.5.
    pub fn volumes_csv(&self) -> String {
        let mut csv = String::from(
            "nsn_threshold,nsn_extent,ndn_threshold,marker_dynamic,volume,predicted,true,matched,f1,seg,iou\n",
        );
        for (t, scores) in self.trials.iter().zip(&self.volumes) {
            for (name, s) in self.names.iter().zip(scores) {
                csv.push_str(&format!(
                    "{:.3},{:.3},{:.3},{:.3},{},{},{},{},{:.6},{:.6},{:.6}\n",
                    t.nsn, t.extent, t.ndn, t.dynamic, name, s.predicted, s.truth, s.matched, s.f1, s.seg, s.iou
                ));
            }
        }
        csv
    }
}

/// Every setting of the grid: each pair of thresholds of `grid` with each
/// marker dynamic of `dynamics` (0.5, 0.5 with the first dynamic first),
/// each NSN threshold first without growth, then with its nuclei grown to
/// each of `extents` below it.
pub fn search(
    vols: &[CalibrationVolume],
    grid: &[f32],
    dynamics: &[f32],
    extents: &[f32],
    opts: &InstanceOptions,
) -> Result<Search> {
    check_grid(grid, dynamics, extents)?;
    let mut pairs = vec![(0.5f32, 0.5f32)];
    for &a in grid {
        for &b in grid {
            if !pairs.contains(&(a, b)) {
                pairs.push((a, b));
            }
        }
    }
    // Each NSN threshold's extents: itself (no growth), then those below it.
    let extents_of = |t: f32| -> Vec<f32> {
        let mut v = vec![t];
        v.extend(extents.iter().copied().filter(|&e| crate::postprocess::growth_extent(t, Some(e)).is_some()));
        v
    };
    let total = pairs.iter().map(|p| extents_of(p.0).len()).sum::<usize>() * dynamics.len();
    let mut all = Vec::with_capacity(total);
    let mut volumes = Vec::with_capacity(total);
    // The settings of one dynamic are independent: scored on all cores,
    // logged and ranked in grid order (the result does not depend on the
    // number of threads).
    for &h in dynamics {
        let summits = summits_of(vols, h, opts)?;
        let scored = in_parallel(pairs.len(), |i| {
            trials_with(vols, pairs[i].0, pairs[i].1, h, &extents_of(pairs[i].0), &summits, opts)
        });
        for r in scored {
            for (r, per_volume) in r? {
                let grown = if r.extent < r.nsn { format!(", grown to {:.2}", r.extent) } else { String::new() };
                log::info!(
                    "[{}/{total}] NSN {:.2}{grown}, NDN {:.2}, dynamic {h:.2}: F1 {:.4}, SEG {:.4}, IoU {:.4}",
                    all.len() + 1,
                    r.nsn,
                    r.ndn,
                    r.f1,
                    r.seg,
                    r.iou
                );
                all.push(r);
                volumes.push(per_volume);
            }
        }
    }
    let names = vols.iter().map(|v| v.name.clone()).collect();
    Ok(Search { best: choose(&all, 0.0)?, trials: all, names, volumes })
}

/// Refuses an F1 tolerance outside [0, 1) (NaN included).
pub fn check_f1_tolerance(f1_tolerance: f64) -> Result<()> {
    if (0.0..1.0).contains(&f1_tolerance) {
        Ok(())
    } else {
        Err(Error::invalid(format!("F1 tolerance {f1_tolerance}: must be in [0, 1)")))
    }
}

/// The setting calibration keeps among `trials`: of those whose mean F1 is
/// within `f1_tolerance` of the best, the one with the best mean SEG, then
/// the higher F1, then thresholds nearer 0.5, then the smaller dynamic, the
/// first of exact equals ([`best_ranked`]; at a tolerance of 0 it is the
/// rule training's validation uses, F1 first). Over six volumes, 0.005 is
/// about one nucleus at the 50-nucleus stage.
pub fn choose(trials: &[Trial], f1_tolerance: f64) -> Result<Trial> {
    check_f1_tolerance(f1_tolerance)?;
    let ranks: Vec<Ranking> = trials
        .iter()
        .map(|t| Ranking {
            f1: t.f1,
            seg: t.seg,
            off_half: (t.nsn - 0.5).abs() + (t.ndn - 0.5).abs(),
            dynamic: t.dynamic,
        })
        .collect();
    best_ranked(&ranks, f1_tolerance).map(|i| trials[i]).ok_or_else(|| Error::invalid("calibration scored no setting"))
}
