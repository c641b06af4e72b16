//! The training-curve PNG (loss and validation IoU against epoch); drawn
//! without text when no system font is found (see [`crate::io::png`]).

use std::path::Path;

use plotters::prelude::*;

use crate::error::Result;
use crate::io::png::{chart, font_available, write_png, Area, DrawResult};

/// One epoch's numbers, as in the CSV log.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub step: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_iou: f64,
    /// Marker detection F1 on the validation volumes (NDN runs; NaN for
    /// the others): see [`crate::metrics::marker_detection`].
    pub val_detection: f64,
    /// Whole-volume instance scores of the validation volumes through the
    /// instance stage with the partner network (NaN without one): mean F1 at
    /// IoU 0.5, mean SEG and mean foreground IoU of the labels.
    pub val_f1: f64,
    pub val_seg: f64,
    pub val_inst_iou: f64,
    /// The trained network's threshold and (markers) dynamic at which the
    /// instance scores above were best over the validation grid (NaN
    /// without instance validation).
    pub val_threshold: f64,
    pub val_dynamic: f64,
    pub seconds: f64,
}

impl EpochRecord {
    /// What ranks epochs, most important first: the instance F1 and SEG where
    /// the whole instance stage was scored; else the marker detection F1 and
    /// the IoU (NDN runs); else the IoU alone (first value NaN).
    pub fn key(&self) -> (f64, f64) {
        if self.val_f1.is_finite() {
            (self.val_f1, self.val_seg)
        } else {
            (self.val_detection, self.val_iou)
        }
    }

    /// Whether this epoch beats the best so far (`best`: the best epoch's
    /// [`EpochRecord::key`]), comparing the keys in order.
    pub fn beats(&self, best: Option<(f64, f64)>) -> bool {
        let (a, b) = self.key();
        if !a.is_finite() && !b.is_finite() {
            return false;
        }
        let Some((ba, bb)) = best else { return true };
        let key = |v: f64| if v.is_finite() { v } else { f64::NEG_INFINITY };
        match key(a).total_cmp(&key(ba)) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => key(b) > key(bb),
        }
    }
}

/// Draws loss (train, validation) and validation IoU against epoch into a
/// PNG at `path` (written to a temporary name, then renamed).
pub fn plot_curves(path: &Path, records: &[EpochRecord]) -> Result<()> {
    let text = font_available();
    write_png(path, (1000, 420), "training plot", |root| draw(root, records, text))
}

fn draw(root: &Area<'_>, records: &[EpochRecord], text: bool) -> DrawResult {
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(500);
    let max_epoch = records.iter().map(|r| r.epoch).max().unwrap_or(1).max(1) as f64;
    let finite = |v: f64| v.is_finite();
    let max_loss =
        records.iter().flat_map(|r| [r.train_loss, r.val_loss]).filter(|v| finite(*v)).fold(0.0f64, f64::max).max(1e-6)
            * 1.05;
    let series = |f: fn(&EpochRecord) -> f64| -> Vec<(f64, f64)> {
        records.iter().map(|r| (r.epoch as f64, f(r))).filter(|p| finite(p.1)).collect()
    };

    let mut c = chart(&left, text, "loss", ["epoch", "loss"], (0f64..max_epoch, 0f64..max_loss), false)?;
    let tl = c.draw_series(LineSeries::new(series(|r| r.train_loss), BLUE.stroke_width(2)))?;
    if text {
        tl.label("train").legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
    }
    let vl = c.draw_series(LineSeries::new(series(|r| r.val_loss), RED.stroke_width(2)))?;
    if text {
        vl.label("validation").legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
        c.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    }

    let caption = "val IoU (green), marker F1 (magenta), F1 (black), SEG (blue)";
    let mut c = chart(&right, text, caption, ["epoch", "score"], (0f64..max_epoch, 0f64..1f64), false)?;
    c.draw_series(LineSeries::new(series(|r| r.val_iou), GREEN.stroke_width(2)))?;
    // Marker detection F1 (NDN runs), on the same 0–1 axis.
    c.draw_series(LineSeries::new(series(|r| r.val_detection), MAGENTA.stroke_width(2)))?;
    // Instance scores through the whole pipeline (runs with a partner network).
    c.draw_series(LineSeries::new(series(|r| r.val_f1), BLACK.stroke_width(2)))?;
    c.draw_series(LineSeries::new(series(|r| r.val_seg), BLUE.stroke_width(2)))?;
    Ok(())
}
