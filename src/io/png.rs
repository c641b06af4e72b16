//! PNG plots drawn with plotters: the font for their text, and atomic writing.
//!
//! Text needs a font registered at run time (plotters' ab_glyph backend has
//! none built in): DejaVu Sans or Liberation Sans from the usual system
//! folders. Without one, callers draw their plot without text rather than fail.

use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};

const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Registers a system font as "sans-serif" once; false if none was found.
pub fn font_available() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        for p in FONT_CANDIDATES {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        log::warn!("no TrueType font found (looked for DejaVu Sans, Liberation Sans): plots are drawn without text");
        false
    })
}

/// The drawing callback's error: anything plotters returns.
pub type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// The area a plot is drawn on.
pub type Area<'b> = DrawingArea<BitMapBackend<'b>, Shift>;

/// A chart with f64 axes.
pub type Chart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A chart on `area` over `x` × `y` with its axes drawn. With `text`: the
/// `caption`, the axis descriptions `desc` (x, y) and tick labels (on x as
/// whole numbers when `whole_x`); without, bare axes.
pub fn chart<'a, 'b>(
    area: &'a Area<'b>,
    text: bool,
    caption: &str,
    desc: [&str; 2],
    (x, y): (Range<f64>, Range<f64>),
    whole_x: bool,
) -> std::result::Result<Chart<'a, 'b>, Box<dyn std::error::Error>> {
    let mut b = ChartBuilder::on(area);
    b.margin(12);
    if text {
        b.caption(caption, ("sans-serif", 20)).x_label_area_size(36).y_label_area_size(56);
    }
    let mut c = b.build_cartesian_2d(x, y)?;
    let mut mesh = c.configure_mesh();
    if text {
        mesh.x_desc(desc[0]).y_desc(desc[1]);
        if whole_x {
            mesh.x_label_formatter(&|v| format!("{v:.0}"));
        }
    } else {
        mesh.disable_x_mesh().disable_y_mesh().x_labels(0).y_labels(0);
    }
    mesh.draw()?;
    Ok(c)
}

/// Draws a `size` (width, height) PNG at `path` through `draw`: into a
/// temporary `.png` in the same folder, renamed over `path` only when drawing
/// succeeded, so a file under `path` is complete. `what` names the plot in
/// errors.
pub fn write_png(path: &Path, size: (u32, u32), what: &str, draw: impl FnOnce(&Area<'_>) -> DrawResult) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".plot.")
        .suffix(".png")
        .tempfile_in(dir)
        .map_err(|e| Error::file(path, format!("cannot create a temporary file in {}: {e}", dir.display())))?;
    {
        let root = BitMapBackend::new(tmp.path(), size).into_drawing_area();
        draw(&root)
            .and_then(|_| root.present().map_err(Into::into))
            .map_err(|e| Error::file(path, format!("cannot draw the {what}: {e}")))?;
    }
    let f = tmp.persist(path).map_err(|e| Error::file(path, format!("cannot write: {}", e.error)))?;
    super::readable_by_all(&f);
    Ok(())
}
