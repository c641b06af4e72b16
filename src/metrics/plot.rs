//! The dataset-evaluation PNG: F1 and SEG of each volume against its number
//! of true nuclei, which shows at which stage a model breaks.

use std::path::Path;

use plotters::prelude::*;

use super::dataset::CROWDED_NUCLEI;
use crate::error::Result;
use crate::io::png::{chart, font_available, write_png, Area, DrawResult};

/// Draws `points` (true nuclei, F1, SEG), one per volume: F1 as blue
/// circles, SEG as red triangles, a grey line at [`CROWDED_NUCLEI`] true nuclei.
pub fn scores_against_nuclei(path: &Path, points: &[(usize, f64, f64)]) -> Result<()> {
    let text = font_available();
    write_png(path, (800, 500), "evaluation plot", |root| draw(root, points, text))
}

fn draw(root: &Area<'_>, points: &[(usize, f64, f64)], text: bool) -> DrawResult {
    root.fill(&WHITE)?;
    let max_x = points.iter().map(|p| p.0).max().unwrap_or(1).max(CROWDED_NUCLEI) as f64 * 1.05;
    let caption = "F1 at IoU 0.5 (blue) and SEG (red) per volume";
    let mut c = chart(root, text, caption, ["true nuclei", "score"], (0f64..max_x, 0f64..1.02f64), true)?;
    let crowded = CROWDED_NUCLEI as f64;
    let line = c.draw_series(LineSeries::new([(crowded, 0.0), (crowded, 1.02)], BLACK.mix(0.5).stroke_width(2)))?;
    if text {
        line.label(format!("{CROWDED_NUCLEI} true nuclei"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.5).stroke_width(2)));
    }
    let finite = |v: f64| v.is_finite();
    let f1 = c.draw_series(
        points.iter().filter(|p| finite(p.1)).map(|&(n, f, _)| Circle::new((n as f64, f), 5, BLUE.mix(0.7).filled())),
    )?;
    if text {
        f1.label("F1").legend(|(x, y)| Circle::new((x + 10, y), 5, BLUE.filled()));
    }
    let seg = c.draw_series(
        points
            .iter()
            .filter(|p| finite(p.2))
            .map(|&(n, _, s)| TriangleMarker::new((n as f64, s), 6, RED.mix(0.7).filled())),
    )?;
    if text {
        seg.label("SEG").legend(|(x, y)| TriangleMarker::new((x + 10, y), 6, RED.filled()));
        c.configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}
