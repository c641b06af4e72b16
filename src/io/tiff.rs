//! TIFF stacks: reading (any grey sample type, multi-page, ImageJ hyperstacks,
//! voxel size) and writing (multi-page ImageJ-compatible, atomic).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use tiff::decoder::ifd::Value;
use tiff::decoder::{Decoder, DecodingResult};
use tiff::encoder::{colortype, Rational, TiffEncoder, TiffKind, TiffKindBig, TiffKindStandard, TiffValue};
use tiff::tags::{ByteOrder, ResolutionUnit, Tag};
use tiff::{ColorType, TiffError, TiffFormatError};

use super::atomic::write_atomic_seek;
use super::ome::OmeMeta;
use super::Volume;
use crate::error::{Error, Result};

// ---------------------------------------------------------------- reading

/// What an ImageJ `ImageDescription` ("ImageJ=1.53t\nimages=...") says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImageJMeta {
    pub images: Option<usize>,
    pub channels: Option<usize>,
    pub slices: Option<usize>,
    pub frames: Option<usize>,
    pub spacing: Option<f64>,
    pub unit: Option<String>,
}

impl ImageJMeta {
    /// `None` when the description is not ImageJ's.
    pub fn parse(desc: &str) -> Option<ImageJMeta> {
        if !desc.trim_start().starts_with("ImageJ=") {
            return None;
        }
        let mut m = ImageJMeta::default();
        for line in desc.lines() {
            let Some((k, v)) = line.split_once('=') else { continue };
            let v = v.trim();
            match k.trim() {
                "images" => m.images = v.parse().ok(),
                "channels" => m.channels = v.parse().ok(),
                "slices" => m.slices = v.parse().ok(),
                "frames" => m.frames = v.parse().ok(),
                "spacing" => m.spacing = v.parse().ok(),
                "unit" => m.unit = Some(v.to_string()),
                _ => {}
            }
        }
        Some(m)
    }
}

/// Micrometres per `unit` (ImageJ or TIFF spelling); `None` for pixels or unknown units.
pub fn unit_to_um(unit: &str) -> Option<f64> {
    let u = unit.trim().trim_matches('"').to_ascii_lowercase();
    match u.as_str() {
        "micron" | "microns" | "um" | "µm" | "μm" | "\\u00b5m" | "\\u03bcm" | "micrometer" | "micrometers"
        | "micrometre" | "micrometres" => Some(1.0),
        "nm" | "nanometer" | "nanometers" | "nanometre" | "nanometres" => Some(1e-3),
        "mm" | "millimeter" | "millimeters" | "millimetre" | "millimetres" => Some(1e3),
        "cm" | "centimeter" | "centimeters" | "centimetre" | "centimetres" => Some(1e4),
        "m" | "meter" | "meters" | "metre" | "metres" => Some(1e6),
        "inch" | "inches" | "in" => Some(25_400.0),
        _ => None,
    }
}

fn tiff_err(path: &Path, what: &str, e: TiffError) -> Error {
    let msg = match &e {
        TiffError::FormatError(TiffFormatError::TiffSignatureNotFound)
        | TiffError::FormatError(TiffFormatError::TiffSignatureInvalid) => {
            "not a TIFF file (no TIFF signature)".to_string()
        }
        TiffError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("file is truncated ({what}: unexpected end of file)")
        }
        _ => format!("unreadable TIFF ({what}): {e}"),
    };
    Error::file(path, msg)
}

fn rational(v: Option<Value>) -> Option<f64> {
    let r = match v? {
        Value::Rational(n, d) => n as f64 / d as f64,
        Value::SRational(n, d) => n as f64 / d as f64,
        Value::Float(f) => f as f64,
        Value::Double(f) => f,
        Value::Unsigned(u) => u as f64,
        Value::Short(u) => u as f64,
        _ => return None,
    };
    (r.is_finite() && r > 0.0).then_some(r)
}

fn to_f32(r: DecodingResult, out: &mut Vec<f32>) {
    match r {
        DecodingResult::U8(v) => out.extend(v.iter().map(|&x| x as f32)),
        DecodingResult::U16(v) => out.extend(v.iter().map(|&x| x as f32)),
        DecodingResult::U32(v) => out.extend(v.iter().map(|&x| x as f32)),
        DecodingResult::U64(v) => out.extend(v.iter().map(|&x| x as f32)),
        DecodingResult::I8(v) => out.extend(v.iter().map(|&x| x as f32)),
        DecodingResult::I16(v) => out.extend(v.iter().map(|&x| x as f32)),
        DecodingResult::I32(v) => out.extend(v.iter().map(|&x| x as f32)),
        DecodingResult::I64(v) => out.extend(v.iter().map(|&x| x as f32)),
        DecodingResult::F16(v) => out.extend(v.iter().map(|&x| x.to_f32())),
        DecodingResult::F32(v) => out.extend_from_slice(&v),
        DecodingResult::F64(v) => out.extend(v.iter().map(|&x| x as f32)),
    }
}

fn result_len(r: &DecodingResult) -> usize {
    match r {
        DecodingResult::U8(v) => v.len(),
        DecodingResult::U16(v) => v.len(),
        DecodingResult::U32(v) => v.len(),
        DecodingResult::U64(v) => v.len(),
        DecodingResult::I8(v) => v.len(),
        DecodingResult::I16(v) => v.len(),
        DecodingResult::I32(v) => v.len(),
        DecodingResult::I64(v) => v.len(),
        DecodingResult::F16(v) => v.len(),
        DecodingResult::F32(v) => v.len(),
        DecodingResult::F64(v) => v.len(),
    }
}

/// Sample kind of a decoded page, to decode ImageJ's contiguous raw data the same way.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F16,
    F32,
    F64,
}

impl Kind {
    fn of(r: &DecodingResult) -> Kind {
        match r {
            DecodingResult::U8(_) => Kind::U8,
            DecodingResult::U16(_) => Kind::U16,
            DecodingResult::U32(_) => Kind::U32,
            DecodingResult::U64(_) => Kind::U64,
            DecodingResult::I8(_) => Kind::I8,
            DecodingResult::I16(_) => Kind::I16,
            DecodingResult::I32(_) => Kind::I32,
            DecodingResult::I64(_) => Kind::I64,
            DecodingResult::F16(_) => Kind::F16,
            DecodingResult::F32(_) => Kind::F32,
            DecodingResult::F64(_) => Kind::F64,
        }
    }
    fn bytes(self) -> usize {
        match self {
            Kind::U8 | Kind::I8 => 1,
            Kind::U16 | Kind::I16 | Kind::F16 => 2,
            Kind::U32 | Kind::I32 | Kind::F32 => 4,
            Kind::U64 | Kind::I64 | Kind::F64 => 8,
        }
    }
    fn decode(self, b: &[u8], big: bool) -> f32 {
        macro_rules! num {
            ($t:ty, $n:expr) => {{
                let a: [u8; $n] = b.try_into().unwrap();
                if big {
                    <$t>::from_be_bytes(a)
                } else {
                    <$t>::from_le_bytes(a)
                }
            }};
        }
        match self {
            Kind::U8 => b[0] as f32,
            Kind::I8 => b[0] as i8 as f32,
            Kind::U16 => num!(u16, 2) as f32,
            Kind::I16 => num!(i16, 2) as f32,
            Kind::F16 => half::f16::from_bits(num!(u16, 2)).to_f32(),
            Kind::U32 => num!(u32, 4) as f32,
            Kind::I32 => num!(i32, 4) as f32,
            Kind::F32 => num!(f32, 4),
            Kind::U64 => num!(u64, 8) as f32,
            Kind::I64 => num!(i64, 8) as f32,
            Kind::F64 => num!(f64, 8) as f32,
        }
    }
}

fn check_colortype(path: &Path, page: usize, ct: ColorType) -> Result<()> {
    let bad = |m: String| Err(Error::file(path, format!("page {page}: {m}")));
    match ct {
        ColorType::Gray(8 | 16 | 32 | 64) => Ok(()),
        ColorType::Palette(8 | 16) => {
            log::debug!("{}: palette (LUT) image; reading the indices as intensities", path.display());
            Ok(())
        }
        ColorType::Gray(b) | ColorType::Palette(b) => {
            bad(format!("{b}-bit samples are not supported (need 8, 16, 32 or 64 bits per sample)"))
        }
        ColorType::RGB(_) | ColorType::RGBA(_) | ColorType::YCbCr(_) | ColorType::CMYK(_) | ColorType::CMYKA(_)
        | ColorType::Lab(_) => bad(format!(
            "colour image ({ct:?}); need a single-channel grey stack (e.g. split channels in Fiji and save the nuclear one)"
        )),
        ColorType::GrayA(_) => bad("grey + alpha pixels (2 samples per pixel); need one sample per pixel".into()),
        ColorType::Multiband { num_samples, .. } => {
            bad(format!("{num_samples} samples per pixel; multi-sample pixels are not supported, need one channel"))
        }
        other => bad(format!("unsupported pixel type {other:?}")),
    }
}

/// Reads a TIFF stack: 8-, 16-, 32- and 64-bit unsigned/signed integer and
/// 16-/32-/64-bit float grey samples, multi-page (one page per z) and ImageJ
/// hyperstacks (`frames` > 1 gives one [`Volume`] per time point; ImageJ's
/// contiguous layout for stacks over 4 GiB is read too).
///
/// OME-TIFF (OME-XML in the description; [`super::ome`]): its `SizeZ`,
/// `SizeC`, `SizeT` and `DimensionOrder` arrange the pages into time points of z
/// slices, its `PhysicalSize{X,Y,Z}` give the voxel size.
///
/// Voxel size: from the ImageJ description (`unit=`, `spacing=` for z) and
/// the XResolution/YResolution tags (pixels per unit), converted to µm
/// (micron/µm/um, nm, mm, cm, m, inch); or from XResolution/YResolution with a
/// centimetre/inch ResolutionUnit, which gives x and y but no z, so `None`.
/// `None` whenever the file does not say all three.
///
/// Errors name the file: not a TIFF, truncated, a single 2-D page, colour or
/// multi-sample pixels, multi-channel hyperstacks and OME-TIFFs (read one
/// channel with [`read_stack_channel`]), OME-TIFFs of several images or
/// whose planes are not all in the file, pages of different sizes or sample
/// types, NaN or infinite values.
pub fn read_stack(path: &Path) -> Result<Vec<Volume>> {
    read_stack_channel(path, None)
}

/// [`read_stack`] of one channel of a multi-channel ImageJ hyperstack or
/// OME-TIFF: `channel` counts from 1, as Fiji numbers channels (`C=1`).
/// `None` reads a one-channel stack and refuses several channels; a channel
/// the file does not have is an error naming the file and its channel count.
pub fn read_stack_channel(path: &Path, channel: Option<usize>) -> Result<Vec<Volume>> {
    let file = File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut dec = Decoder::new(BufReader::new(file)).map_err(|e| tiff_err(path, "header", e))?;

    let desc = dec.get_tag_ascii_string(Tag::ImageDescription).ok();
    let ij = desc.as_deref().and_then(ImageJMeta::parse);
    let ome = match desc.as_deref().filter(|_| ij.is_none()).map(OmeMeta::parse) {
        Some(Err(m)) => return Err(Error::file(path, m)),
        Some(Ok(o)) => o,
        None => None,
    };
    let xres = rational(dec.find_tag(Tag::XResolution).ok().flatten());
    let yres = rational(dec.find_tag(Tag::YResolution).ok().flatten());
    let res_unit = dec.find_tag_unsigned::<u16>(Tag::ResolutionUnit).ok().flatten();

    let mut data: Vec<f32> = Vec::new();
    let mut size: Option<(u32, u32)> = None;
    let mut kind: Option<Kind> = None;
    let mut first_strip: Option<(u64, bool)> = None; // offset of page 0's data, uncompressed?
    let mut pages = 0usize;
    let mut ifd = 0usize;
    loop {
        let subfile = dec.find_tag_unsigned::<u32>(Tag::NewSubfileType).ok().flatten().unwrap_or(0);
        if subfile & 1 != 0 {
            log::debug!("{}: skipping reduced-resolution page (IFD {ifd})", path.display());
        } else {
            let (w, h) = dec.dimensions().map_err(|e| tiff_err(path, &format!("page {pages}"), e))?;
            let ct = dec.colortype().map_err(|e| tiff_err(path, &format!("page {pages}"), e))?;
            check_colortype(path, pages, ct)?;
            match size {
                None => size = Some((w, h)),
                Some((w0, h0)) if (w0, h0) != (w, h) => {
                    return Err(Error::file(
                        path,
                        format!(
                            "pages of different sizes: page 0 is {w0}×{h0}, page {pages} is {w}×{h} (width×height)"
                        ),
                    ));
                }
                _ => {}
            }
            if pages == 0 {
                let off = dec.find_tag_unsigned_vec::<u64>(Tag::StripOffsets).ok().flatten();
                let comp = dec.find_tag_unsigned::<u16>(Tag::Compression).ok().flatten().unwrap_or(1);
                first_strip = off.and_then(|o| o.first().copied()).map(|o| (o, comp == 1));
            }
            let img = dec.read_image().map_err(|e| tiff_err(path, &format!("page {pages}"), e))?;
            let k = Kind::of(&img);
            match kind {
                None => kind = Some(k),
                Some(k0) if k0 != k => {
                    return Err(Error::file(
                        path,
                        format!("pages of different sample types: page 0 is {k0:?}, page {pages} is {k:?}"),
                    ));
                }
                _ => {}
            }
            let n = result_len(&img);
            if n != w as usize * h as usize {
                return Err(Error::file(
                    path,
                    format!("page {pages}: decoded {n} samples for a {w}×{h} page (corrupt or unsupported layout)"),
                ));
            }
            to_f32(img, &mut data);
            pages += 1;
        }
        ifd += 1;
        if !dec.more_images() {
            break;
        }
        if let Err(e) = dec.next_image() {
            // A zero "next IFD" offset is the normal end; anything else is damage.
            if matches!(e, TiffError::FormatError(TiffFormatError::ImageFileDirectoryNotFound)) {
                break;
            }
            return Err(tiff_err(path, &format!("IFD {ifd}"), e));
        }
    }
    let Some((w, h)) = size else {
        return Err(Error::file(path, "contains no full-resolution image"));
    };
    let (w, h) = (w as usize, h as usize);
    let plane = w * h;

    // ImageJ writes stacks over 4 GiB as one IFD followed by all planes contiguously.
    if let (Some(m), Some((off, true)), Some(k)) = (&ij, first_strip, kind) {
        if let Some(images) = m.images.filter(|&i| i > pages && pages == 1) {
            // Sizes from the description are the file's word: checked, so a wild one cannot wrap.
            let need = images.checked_mul(plane).and_then(|n| n.checked_mul(k.bytes())).map(|n| n as u64);
            if need.and_then(|n| n.checked_add(off)).is_none_or(|end| end > file_len) {
                let need = need.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string());
                return Err(Error::file(
                    path,
                    format!(
                        "file is truncated: ImageJ description says {images} images, which need {need} bytes from offset {off}, file has {file_len}"
                    ),
                ));
            }
            let big = dec.byte_order() == ByteOrder::BigEndian;
            let mut f = File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
            f.seek(SeekFrom::Start(off)).map_err(|e| Error::file(path, format!("seek failed: {e}")))?;
            let mut raw = vec![0u8; images * plane * k.bytes()];
            f.read_exact(&mut raw).map_err(|e| Error::file(path, format!("file is truncated: {e}")))?;
            data = raw.chunks_exact(k.bytes()).map(|b| k.decode(b, big)).collect();
            pages = images;
        }
    }

    // Arrange pages into time points.
    let (slices, frames) = match &ij {
        Some(m) => {
            let c = m.channels.unwrap_or(1).max(1);
            let (s1, f1) = (m.slices.unwrap_or(1) <= 1, m.frames.unwrap_or(1) <= 1);
            // Asked for a channel, the metadata's channels are taken as channels.
            let axisless = channel.is_none() && c > 4 && s1 && f1 && c == pages;
            if axisless {
                // No slices and no frames: a z-stack written without its axes
                // (tifffile's `imwrite(..., imagej=True)` of a 3-D array calls
                // its first axis channels). A single slice of many channels
                // is no z-stack, so the pages are read as z; 2-4 channels of
                // one slice are more likely a colour or multi-stain image,
                // refused below as before.
                log::warn!(
                    "{}: ImageJ metadata says {c} channels of one slice, no z slices; reading the {c} channels as z slices (a stack saved without its axes? tifffile: metadata={{'axes': 'ZYX'}})",
                    path.display()
                );
            }
            let (c, chosen) = if axisless { (1, 0) } else { (c, pick_channel(path, channel, c, "ImageJ hyperstack")?) };
            let f = m.frames.unwrap_or(1).max(1);
            let s = if axisless { pages } else { m.slices.unwrap_or(pages / f.saturating_mul(c)).max(1) };
            // u128: the description's sizes cannot overflow the product.
            let described = s as u128 * c as u128 * f as u128;
            if described != pages as u128 {
                let cs = if c > 1 { format!(" × channels={c}") } else { String::new() };
                return Err(Error::file(
                    path,
                    format!("ImageJ description says slices={s}{cs} × frames={f} = {described} pages, but the file has {pages}"),
                ));
            }
            if c > 1 {
                // ImageJ stores a hyperstack's planes channel fastest, then z, then time.
                data = gather_planes(&data, plane, (0..f * s).map(|ts| ts * c + chosen));
            }
            (s, f)
        }
        None => match &ome {
            Some(o) => {
                let chosen = pick_channel(path, channel, o.size_c, "OME-TIFF")?;
                if o.planes() != pages {
                    return Err(Error::file(
                        path,
                        format!(
                            "its OME-XML describes {} planes (SizeZ={} × SizeC={} × SizeT={}) but the file has {pages} pages{}",
                            o.planes(),
                            o.size_z,
                            o.size_c,
                            o.size_t,
                            if o.planes() > pages {
                                " (an image spread over several files? open it in Fiji with Bio-Formats and save it as one TIFF)"
                            } else {
                                ""
                            }
                        ),
                    ));
                }
                // The chosen channel's pages, in the order the file gives them, to time points of z slices.
                if o.size_c > 1
                    || (0..o.size_t).any(|t| (0..o.size_z).any(|z| o.page(z, chosen, t) != t * o.size_z + z))
                {
                    let pages = (0..o.size_t).flat_map(|t| (0..o.size_z).map(move |z| o.page(z, chosen, t)));
                    data = gather_planes(&data, plane, pages);
                }
                (o.size_z, o.size_t)
            }
            None => {
                pick_channel(path, channel, 1, "stack without channel metadata")?;
                (pages, 1)
            }
        },
    };
    if slices < 2 {
        let what = if frames > 1 {
            format!(
                "each of its {frames} time points is a single 2-D page, not a z-stack (if the pages are z slices, set slices={frames}, frames=1 in Fiji: Image > Properties)"
            )
        } else {
            format!("a single 2-D page ({w}×{h}), not a z-stack")
        };
        return Err(Error::file(path, what));
    }

    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        let bad = data.iter().filter(|v| !v.is_finite()).count();
        let (t, r) = (i / (slices * plane), i % (slices * plane));
        let (z, y, x) = (r / plane, (r % plane) / w, r % w);
        return Err(Error::file(
            path,
            format!("{bad} NaN or infinite values (first at t={t}, z={z}, y={y}, x={x}: {})", data[i]),
        ));
    }

    // Voxel size in µm.
    let voxel_um = match &ij {
        Some(m) if m.unit.as_deref().and_then(unit_to_um).is_some() => {
            let s = unit_to_um(m.unit.as_deref().unwrap()).unwrap();
            let x = s / xres.unwrap_or(1.0);
            let y = s / yres.or(xres).unwrap_or(1.0);
            let z = s * m.spacing.unwrap_or(1.0).abs();
            Some([x, y, z])
        }
        _ if ome.is_some() => ome.as_ref().and_then(|o| o.voxel_um),
        _ => {
            if matches!(res_unit, Some(2 | 3)) && xres.is_some() {
                log::info!(
                    "{}: x/y pixel size in the resolution tags but no z spacing; voxel size unknown",
                    path.display()
                );
            }
            None
        }
    }
    .filter(|v| v.iter().all(|c| c.is_finite() && *c > 0.0));

    let vol = slices * plane;
    if data.len() != frames * vol {
        return Err(Error::file(
            path,
            format!("{} samples read for {frames} time point(s) of {slices} slices of {w}×{h}", data.len()),
        ));
    }
    Ok((0..frames)
        .map(|t| Volume { dims: [slices, h, w], data: data[t * vol..(t + 1) * vol].to_vec(), voxel_um })
        .collect())
}

/// The planes of `data` (each `plane` values) at the page indices `pages`, in that order.
fn gather_planes(data: &[f32], plane: usize, pages: impl Iterator<Item = usize>) -> Vec<f32> {
    pages.flat_map(|p| &data[p * plane..(p + 1) * plane]).copied().collect()
}

/// The 0-based index of the channel `channel` (from 1) names, of
/// `channels`; `None` is the only channel of a one-channel file. Errors name
/// the file and say how to choose.
fn pick_channel(path: &Path, channel: Option<usize>, channels: usize, what: &str) -> Result<usize> {
    match channel {
        None if channels == 1 => Ok(0),
        None => Err(Error::file(
            path,
            format!(
                "{what} with {channels} channels: choose the nuclear one with --channel 1..{channels} (numbered as Fiji numbers them), or save it alone (Fiji: Image > Color > Split Channels)"
            ),
        )),
        Some(0) => Err(Error::file(path, "--channel 0: channels are numbered from 1, as in Fiji")),
        Some(k) if k <= channels => Ok(k - 1),
        Some(k) => Err(Error::file(
            path,
            format!("--channel {k}, but the {what} has {channels} channel{}", if channels == 1 { "" } else { "s" }),
        )),
    }
}

/// Exactly one time point (error naming the file if it has several).
pub fn read_volume(path: &Path) -> Result<Volume> {
    let mut v = read_stack(path)?;
    if v.len() != 1 {
        return Err(Error::file(
            path,
            format!("has {} time points; expected a single z-stack (process the frames one at a time)", v.len()),
        ));
    }
    Ok(v.pop().unwrap())
}

// ---------------------------------------------------------------- writing

fn check_dims(path: &Path, dims: [usize; 3], len: usize) -> Result<()> {
    let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if dims.contains(&0) || n != Some(len) {
        return Err(Error::file(path, format!("cannot write: dims {dims:?} (z,y,x) do not match {len} values")));
    }
    if dims[1] > u32::MAX as usize || dims[2] > u32::MAX as usize {
        return Err(Error::file(path, format!("cannot write: page {}×{} too large for TIFF", dims[2], dims[1])));
    }
    Ok(())
}

/// Pixels per unit as a TIFF rational (denominator chosen so the numerator fits).
fn px_per_unit(um: f64) -> Rational {
    let v = 1.0 / um;
    let mut d: u32 = 1_000_000;
    while d > 1 && v * d as f64 > u32::MAX as f64 {
        d /= 10;
    }
    Rational { n: (v * d as f64).round().clamp(1.0, u32::MAX as f64) as u32, d }
}

fn imagej_description(dims: [usize; 3], voxel_um: Option<[f64; 3]>, min: f64, max: f64) -> String {
    let mut s = format!("ImageJ=1.11a\nimages={}\nslices={}\n", dims[0], dims[0]);
    if let Some(v) = voxel_um {
        s += &format!("unit=micron\nspacing={}\n", v[2]);
    }
    s += &format!("loop=false\nmin={min}\nmax={max}\n");
    s
}

/// Writes the planes as ImageJ does: all pixel data first, contiguously,
/// then one IFD per plane pointing into it. ImageJ (and so Fiji's File >
/// Open) reads a stack whose description says `images=N` from page 0's first
/// strip onwards and ignores the other IFDs, so planes interleaved with IFDs,
/// as `ImageEncoder` lays them out, would open shifted in every slice after
/// the first. Every other reader follows the IFDs, which say the same.
fn write_pages_kind<W, K, C>(
    w: W,
    dims: [usize; 3],
    data: &[C::Inner],
    desc: &str,
    voxel_um: Option<[f64; 3]>,
) -> std::result::Result<(), TiffError>
where
    W: Write + Seek,
    K: TiffKind,
    C: colortype::ColorType,
    [C::Inner]: TiffValue,
{
    let mut enc = TiffEncoder::<W, K>::new_generic(w)?;
    let (width, height) = (u32::try_from(dims[2])?, u32::try_from(dims[1])?);
    let plane_bytes = std::mem::size_of_val(data) as u64 / dims[0].max(1) as u64;
    let sample_format: Vec<u16> = C::SAMPLE_FORMAT.iter().map(|s| s.to_u16()).collect();
    let mut first_offset = 0u64;
    for z in 0..dims[0] {
        let mut dir = enc.image_directory()?;
        if z == 0 {
            first_offset = dir.write_data(data)?;
            dir.write_tag(Tag::ImageDescription, desc)?;
        }
        dir.write_tag(Tag::ImageWidth, width)?;
        dir.write_tag(Tag::ImageLength, height)?;
        dir.write_tag(Tag::BitsPerSample, C::BITS_PER_SAMPLE)?;
        dir.write_tag(Tag::Compression, 1u16)?;
        dir.write_tag(Tag::PhotometricInterpretation, C::TIFF_VALUE.to_u16())?;
        dir.write_tag(Tag::StripOffsets, K::convert_offset(first_offset + z as u64 * plane_bytes)?)?;
        dir.write_tag(Tag::SamplesPerPixel, 1u16)?;
        dir.write_tag(Tag::RowsPerStrip, height)?;
        dir.write_tag(Tag::StripByteCounts, K::convert_offset(plane_bytes)?)?;
        // Baseline TIFF asks for a resolution; 1/1 says none is known.
        let (xres, yres) = voxel_um
            .map_or((Rational { n: 1, d: 1 }, Rational { n: 1, d: 1 }), |v| (px_per_unit(v[0]), px_per_unit(v[1])));
        dir.write_tag(Tag::XResolution, xres)?;
        dir.write_tag(Tag::YResolution, yres)?;
        dir.write_tag(Tag::ResolutionUnit, ResolutionUnit::None.to_u16())?;
        dir.write_tag(Tag::SampleFormat, &sample_format[..])?;
        dir.finish()?;
    }
    Ok(())
}

fn write_pages<C>(
    path: &Path,
    dims: [usize; 3],
    data: &[C::Inner],
    voxel_um: Option<[f64; 3]>,
    mm: (f64, f64),
) -> Result<()>
where
    C: colortype::ColorType,
    [C::Inner]: TiffValue,
{
    check_dims(path, dims, data.len())?;
    if let Some(v) = voxel_um {
        if !v.iter().all(|c| c.is_finite() && *c > 0.0) {
            return Err(Error::file(path, format!("cannot write: invalid voxel size {v:?} µm")));
        }
    }
    let desc = imagej_description(dims, voxel_um, mm.0, mm.1);
    let bytes = std::mem::size_of_val(data) as u64;
    // Classic TIFF offsets are 32-bit; go BigTIFF well before 4 GiB.
    let big = bytes + (dims[0] as u64) * 512 > 4_000_000_000;
    write_atomic_seek(path, |w| {
        let r = if big {
            write_pages_kind::<_, TiffKindBig, C>(w, dims, data, &desc, voxel_um)
        } else {
            write_pages_kind::<_, TiffKindStandard, C>(w, dims, data, &desc, voxel_um)
        };
        r.map_err(|e| Error::file(path, format!("TIFF write failed: {e}")))
    })
}

fn min_max<T: Copy + Into<f64>>(d: &[T]) -> (f64, f64) {
    let mut mn = f64::INFINITY;
    let mut mx = f64::NEG_INFINITY;
    for &v in d {
        let v: f64 = v.into();
        if v < mn {
            mn = v;
        }
        if v > mx {
            mx = v;
        }
    }
    if mn > mx {
        (0.0, 0.0)
    } else {
        (mn, mx)
    }
}

/// Instance labels: a 16-bit stack, or 32-bit when a label is above 65535
/// (logged: Fiji opens those as 32-bit float).
pub fn write_labels(path: &Path, dims: [usize; 3], labels: &[u32], voxel_um: Option<[f64; 3]>) -> Result<()> {
    match labels.iter().max() {
        Some(&m) if m > u16::MAX as u32 => {
            log::warn!("{}: largest label {m} is above 65535; writing 32-bit labels", path.display());
            write_u32(path, dims, labels, voxel_um)
        }
        _ => {
            let d: Vec<u16> = labels.iter().map(|&l| l as u16).collect();
            write_u16(path, dims, &d, voxel_um)
        }
    }
}

/// 8-bit multi-page ImageJ TIFF, written atomically.
pub fn write_u8(path: &Path, dims: [usize; 3], data: &[u8], voxel_um: Option<[f64; 3]>) -> Result<()> {
    write_pages::<colortype::Gray8>(path, dims, data, voxel_um, min_max(data))
}

/// 16-bit multi-page ImageJ TIFF, written atomically.
pub fn write_u16(path: &Path, dims: [usize; 3], data: &[u16], voxel_um: Option<[f64; 3]>) -> Result<()> {
    write_pages::<colortype::Gray16>(path, dims, data, voxel_um, min_max(data))
}

/// 32-bit unsigned multi-page TIFF (labels beyond 65535; ImageJ opens it as 32-bit float).
pub fn write_u32(path: &Path, dims: [usize; 3], data: &[u32], voxel_um: Option<[f64; 3]>) -> Result<()> {
    write_pages::<colortype::Gray32>(path, dims, data, voxel_um, min_max(data))
}

/// 32-bit float multi-page ImageJ TIFF, written atomically. NaN/inf are refused (they would not read back).
pub fn write_f32(path: &Path, dims: [usize; 3], data: &[f32], voxel_um: Option<[f64; 3]>) -> Result<()> {
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(Error::file(path, format!("cannot write: value {} at index {i} is not finite", data[i])));
    }
    write_pages::<colortype::Gray32Float>(path, dims, data, voxel_um, min_max(data))
}
