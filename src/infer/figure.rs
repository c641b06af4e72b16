//! The method-comparison figure (the QCANet paper's Figure 3): one row per
//! method, columns raw and labels as maximum projections along z and as the
//! middle z slice; labels in a fixed hashed palette on black.
//!
//! Pixels are composed here ([`compose`]) into an RGB buffer; [`write_png`]
//! adds the row and column titles when a TrueType font is found on the system
//! and writes the PNG atomically (plotters' bitmap backend).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One row of the figure: a method's name and its label volume (z, y, x).
pub struct Row<'a> {
    pub name: String,
    pub labels: &'a [u32],
}

/// Column titles, left to right.
pub const COLUMNS: [&str; 4] = ["raw (max z)", "labels (max z)", "raw (middle z)", "labels (middle z)"];

/// A composed RGB image (row-major, 3 bytes a pixel) with where to put titles.
pub struct Figure {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
    /// (x, y, text) of every title, top-left anchored.
    pub titles: Vec<(usize, usize, String)>,
}

/// The colour of label `l`: black for 0, else a fixed bright hue from a hash
/// of `l`, so the same label has the same colour in every panel and run.
pub fn label_colour(l: u32) -> [u8; 3] {
    if l == 0 {
        return [0, 0, 0];
    }
    // splitmix-style hash → hue in [0,1), saturation 0.55..1, value 0.75..1
    let mut h = (l as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^= h >> 31;
    let hue = (h & 0xFFFF) as f64 / 65536.0;
    let sat = 0.55 + 0.45 * ((h >> 16) & 0xFF) as f64 / 255.0;
    let val = 0.75 + 0.25 * ((h >> 24) & 0xFF) as f64 / 255.0;
    let i = (hue * 6.0).floor();
    let f = hue * 6.0 - i;
    let (p, q, t) = (val * (1.0 - sat), val * (1.0 - sat * f), val * (1.0 - sat * (1.0 - f)));
    let (r, g, b) = match i as i32 % 6 {
        0 => (val, t, p),
        1 => (q, val, p),
        2 => (p, val, t),
        3 => (p, q, val),
        4 => (t, p, val),
        _ => (val, p, q),
    };
    [(r * 255.0).round() as u8, (g * 255.0).round() as u8, (b * 255.0).round() as u8]
}

/// Maximum along z of a (z, y, x) volume.
pub fn max_z<T: Copy + PartialOrd>(data: &[T], dims: [usize; 3]) -> Vec<T> {
    let plane = dims[1] * dims[2];
    let mut out = data[..plane].to_vec();
    for z in 1..dims[0] {
        for (o, &v) in out.iter_mut().zip(&data[z * plane..(z + 1) * plane]) {
            if v > *o {
                *o = v;
            }
        }
    }
    out
}

/// Grey levels of an image, stretched between its 0.5th and 99.5th percentiles.
pub fn to_grey(img: &[f32]) -> Vec<u8> {
    let mut s: Vec<f32> = img.iter().copied().filter(|v| v.is_finite()).collect();
    if s.is_empty() {
        return vec![0; img.len()];
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
    let (lo, hi) = (at(0.005), at(0.995));
    let span = if hi > lo { hi - lo } else { 1.0 };
    img.iter().map(|&v| (((v - lo) / span).clamp(0.0, 1.0) * 255.0).round() as u8).collect()
}

/// Lays out the figure: `raw` and every row's labels are (z, y, x) volumes of
/// `dims`; each panel (a y–x view) is drawn `scale`× (nearest). Errors if a
/// volume has the wrong size.
/// The figure's layout in pixels: the gap between panels, the label column
/// on the left and the title row on top.
const GAP: usize = 6;
const LEFT: usize = 150;
const TOP: usize = 28;

/// The largest figure [`compose`] draws: 2^28 pixels (768 MiB of RGB).
pub const MAX_PIXELS: usize = 1 << 28;

/// Width and height in pixels of the figure of a stack of `dims` with
/// `rows` methods at `scale` pixels per voxel; an error past [`MAX_PIXELS`].
pub fn size(dims: [usize; 3], rows: usize, scale: usize) -> Result<(usize, usize)> {
    let scale = scale.max(1);
    let (gap, left, top) = (GAP, LEFT, TOP);
    let (ph, pw) = (dims[1].saturating_mul(scale), dims[2].saturating_mul(scale));
    let width = left.saturating_add(pw.saturating_mul(4)).saturating_add(4 * gap);
    // Each row is ph high with a gap below it.
    let height = top.saturating_add(ph.saturating_add(gap).saturating_mul(rows.max(1)));
    if width.saturating_mul(height) > MAX_PIXELS {
        return Err(Error::invalid(format!(
            "figure of {width}×{height} pixels is too large (at most {MAX_PIXELS}); lower --scale"
        )));
    }
    Ok((width, height))
}

pub fn compose(raw: &[f32], dims: [usize; 3], rows: &[Row], scale: usize) -> Result<Figure> {
    let n = dims[0] * dims[1] * dims[2];
    if n == 0 || raw.len() != n {
        return Err(Error::shape("figure", format!("raw image has {} values, dims {dims:?} need {n}", raw.len())));
    }
    if rows.is_empty() {
        return Err(Error::invalid("figure: no method to show"));
    }
    for r in rows {
        if r.labels.len() != n {
            return Err(Error::shape(
                "figure",
                format!("labels of '{}' have {} values, need {n}", r.name, r.labels.len()),
            ));
        }
    }
    let scale = scale.max(1);
    let (ph, pw) = (dims[1] * scale, dims[2] * scale);
    let (gap, left, top) = (GAP, LEFT, TOP);
    let (width, height) = size(dims, rows.len(), scale)?;
    let mut rgb = vec![0u8; width * height * 3];
    for p in rgb.chunks_mut(3) {
        p.copy_from_slice(&[255, 255, 255]);
    }
    let plane = dims[1] * dims[2];
    let mid = dims[0] / 2;
    let raw_mip = to_grey(&max_z(raw, dims));
    let raw_mid = to_grey(&raw[mid * plane..(mid + 1) * plane]);
    let grey = |g: &[u8]| g.iter().map(|&v| [v, v, v]).collect::<Vec<_>>();
    let colour = |l: &[u32]| l.iter().map(|&v| label_colour(v)).collect::<Vec<_>>();
    let mut titles = Vec::new();
    for (c, name) in COLUMNS.iter().enumerate() {
        titles.push((left + c * (pw + gap), 6, name.to_string()));
    }
    for (r, row) in rows.iter().enumerate() {
        let y0 = top + r * (ph + gap);
        titles.push((8, y0 + ph / 2 - 8, row.name.clone()));
        let panels = [
            grey(&raw_mip),
            colour(&max_z(row.labels, dims)),
            grey(&raw_mid),
            colour(&row.labels[mid * plane..(mid + 1) * plane]),
        ];
        for (c, panel) in panels.iter().enumerate() {
            let x0 = left + c * (pw + gap);
            for y in 0..ph {
                for x in 0..pw {
                    let px = panel[(y / scale) * dims[2] + x / scale];
                    let o = ((y0 + y) * width + x0 + x) * 3;
                    rgb[o..o + 3].copy_from_slice(&px);
                }
            }
        }
    }
    Ok(Figure { width, height, rgb, titles })
}

/// A TrueType font from the usual system places (or `QCANET_FONT`), if any.
pub fn find_font() -> Option<PathBuf> {
    let mut c: Vec<PathBuf> = std::env::var_os("QCANET_FONT").map(PathBuf::from).into_iter().collect();
    c.extend(
        [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            "/Library/Fonts/Arial.ttf",
            "/System/Library/Fonts/Supplemental/Arial.ttf",
            "C:\\Windows\\Fonts\\arial.ttf",
        ]
        .map(PathBuf::from),
    );
    c.into_iter().find(|p| p.is_file())
}

fn register_font_once() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let Some(p) = find_font() else {
            log::info!("no TrueType font found (set QCANET_FONT); the figure has no titles");
            return false;
        };
        match std::fs::read(&p) {
            Ok(bytes) => {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, bytes).is_ok()
            }
            Err(_) => false,
        }
    })
}

/// Writes `fig` as PNG to `path` (temporary file beside it, then renamed),
/// with titles when a font is available.
pub fn write_png(fig: &Figure, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", path.file_name().and_then(|s| s.to_str()).unwrap_or("figure")))
        .suffix(".png")
        .tempfile_in(dir)
        .map_err(|e| Error::file(path, format!("cannot create a temporary file beside it: {e}")))?;
    let (w, h) = (fig.width as u32, fig.height as u32);
    {
        let mut be = BitMapBackend::new(tmp.path(), (w, h));
        be.blit_bitmap((0, 0), (w, h), &fig.rgb).map_err(|e| Error::file(path, format!("drawing failed: {e}")))?;
        if register_font_once() {
            let style = TextStyle::from(("sans-serif", 15).into_font()).color(&BLACK);
            for (x, y, t) in &fig.titles {
                if let Err(e) = be.draw_text(t, &style, (*x as i32, *y as i32)) {
                    log::warn!("figure titles left out: {e}");
                    break;
                }
            }
        }
        be.present().map_err(|e| Error::file(path, format!("cannot write PNG: {e}")))?;
    }
    let f = tmp
        .persist(path)
        .map_err(|e| Error::file(path, format!("cannot rename the finished file into place: {}", e.error)))?;
    crate::io::readable_by_all(&f);
    Ok(())
}
