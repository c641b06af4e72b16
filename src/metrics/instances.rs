//! Scoring a network's output through the whole QCANet instance stage: the
//! trained (or calibrated) network's probability with its partner's mask,
//! marker watershed, then the instance metrics against the ground truth.
//! Used by training's validation and by threshold calibration.

use crate::error::{Error, Result};

/// Which network of the pair is being trained (the other is the partner).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The trained network gives the segmentation; the partner the markers.
    Segmentation,
    /// The trained network gives the markers; the partner the segmentation.
    Detection,
}

/// One validation volume for scoring through the whole instance stage: its
/// instance ground truth and the partner network's mask, on the input grid.
#[derive(Clone, Debug)]
pub struct InstanceTruth {
    pub name: String,
    /// Input grid (z, y, x) before any z interpolation.
    pub dims: [usize; 3],
    /// Voxel size (x, y, z µm).
    pub voxel_um: [f64; 3],
    /// Instance labels, 0 background.
    pub labels: Vec<u32>,
    /// The partner network's foreground (0/1) at the threshold.
    pub partner: Vec<u8>,
    /// A segmentation partner's foreground at its extent threshold, when it
    /// has one below its threshold: the nuclei then grow into it
    /// (`postprocess::grow`), as `infer` does. None: no growth.
    pub partner_extent: Option<Vec<u8>>,
}

/// Whole-volume instance validation: the volumes (in the order of the
/// validation samples), the trained network's role and the settings of the
/// instance stage.
#[derive(Clone, Debug)]
pub struct InstanceValidation {
    pub volumes: Vec<InstanceTruth>,
    pub role: Role,
    /// The settings of the trained network's side tried on every volume
    /// (at least one).
    pub settings: Vec<Setting>,
    pub options: crate::postprocess::InstanceOptions,
}

/// The thresholds `calibrate` and training's validation try by default.
/// Up to 0.9: NDNs trained from scratch sit at the top of a grid that ends
/// at 0.8 (the twelfth session's in 21 of 29 epochs, the fourteenth's in
/// every epoch, and two of three calibrations; weights/HISTORY.md).
pub const DEFAULT_THRESHOLDS: [f32; 8] = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];
/// The dynamics of the markers they try by default (0: every component
/// above the threshold is a marker, as the original QCANet); up to 0.3, as
/// a calibration chose 0.2 when the grid ended there.
pub const DEFAULT_DYNAMICS: [f32; 5] = [0.0, 0.05, 0.1, 0.2, 0.3];

/// One setting of the trained network's side of the instance stage: its
/// foreground threshold and, when it gives the markers, their dynamic
/// (`postprocess::markers::h_maxima`; 0: plain components above the
/// threshold). A segmentation has no dynamic, and may have an extent: a
/// lower threshold its nuclei grow to after the watershed
/// (`postprocess::grow`; None, or not below the threshold: no growth).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Setting {
    pub threshold: f32,
    pub dynamic: f32,
    pub extent: Option<f32>,
}

impl Setting {
    /// A threshold alone (dynamic 0, no growth).
    pub fn at(threshold: f32) -> Setting {
        Setting { threshold, dynamic: 0.0, extent: None }
    }

    /// The threshold nuclei grow to, when it is below the threshold.
    pub fn extent_below(&self) -> Option<f32> {
        crate::postprocess::growth_extent(self.threshold, self.extent)
    }

    /// Every threshold with every dynamic (a segmentation: the thresholds
    /// alone), in that order; thresholds must lie strictly between 0 and 1,
    /// dynamics in [0, 1).
    pub fn grid(role: Role, thresholds: &[f32], dynamics: &[f32]) -> Result<Vec<Setting>> {
        if let Some(t) = thresholds.iter().find(|t| !(t.is_finite() && **t > 0.0 && **t < 1.0)) {
            return Err(Error::invalid(format!("threshold {t}: thresholds must lie strictly between 0 and 1")));
        }
        dynamics.iter().try_for_each(|&h| check_dynamic(h))?;
        if thresholds.is_empty() {
            return Err(Error::invalid("no threshold to try"));
        }
        let dynamics: &[f32] = match role {
            Role::Segmentation => &[0.0],
            Role::Detection if dynamics.is_empty() => return Err(Error::invalid("no marker dynamic to try")),
            Role::Detection => dynamics,
        };
        Ok(thresholds
            .iter()
            .flat_map(|&t| dynamics.iter().map(move |&h| Setting { threshold: t, dynamic: h, extent: None }))
            .collect())
    }
}

/// Where `value` lies on the edge of the grid it was chosen from: "highest"
/// or "lowest" when it is the grid's largest or smallest of at least two
/// distinct values, else `None`. A best setting on an edge may be beaten by
/// one beyond the grid (training's validation and `calibrate` both warn).
pub fn grid_edge(value: f32, grid: &[f32]) -> Option<&'static str> {
    let lo = grid.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = grid.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if lo >= hi {
        // Fewer than two distinct values (an empty grid folds to lo = inf > hi = -inf).
        None
    } else if value == hi {
        Some("highest")
    } else if value == lo {
        Some("lowest")
    } else {
        None
    }
}

/// A marker dynamic must lie in [0, 1) (the error names the value).
pub fn check_dynamic(h: f32) -> Result<()> {
    if h.is_finite() && (0.0..1.0).contains(&h) {
        Ok(())
    } else {
        Err(Error::invalid(format!("marker dynamic {h}: dynamics must lie in [0, 1)")))
    }
}

/// What ranks settings of the instance stage (mean scores over the
/// choosing volumes), most important first: F1 at IoU 0.5, SEG, then the
/// thresholds' distance from 0.5 (nearer wins), then the smaller dynamic.
/// `calibrate` and training's validation both choose by it ([`best_ranked`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ranking {
    pub f1: f64,
    pub seg: f64,
    /// Sum of the thresholds' distances from 0.5.
    pub off_half: f32,
    pub dynamic: f32,
}

/// The index of the best of `ranks`, the first of exact equals: of those
/// whose F1 is within `f1_tolerance` of the best F1, the best SEG, then the
/// higher F1, then thresholds nearer 0.5, then the smaller dynamic. With a
/// tolerance of 0 that is F1, then SEG, then the rest.
pub fn best_ranked(ranks: &[Ranking], f1_tolerance: f64) -> Option<usize> {
    let top = ranks.iter().map(|r| r.f1).fold(f64::NEG_INFINITY, f64::max);
    let key = |r: &Ranking| (r.seg, r.f1, -r.off_half, -r.dynamic);
    (0..ranks.len()).filter(|&i| ranks[i].f1 >= top - f1_tolerance).fold(None, |best, i| match best {
        Some(b) if key(&ranks[i]) <= key(&ranks[b]) => Some(b),
        _ => Some(i),
    })
}

/// The index of the best of `settings` by [`Ranking`] (F1 first), given
/// each one's mean scores (F1, SEG), in the same order; the first of equals.
pub fn best_setting(settings: &[Setting], means: &[(f64, f64)]) -> Option<usize> {
    let ranks: Vec<Ranking> = settings
        .iter()
        .zip(means)
        .map(|(s, &(f1, seg))| Ranking { f1, seg, off_half: (s.threshold - 0.5).abs(), dynamic: s.dynamic })
        .collect();
    best_ranked(&ranks, 0.0)
}

/// Instance scores of one volume.
#[derive(Clone, Copy, Debug)]
pub struct InstanceScores {
    pub predicted: usize,
    pub truth: usize,
    /// Predicted nuclei matched one-to-one to true ones at IoU ≥ 0.5.
    pub matched: usize,
    /// F1 at IoU 0.5.
    pub f1: f64,
    pub seg: f64,
    /// Foreground IoU of the labels.
    pub iou: f64,
}

impl InstanceScores {
    /// Mean F1, SEG and foreground IoU over volumes' scores, summed in the
    /// order given (NaN for none): how `calibrate` and training's validation
    /// average a setting's scores.
    pub fn means<'a>(scores: impl IntoIterator<Item = &'a InstanceScores>) -> (f64, f64, f64) {
        let (mut n, mut f1, mut seg, mut iou) = (0usize, 0.0, 0.0, 0.0);
        for s in scores {
            n += 1;
            f1 += s.f1;
            seg += s.seg;
            iou += s.iou;
        }
        let n = n as f64;
        (f1 / n, seg / n, iou / n)
    }
}

/// Scores the trained network's foreground probability `prob` (on the grid
/// it was predicted on, `prob_dims`: the network's grid) through the
/// instance stage with the partner's mask, as `infer` does, at each of
/// `v.settings` (in order): back to the input grid (nearest), threshold
/// (markers: on the summits of the given dynamic), marker watershed on the
/// CPU reference (exact; ties on flood plateaus may differ from the GPU
/// stage), the nuclei grown to the setting's extent (a segmentation) or the
/// partner's (a detection), then [`crate::metrics::evaluate`] against the
/// labels. An empty segmentation or one without markers scores as no
/// nuclei.
pub fn score_instances(
    prob: &[f32],
    prob_dims: [usize; 3],
    t: &InstanceTruth,
    v: &InstanceValidation,
) -> Result<Vec<InstanceScores>> {
    use crate::postprocess::markers::{above_on, h_maxima};
    use crate::preprocess::{resample, Interp};
    if v.settings.is_empty() {
        return Err(Error::invalid("instance validation needs at least one setting"));
    }
    let p = resample(prob.to_vec(), prob_dims, t.dims, Interp::Nearest);
    let grid =
        crate::postprocess::Grid::new(t.dims, [t.voxel_um[2] as f32, t.voxel_um[1] as f32, t.voxel_um[0] as f32]);
    // Each dynamic's summits once, for all its thresholds.
    let mut summits: Vec<(f32, Vec<u8>)> = Vec::new();
    for s in &v.settings {
        let h = s.dynamic;
        check_dynamic(h)?;
        if h > 0.0 && v.role == Role::Segmentation {
            return Err(Error::invalid(format!("marker dynamic {h}: a segmentation has no markers")));
        }
        if h > 0.0 && !summits.iter().any(|(k, _)| *k == h) {
            summits.push((h, h_maxima(&p, t.dims, h, v.options.marker_connectivity)));
        }
    }
    for s in &v.settings {
        if s.extent_below().is_some() && v.role == Role::Detection {
            return Err(Error::invalid(format!("extent {:?}: markers have no extent", s.extent)));
        }
    }
    // The watershed once per threshold and dynamic, shared by the extents grown from it.
    let mut bases: Vec<(f32, f32)> = Vec::new();
    for s in &v.settings {
        if !bases.contains(&(s.threshold, s.dynamic)) {
            bases.push((s.threshold, s.dynamic));
        }
    }
    let watershed = |&(threshold, dynamic): &(f32, f32)| -> Result<Vec<u32>> {
        let top = summits.iter().find(|(k, _)| *k == dynamic).map(|(_, m)| m.as_slice());
        let mine = above_on(&p, threshold, top);
        let (seg, det) = match v.role {
            Role::Segmentation => (&mine, &t.partner),
            Role::Detection => (&t.partner, &mine),
        };
        let marked = seg.iter().zip(det.iter()).any(|(&s, &d)| s != 0 && d != 0);
        if marked || (v.options.label_unmarked_components && seg.iter().any(|&s| s != 0)) {
            crate::postprocess::reference_instances(seg, det, &grid, &v.options)
        } else {
            Ok(vec![0; seg.len()])
        }
    };
    let labelled: Vec<Vec<u32>> =
        in_parallel(bases.len(), |i| watershed(&bases[i])).into_iter().collect::<Result<_>>()?;
    let score = |s: &Setting| -> Result<InstanceScores> {
        let base = &labelled[bases.iter().position(|b| *b == (s.threshold, s.dynamic)).expect("every base labelled")];
        let own;
        let extent: Option<&[u8]> = match (v.role, s.extent_below()) {
            (Role::Segmentation, Some(e)) => {
                own = above_on(&p, e, None);
                Some(&own)
            }
            (Role::Segmentation, None) => None,
            (Role::Detection, _) => t.partner_extent.as_deref(),
        };
        let grown;
        let labels = match extent {
            Some(ext) if base.iter().any(|&l| l != 0) => {
                grown = crate::postprocess::reference_grow(base, ext, &grid, v.options.connectivity)?;
                &grown
            }
            _ => base,
        };
        let e = crate::metrics::evaluate(labels, &t.labels, t.dims)?;
        Ok(InstanceScores {
            predicted: e.pred_objects,
            truth: e.gt_objects,
            matched: e.matching.tp,
            f1: e.matching.f1,
            seg: e.seg,
            iou: e.foreground_iou,
        })
    };
    // The settings are independent: scored on all cores.
    in_parallel(v.settings.len(), |i| score(&v.settings[i])).into_iter().collect()
}

/// `f(0..n)` on all cores, in order (the result does not depend on the
/// number of threads): each thread takes every k-th index.
pub fn in_parallel<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let workers = std::thread::available_parallelism().map_or(1, |c| c.get()).min(n).max(1);
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    std::thread::scope(|sc| {
        let f = &f;
        let handles: Vec<_> = (0..workers)
            .map(|w| sc.spawn(move || (w..n).step_by(workers).map(|i| (i, f(i))).collect::<Vec<_>>()))
            .collect();
        for h in handles {
            for (i, r) in h.join().expect("a scoring thread panicked") {
                out[i] = Some(r);
            }
        }
    });
    out.into_iter().map(|r| r.expect("every index computed")).collect()
}
