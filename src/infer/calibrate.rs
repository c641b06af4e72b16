//! Choosing each network's foreground threshold on validation volumes
//! (`qcanet-gpu calibrate`). The NSN's and NDN's probabilities are predicted
//! once per volume exactly as `infer` predicts them; then the instance stage
//! is scored for every pair of thresholds of a grid (a full grid: a search
//! one threshold at a time gets stuck where neither alone helps, e.g. an
//! under-confident NSN with over-confident markers), ranking by mean F1 at
//! IoU 0.5, then mean SEG; among equal scores the pair nearest 0.5 wins. The thresholds found go into the weights'
//! metadata, where `infer` reads them.

use crate::progress::Progress;

use crate::error::{Error, Result};
use crate::io::Volume;
use crate::metrics::instances::{score_instances, InstanceTruth, InstanceValidation, Role};
use crate::postprocess::InstanceOptions;

use super::pipeline::{foreground, threshold, voxel_of, SegmentOptions, Stage};

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
    let pn = foreground(nsn, vol, voxel_um, opts, pb)?;
    let pd = foreground(ndn, vol, voxel_um, opts, pb)?;
    Ok(CalibrationVolume { name: name.to_string(), dims: vol.dims, voxel_um, nsn: pn, ndn: pd, labels })
}

/// Mean scores of one pair of thresholds over the volumes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Trial {
    pub nsn: f32,
    pub ndn: f32,
    pub f1: f64,
    pub seg: f64,
    pub iou: f64,
}

impl Trial {
    /// Whether `self` ranks above `other`: F1, then SEG, then the distance
    /// of the thresholds from 0.5 (nearer wins).
    pub fn better_than(&self, other: &Trial) -> bool {
        let d = |t: &Trial| (t.nsn - 0.5).abs() + (t.ndn - 0.5).abs();
        (self.f1, self.seg, -d(self)) > (other.f1, other.seg, -d(other))
    }
}

/// Scores the thresholds `nsn_t`, `ndn_t` over `vols` (instance stage on
/// the CPU reference, as training's validation does).
pub fn trial(vols: &[CalibrationVolume], nsn_t: f32, ndn_t: f32, opts: &InstanceOptions) -> Result<Trial> {
    if vols.is_empty() {
        return Err(Error::invalid("calibration needs at least one volume"));
    }
    let v = InstanceValidation { volumes: Vec::new(), role: Role::Segmentation, threshold: nsn_t, options: *opts };
    let (mut f1, mut seg, mut iou) = (0.0, 0.0, 0.0);
    for c in vols {
        let t = InstanceTruth {
            name: c.name.clone(),
            dims: c.dims,
            voxel_um: c.voxel_um,
            labels: c.labels.clone(),
            partner: threshold(&c.ndn, ndn_t),
        };
        let s = score_instances(&c.nsn, c.dims, &t, &v)?;
        f1 += s.f1;
        seg += s.seg;
        iou += s.iou;
    }
    let n = vols.len() as f64;
    Ok(Trial { nsn: nsn_t, ndn: ndn_t, f1: f1 / n, seg: seg / n, iou: iou / n })
}

/// Every pair of thresholds of `grid` (0.5, 0.5 first); returns the best
/// trial and all trials in the order run.
pub fn search(vols: &[CalibrationVolume], grid: &[f32], opts: &InstanceOptions) -> Result<(Trial, Vec<Trial>)> {
    if let Some(t) = grid.iter().find(|t| !(t.is_finite() && **t > 0.0 && **t < 1.0)) {
        return Err(Error::invalid(format!("threshold {t}: thresholds must lie strictly between 0 and 1")));
    }
    let mut pairs = vec![(0.5f32, 0.5f32)];
    for &a in grid {
        for &b in grid {
            if !pairs.contains(&(a, b)) {
                pairs.push((a, b));
            }
        }
    }
    let mut all = Vec::with_capacity(pairs.len());
    let mut best: Option<Trial> = None;
    for (k, &(a, b)) in pairs.iter().enumerate() {
        let r = trial(vols, a, b, opts)?;
        log::info!(
            "[{}/{}] NSN {a:.2}, NDN {b:.2}: F1 {:.4}, SEG {:.4}, IoU {:.4}",
            k + 1,
            pairs.len(),
            r.f1,
            r.seg,
            r.iou
        );
        if best.is_none_or(|b| r.better_than(&b)) {
            best = Some(r);
        }
        all.push(r);
    }
    Ok((best.expect("at least the pair 0.5, 0.5"), all))
}
