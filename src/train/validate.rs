//! Whole-volume prediction by overlapping tiles, validation loss and IoU.

use super::patch::{extract, foreground_iou, gather, Sample, Vol};
use super::separation::{loss_target, Separation};
use crate::error::Result;
use crate::metrics::instances::{score_instances, InstanceScores, InstanceTruth, InstanceValidation};
use crate::model::{Backend, LossSpec, Net};
use crate::tensor::{CpuTensor, Shape5};

/// Tile origins along one axis of length `n` for tiles of `t` overlapping by
/// at least `overlap` (the last tile ends at the volume's end; a volume
/// shorter than one tile gets one tile at 0, reflected past the end).
pub fn tile_starts(n: usize, t: usize, overlap: usize) -> Vec<usize> {
    if n <= t {
        return vec![0];
    }
    let step = t.saturating_sub(overlap).max(1);
    let mut v: Vec<usize> = (0..).map(|i| i * step).take_while(|&s| s + t < n).collect();
    v.push(n - t);
    v
}

/// Foreground probability of every voxel of `image` (inference mode),
/// predicted in tiles of `tile` (each side a multiple of the network's
/// `side_multiple`) overlapping by `overlap`, averaged where they overlap.
/// With `eval` (target, loss, separation map and the target's object
/// weights), also returns the mean loss over tiles: the training loss, each
/// tile's target weighed by the separation map within the tile and by the
/// object weights where training weighs its patches so
/// ([`loss_target`]), so that the two losses compare.
pub fn predict_volume<B: Backend>(
    net: &Net<B>,
    cx: &B::Ctx,
    image: &Vol,
    tile: usize,
    overlap: usize,
    eval: Option<(&Vol, &LossSpec, Option<&Separation>, Option<&Vol>)>,
) -> Result<(Vec<f32>, Option<f64>)> {
    let m = net.cfg.side_multiple();
    let [d, h, w] = image.dims;
    // Tile sides: at most `tile`, at least the volume rounded up to m.
    let ts = [d, h, w].map(|n| n.div_ceil(m).max(1).min(tile.div_ceil(m)) * m);
    let fg = net.cfg.foreground_channel();
    let mut acc = vec![0f32; image.data.len()];
    let mut cnt = vec![0u16; image.data.len()];
    let sample = Sample {
        name: String::new(),
        image: image.clone(),
        target: eval.map(|(t, ..)| t.clone()).unwrap_or_else(|| image.clone()),
        weight: None,
        z_step: 1.0,
    };
    let (mut loss_sum, mut tiles) = (0.0, 0usize);
    for &z0 in &tile_starts(d, ts[0], overlap) {
        for &y0 in &tile_starts(h, ts[1], overlap) {
            for &x0 in &tile_starts(w, ts[2], overlap) {
                let origin = [z0 as isize, y0 as isize, x0 as isize];
                let (img, tgt) = extract(&sample, origin, ts, [false; 3]);
                let shape = Shape5::new(1, 1, ts[0], ts[1], ts[2]);
                let x = B::upload(cx, &CpuTensor::from_vec(shape, img))?;
                let logits = net.logits(cx, &x)?;
                if let Some((_, spec, sep, weight)) = eval {
                    let t = CpuTensor::from_vec(shape, tgt);
                    let w = weight.map(|w| CpuTensor::from_vec(shape, gather(w, origin, ts, [false; 3])));
                    let t = loss_target(t, sep, w.as_ref());
                    let t = B::upload(cx, &t)?;
                    let (l, _) = net.loss(cx, spec, &logits, &t)?;
                    loss_sum += B::scalar(cx, &l)?;
                    tiles += 1;
                }
                let p = B::download(cx, &net.activate(cx, &logits)?)?;
                let pc = p.channel(0, fg);
                for z in 0..ts[0].min(d - z0) {
                    for y in 0..ts[1].min(h - y0) {
                        for x in 0..ts[2].min(w - x0) {
                            let i = image.idx(z0 + z, y0 + y, x0 + x);
                            acc[i] += pc[(z * ts[1] + y) * ts[2] + x];
                            cnt[i] += 1;
                        }
                    }
                }
            }
        }
    }
    for (a, &c) in acc.iter_mut().zip(&cnt) {
        *a /= c.max(1) as f32;
    }
    Ok((acc, (tiles > 0).then(|| loss_sum / tiles as f64)))
}

/// Scores of one validation volume.
#[derive(Clone, Debug)]
pub struct ValScores {
    /// Mean loss over tiles.
    pub loss: f64,
    /// Foreground IoU at probability 0.5.
    pub iou: f64,
    /// Marker detection F1 (when asked for): the connected components
    /// (26-connected) of probability > 0.5 against those of the target.
    pub detection: Option<f64>,
    /// Scores through the whole instance stage (with instance validation),
    /// one per setting of [`InstanceValidation::settings`], in order.
    pub instances: Option<Vec<InstanceScores>>,
}

/// Validation of one sample (its loss with the separation map `separation`
/// where training uses one, [`predict_volume`]); with `detection`, also scores the prediction
/// as markers ([`crate::metrics::marker_detection`]; target blobs that
/// touch count as one object); with `instances`, also through the whole
/// instance stage ([`score_instances`]).
#[allow(clippy::too_many_arguments)]
pub fn validate_sample<B: Backend>(
    net: &Net<B>,
    cx: &B::Ctx,
    s: &Sample,
    tile: usize,
    overlap: usize,
    spec: &LossSpec,
    separation: Option<&Separation>,
    detection: bool,
    instances: Option<(&InstanceTruth, &InstanceValidation)>,
) -> Result<ValScores> {
    let (p, loss) =
        predict_volume(net, cx, &s.image, tile, overlap, Some((&s.target, spec, separation, s.weight.as_ref())))?;
    let instances = match instances {
        Some((t, v)) => Some(score_instances(&p, s.image.dims, t, v)?),
        None => None,
    };
    let detection = if detection {
        let conn = crate::postprocess::Connectivity::TwentySix;
        let pm: Vec<u8> = p.iter().map(|&v| (v > 0.5) as u8).collect();
        let gm: Vec<u8> = s.target.data.iter().map(|&v| (v > 0.5) as u8).collect();
        let pl = crate::metrics::labels_from_mask(&pm, s.image.dims, conn)?;
        let gl = crate::metrics::labels_from_mask(&gm, s.image.dims, conn)?;
        Some(crate::metrics::marker_detection(&crate::metrics::overlaps(&pl, &gl)?).f1())
    } else {
        None
    };
    Ok(ValScores { loss: loss.unwrap_or(f64::NAN), iou: foreground_iou(&p, &s.target.data, 0.5), detection, instances })
}
