//! Scoring a network's output through the whole QCANet instance stage: the
//! trained (or calibrated) network's probability with its partner's mask,
//! marker watershed, then the instance metrics against the ground truth.
//! Used by training's validation and by threshold calibration.

use crate::error::Result;

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
}

/// Whole-volume instance validation: the volumes (in the order of the
/// validation samples), the trained network's role and the settings of the
/// instance stage.
#[derive(Clone, Debug)]
pub struct InstanceValidation {
    pub volumes: Vec<InstanceTruth>,
    pub role: Role,
    pub threshold: f32,
    pub options: crate::postprocess::InstanceOptions,
}

/// Instance scores of one volume.
#[derive(Clone, Copy, Debug)]
pub struct InstanceScores {
    pub predicted: usize,
    pub truth: usize,
    /// F1 at IoU 0.5.
    pub f1: f64,
    pub seg: f64,
    /// Foreground IoU of the labels.
    pub iou: f64,
}

/// Scores the trained network's foreground probability `prob` (on the grid
/// it was predicted on, `prob_dims`: the network's grid) through the
/// instance stage with the partner's mask, as `infer` does: back to the
/// input grid (nearest), threshold, marker watershed on the CPU reference
/// (exact; ties on flood plateaus may differ from the GPU stage), then
/// [`crate::metrics::evaluate`] against the labels. An empty segmentation or
/// one without markers scores as no nuclei.
pub fn score_instances(
    prob: &[f32],
    prob_dims: [usize; 3],
    t: &InstanceTruth,
    v: &InstanceValidation,
) -> Result<InstanceScores> {
    use crate::preprocess::{resample, Interp};
    let p = resample(prob.to_vec(), prob_dims, t.dims, Interp::Nearest);
    let mine: Vec<u8> = p.iter().map(|&x| u8::from(x > v.threshold)).collect();
    let (seg, det) = match v.role {
        Role::Segmentation => (&mine, &t.partner),
        Role::Detection => (&t.partner, &mine),
    };
    let grid =
        crate::postprocess::Grid::new(t.dims, [t.voxel_um[2] as f32, t.voxel_um[1] as f32, t.voxel_um[0] as f32]);
    let marked = seg.iter().zip(det.iter()).any(|(&s, &d)| s != 0 && d != 0);
    let labels = if marked || (v.options.label_unmarked_components && seg.iter().any(|&s| s != 0)) {
        crate::postprocess::reference_instances(seg, det, &grid, &v.options)?
    } else {
        vec![0; seg.len()]
    };
    let e = crate::metrics::evaluate(&labels, &t.labels, t.dims)?;
    Ok(InstanceScores {
        predicted: e.pred_objects,
        truth: e.gt_objects,
        f1: e.matching.f1,
        seg: e.seg,
        iou: e.foreground_iou,
    })
}
