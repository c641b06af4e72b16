//! TIFF reading and writing: round trips of every sample type, voxel sizes,
//! ImageJ hyperstacks, the example embryo, and every kind of bad input
//! (errors naming the file, never a panic); atomic writes.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use qcanet_gpu::io::{self, Volume};
use rand::{Rng, SeedableRng};
use tiff::encoder::{colortype, Rational, TiffEncoder, TiffValue};
use tiff::tags::Tag;

const DIMS: [usize; 3] = [5, 7, 9]; // z, y, x: odd, unequal
const VOXEL: [f64; 3] = [0.8, 0.8, 1.75];

fn n() -> usize {
    DIMS.iter().product()
}

fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Writes pages with the tiff crate directly (no ImageJ description unless given).
fn write_raw<C: colortype::ColorType>(path: &Path, w: u32, h: u32, pages: &[Vec<C::Inner>], desc: Option<&str>)
where
    [C::Inner]: TiffValue,
{
    write_raw_res::<C>(path, w, h, pages, desc, None)
}

fn write_raw_res<C: colortype::ColorType>(
    path: &Path,
    w: u32,
    h: u32,
    pages: &[Vec<C::Inner>],
    desc: Option<&str>,
    res: Option<(Rational, Rational, u16)>,
) where
    [C::Inner]: TiffValue,
{
    let mut enc = TiffEncoder::new(BufWriter::new(File::create(path).unwrap())).unwrap();
    for (i, p) in pages.iter().enumerate() {
        let mut img = enc.new_image::<C>(w, h).unwrap();
        if let (0, Some(d)) = (i, desc) {
            img.encoder().write_tag(Tag::ImageDescription, d).unwrap();
        }
        if let Some((x, y, u)) = res.clone() {
            img.encoder().write_tag(Tag::XResolution, x).unwrap();
            img.encoder().write_tag(Tag::YResolution, y).unwrap();
            img.encoder().write_tag(Tag::ResolutionUnit, u).unwrap();
        }
        img.write_data(p).unwrap();
    }
}

fn assert_voxel(got: Option<[f64; 3]>, want: [f64; 3]) {
    let got = got.expect("voxel size should be read");
    for i in 0..3 {
        assert!((got[i] - want[i]).abs() < 1e-6 * want[i].max(1.0), "voxel size {got:?}, want {want:?}");
    }
}

#[test]
fn u8_u16_u32_f32_round_trip_multi_page_with_voxel_size() {
    let d = tmp();
    let mut r = rng(1);
    let a8: Vec<u8> = (0..n()).map(|_| r.random()).collect();
    let a16: Vec<u16> = (0..n()).map(|_| r.random()).collect();
    let a32: Vec<u32> = (0..n()).map(|_| r.random_range(0..1u32 << 24)).collect(); // exact in f32
    let af: Vec<f32> = (0..n()).map(|_| r.random_range(-1e3f32..1e3)).collect();
    let p = |s: &str| d.path().join(s);
    io::write_u8(&p("a8.tif"), DIMS, &a8, Some(VOXEL)).unwrap();
    io::write_u16(&p("a16.tif"), DIMS, &a16, Some(VOXEL)).unwrap();
    io::write_u32(&p("a32.tif"), DIMS, &a32, None).unwrap();
    io::write_f32(&p("af.tif"), DIMS, &af, Some([0.123, 0.456, 2.5])).unwrap();

    let v = io::read_volume(&p("a8.tif")).unwrap();
    assert_eq!(v.dims, DIMS);
    assert_eq!(v.data, a8.iter().map(|&x| x as f32).collect::<Vec<_>>());
    assert_voxel(v.voxel_um, VOXEL);
    let v = io::read_volume(&p("a16.tif")).unwrap();
    assert_eq!(v.data, a16.iter().map(|&x| x as f32).collect::<Vec<_>>());
    assert_voxel(v.voxel_um, VOXEL);
    let v = io::read_volume(&p("a32.tif")).unwrap();
    assert_eq!(v.data, a32.iter().map(|&x| x as f32).collect::<Vec<_>>());
    assert_eq!(v.voxel_um, None, "no voxel size written, none read");
    let v = io::read_volume(&p("af.tif")).unwrap();
    assert_eq!(v.dims, DIMS);
    assert_eq!(v.data, af);
    assert_voxel(v.voxel_um, [0.123, 0.456, 2.5]);
    // No temporary files left beside the outputs.
    let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 4, "{names:?}");
}

/// The planes of a written stack read the way ImageJ reads them: it takes
/// `images=N` from the description, reads page 0's first strip offset and
/// then N planes contiguously from there, ignoring every other IFD
/// (`ij.io.TiffDecoder.getTiffInfo`: "ignore extra IFDs in ImageJ and NIH
/// Image stacks"). Planes interleaved with IFDs would open shifted in Fiji.
fn read_as_imagej(path: &Path, bytes_per_sample: usize) -> (usize, Vec<u8>) {
    let mut dec = tiff::decoder::Decoder::new(std::io::BufReader::new(File::open(path).unwrap())).unwrap();
    let desc = dec.get_tag_ascii_string(Tag::ImageDescription).unwrap();
    let images: usize = desc
        .lines()
        .find_map(|l| l.strip_prefix("images="))
        .expect("an ImageJ description with images=")
        .parse()
        .unwrap();
    let (w, h) = dec.dimensions().unwrap();
    let off = dec.get_tag_u64_vec(Tag::StripOffsets).unwrap()[0] as usize;
    let mut ifds = 1;
    while dec.more_images() {
        dec.next_image().unwrap();
        ifds += 1;
    }
    assert_eq!(ifds, images, "{}: one IFD per plane for readers that follow them", path.display());
    let raw = std::fs::read(path).unwrap();
    let len = images * (w * h) as usize * bytes_per_sample;
    assert!(off + len <= raw.len(), "{}: planes run past the end of the file", path.display());
    (images, raw[off..off + len].to_vec())
}

#[test]
fn written_stacks_open_in_imagej_with_every_plane_in_place() {
    let d = tmp();
    let mut r = rng(11);
    let a8: Vec<u8> = (0..n()).map(|_| r.random()).collect();
    let a16: Vec<u16> = (0..n()).map(|_| r.random()).collect();
    let af: Vec<f32> = (0..n()).map(|_| r.random_range(-1e3f32..1e3)).collect();
    let p = |s: &str| d.path().join(s);
    io::write_u8(&p("a8.tif"), DIMS, &a8, Some(VOXEL)).unwrap();
    io::write_u16(&p("a16.tif"), DIMS, &a16, None).unwrap();
    io::write_f32(&p("af.tif"), DIMS, &af, Some(VOXEL)).unwrap();
    // Little-endian hosts write little-endian files (the tiff crate writes native order).
    let le16: Vec<u8> = a16.iter().flat_map(|v| v.to_ne_bytes()).collect();
    let lef: Vec<u8> = af.iter().flat_map(|v| v.to_ne_bytes()).collect();
    assert_eq!(read_as_imagej(&p("a8.tif"), 1), (DIMS[0], a8));
    assert_eq!(read_as_imagej(&p("a16.tif"), 2), (DIMS[0], le16));
    assert_eq!(read_as_imagej(&p("af.tif"), 4), (DIMS[0], lef));
}

#[test]
fn labels_round_trip_in_16_bits_and_in_32_above_65535() {
    let d = tmp();
    let mut r = rng(2);
    let l: Vec<u32> = (0..n()).map(|_| r.random_range(0..=65535)).collect();
    let p = d.path().join("labels.tif");
    io::write_labels(&p, DIMS, &l, Some(VOXEL)).unwrap();
    let v = io::read_volume(&p).unwrap();
    assert_eq!(v.data, l.iter().map(|&x| x as f32).collect::<Vec<_>>());
    let mut big = l.clone();
    big[17] = 70_000;
    let q = d.path().join("big.tif");
    io::write_labels(&q, DIMS, &big, None).unwrap();
    let v = io::read_volume(&q).unwrap();
    assert_eq!(v.data, big.iter().map(|&x| x as f32).collect::<Vec<_>>(), "labels above 65535 written in 32 bits");
    // Wrong dims are an error, not a panic.
    let e = io::write_u8(&q, [2, 3, 4], &[0u8; 23], None).unwrap_err().to_string();
    assert!(e.contains("big.tif"), "{e}");
}

#[test]
fn reads_i16_f64_i8_u64_stacks_written_by_other_software() {
    let d = tmp();
    let mut r = rng(3);
    let (w, h, z) = (DIMS[2] as u32, DIMS[1] as u32, DIMS[0]);
    let plane = (w * h) as usize;
    let i16s: Vec<Vec<i16>> = (0..z).map(|_| (0..plane).map(|_| r.random()).collect()).collect();
    let f64s: Vec<Vec<f64>> = (0..z).map(|_| (0..plane).map(|_| r.random_range(-5.0..5.0)).collect()).collect();
    let i8s: Vec<Vec<i8>> = (0..z).map(|_| (0..plane).map(|_| r.random()).collect()).collect();
    let u64s: Vec<Vec<u64>> = (0..z).map(|_| (0..plane).map(|_| r.random_range(0..1u64 << 24)).collect()).collect();
    write_raw::<colortype::GrayI16>(&d.path().join("i16.tif"), w, h, &i16s, None);
    write_raw::<colortype::Gray64Float>(&d.path().join("f64.tif"), w, h, &f64s, None);
    write_raw::<colortype::GrayI8>(&d.path().join("i8.tif"), w, h, &i8s, None);
    write_raw::<colortype::Gray64>(&d.path().join("u64.tif"), w, h, &u64s, None);
    let v = io::read_volume(&d.path().join("i16.tif")).unwrap();
    assert_eq!(v.dims, DIMS);
    assert_eq!(v.data, i16s.concat().iter().map(|&x| x as f32).collect::<Vec<_>>());
    assert!(v.data.iter().any(|&x| x < 0.0));
    assert_eq!(v.voxel_um, None);
    let v = io::read_volume(&d.path().join("f64.tif")).unwrap();
    assert_eq!(v.data, f64s.concat().iter().map(|&x| x as f32).collect::<Vec<_>>());
    let v = io::read_volume(&d.path().join("i8.tif")).unwrap();
    assert_eq!(v.data, i8s.concat().iter().map(|&x| x as f32).collect::<Vec<_>>());
    let v = io::read_volume(&d.path().join("u64.tif")).unwrap();
    assert_eq!(v.data, u64s.concat().iter().map(|&x| x as f32).collect::<Vec<_>>());
}

#[test]
fn imagej_hyperstack_with_three_frames_gives_three_volumes() {
    let d = tmp();
    let (w, h, s, f) = (6u32, 5u32, 4usize, 3usize);
    // Page value encodes (t, z) so the order is checked: ImageJ stores z fastest, then t.
    let pages: Vec<Vec<u16>> = (0..s * f).map(|i| (0..w * h).map(|k| (i * 1000) as u16 + k as u16).collect()).collect();
    let desc = format!(
        "ImageJ=1.53t\nimages={}\nslices={s}\nframes={f}\nhyperstack=true\nunit=nm\nspacing=1750\nloop=false\n",
        s * f
    );
    let p = d.path().join("hyper.tif");
    write_raw_res::<colortype::Gray16>(
        &p,
        w,
        h,
        &pages,
        Some(&desc),
        Some((Rational { n: 1, d: 800 }, Rational { n: 1, d: 400 }, 1)),
    );
    let vols = io::read_stack(&p).unwrap();
    assert_eq!(vols.len(), 3);
    for (t, v) in vols.iter().enumerate() {
        assert_eq!(v.dims, [s, h as usize, w as usize]);
        for z in 0..s {
            assert_eq!(v.data[v.index(z, 0, 0)], ((t * s + z) * 1000) as f32);
            assert_eq!(v.data[v.index(z, 4, 5)], ((t * s + z) * 1000 + 29) as f32);
        }
        // nm converted to µm: x = 800 nm, y = 400 nm, z = 1750 nm.
        assert_voxel(v.voxel_um, [0.8, 0.4, 1.75]);
    }
    let e = io::read_volume(&p).unwrap_err().to_string();
    assert!(e.contains("hyper.tif") && e.contains("3 time points"), "{e}");
}

#[test]
fn imagej_stack_saved_without_axes_reads_its_channels_as_z() {
    // tifffile.imwrite(path, zyx, imagej=True) without metadata={'axes': 'ZYX'}
    // writes "channels=N" and no slices: read as N z slices, spacing kept.
    let d = tmp();
    let (w, h, c) = (6u32, 5u32, 7usize);
    let pages: Vec<Vec<u16>> = (0..c).map(|i| (0..w * h).map(|k| (i * 100 + k as usize) as u16).collect()).collect();
    let p = d.path().join("noaxes.tif");
    let desc =
        format!("ImageJ=1.11a\nimages={c}\nchannels={c}\nhyperstack=true\nmode=grayscale\nspacing=2.0\nunit=um\n");
    write_raw_res::<colortype::Gray16>(
        &p,
        w,
        h,
        &pages,
        Some(&desc),
        Some((Rational { n: 5, d: 4 }, Rational { n: 5, d: 4 }, 1)),
    );
    let v = io::read_volume(&p).unwrap();
    assert_eq!(v.dims, [c, h as usize, w as usize]);
    assert_eq!(v.data[v.index(6, 4, 5)], 629.0);
    assert_voxel(v.voxel_um, [0.8, 0.8, 2.0]);
    // Asked for a channel, the metadata is taken at its word: one slice, no z-stack.
    let m = io::read_stack_channel(&p, Some(1)).unwrap_err().to_string();
    assert!(m.contains("noaxes.tif") && m.contains("single 2-D page"), "{m}");
    // Three channels of one slice stay refused (a colour image, not a stack).
    let p = d.path().join("rgbish.tif");
    write_raw::<colortype::Gray16>(
        &p,
        w,
        h,
        &pages[..3],
        Some("ImageJ=1.11a\nimages=3\nchannels=3\nhyperstack=true\n"),
    );
    assert_err_names_file(&p, "3 channels of one slice", "3 channels");
}

#[test]
fn one_channel_of_a_multi_channel_hyperstack() {
    // Page i holds i * 1000 + k. ImageJ stores channel fastest, then z, then time:
    // channel c (from 0) of slice z at time t is page (t * s + z) * ch + c.
    let d = tmp();
    let (w, h, ch, s, f) = (6u32, 5u32, 3usize, 4usize, 2usize);
    let pages: Vec<Vec<u16>> =
        (0..ch * s * f).map(|i| (0..w * h).map(|k| (i * 1000) as u16 + k as u16).collect()).collect();
    let desc = format!(
        "ImageJ=1.53t\nimages={}\nchannels={ch}\nslices={s}\nframes={f}\nhyperstack=true\nunit=um\nspacing=2.0\n",
        ch * s * f
    );
    let p = d.path().join("three.tif");
    let res = Some((Rational { n: 5, d: 4 }, Rational { n: 5, d: 4 }, 1));
    write_raw_res::<colortype::Gray16>(&p, w, h, &pages, Some(&desc), res);
    for c in 0..ch {
        let vols = io::read_stack_channel(&p, Some(c + 1)).unwrap();
        assert_eq!(vols.len(), f);
        for (t, v) in vols.iter().enumerate() {
            assert_eq!(v.dims, [s, h as usize, w as usize]);
            for z in 0..s {
                let page = (t * s + z) * ch + c;
                assert_eq!(v.data[v.index(z, 0, 0)], (page * 1000) as f32, "c {c} t {t} z {z}");
                assert_eq!(v.data[v.index(z, 4, 5)], (page * 1000 + 29) as f32, "c {c} t {t} z {z}");
            }
            assert_voxel(v.voxel_um, [0.8, 0.8, 2.0]);
        }
    }
    let e = |c: Option<usize>| io::read_stack_channel(&p, c).unwrap_err().to_string();
    for (c, needle) in [(None, "--channel 1..3"), (Some(0), "numbered from 1"), (Some(4), "3 channels")] {
        let m = e(c);
        assert!(m.contains("three.tif") && m.contains(needle), "{c:?}: {m}");
    }

    // A one-channel stack: channel 1 is the stack, channel 2 an error.
    let one = d.path().join("one.tif");
    let data: Vec<u16> = (0..n()).map(|i| (i * 7 % 1000) as u16).collect();
    io::write_u16(&one, DIMS, &data, Some(VOXEL)).unwrap();
    assert_eq!(io::read_stack_channel(&one, Some(1)).unwrap()[0].data, io::read_volume(&one).unwrap().data);
    let m = io::read_stack_channel(&one, Some(2)).unwrap_err().to_string();
    assert!(m.contains("one.tif") && m.contains("1 channel"), "{m}");

    // OME-TIFF, channels outermost (XYZTC) and innermost (XYCZT).
    let (ch, s, f) = (2usize, 3usize, 2usize);
    for (order, page_of) in [
        (
            "XYZTC",
            Box::new(move |z: usize, c: usize, t: usize| z + s * (t + f * c))
                as Box<dyn Fn(usize, usize, usize) -> usize>,
        ),
        ("XYCZT", Box::new(move |z: usize, c: usize, t: usize| c + ch * (z + s * t))),
    ] {
        let p = d.path().join(format!("{order}.ome.tif"));
        let physical = "PhysicalSizeX=\"0.8\" PhysicalSizeZ=\"2.0\"";
        write_raw::<colortype::Gray16>(&p, w, h, &pages[..ch * s * f], Some(&ome_xml(order, s, ch, f, physical)));
        for c in 0..ch {
            let vols = io::read_stack_channel(&p, Some(c + 1)).unwrap();
            assert_eq!(vols.len(), f, "{order}");
            for (t, v) in vols.iter().enumerate() {
                assert_eq!(v.dims, [s, h as usize, w as usize]);
                for z in 0..s {
                    assert_eq!(
                        v.data[v.index(z, 4, 5)],
                        (page_of(z, c, t) * 1000 + 29) as f32,
                        "{order} c {c} t {t} z {z}"
                    );
                }
                assert_voxel(v.voxel_um, [0.8, 0.8, 2.0]);
            }
        }
        let m = io::read_stack_channel(&p, Some(3)).unwrap_err().to_string();
        assert!(m.contains(order) && m.contains("2 channels"), "{m}");
    }
}

/// OME-XML as tifffile (`ome=True`) and Bio-Formats write it, one image.
fn ome_xml(order: &str, z: usize, c: usize, t: usize, physical: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<OME xmlns=\"http://www.openmicroscopy.org/Schemas/OME/2016-06\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" UUID=\"urn:uuid:1\" Creator=\"test\">\
         <Image ID=\"Image:0\" Name=\"stack\"><Pixels ID=\"Pixels:0\" DimensionOrder=\"{order}\" Type=\"uint16\" \
         SizeX=\"6\" SizeY=\"5\" SizeZ=\"{z}\" SizeC=\"{c}\" SizeT=\"{t}\" {physical}>\
         <Channel ID=\"Channel:0:0\" SamplesPerPixel=\"1\"/><TiffData IFD=\"0\" PlaneCount=\"{}\"/></Pixels></Image></OME>",
        z * c * t
    )
}

#[test]
fn ome_tiff_pages_arranged_by_dimension_order_with_physical_size() {
    let d = tmp();
    let (w, h, s, f) = (6u32, 5u32, 4usize, 3usize);
    // Page i holds i * 1000 + k; XYTZC: time varies fastest, so page (z, t) = z * f + t.
    let pages: Vec<Vec<u16>> = (0..s * f).map(|i| (0..w * h).map(|k| (i * 1000) as u16 + k as u16).collect()).collect();
    let p = d.path().join("series.ome.tif");
    let physical = "PhysicalSizeX=\"0.5\" PhysicalSizeY=\"0.5\" PhysicalSizeZ=\"2.0\"";
    write_raw::<colortype::Gray16>(&p, w, h, &pages, Some(&ome_xml("XYTZC", s, 1, f, physical)));
    let vols = io::read_stack(&p).unwrap();
    assert_eq!(vols.len(), f);
    for (t, v) in vols.iter().enumerate() {
        assert_eq!(v.dims, [s, h as usize, w as usize]);
        for z in 0..s {
            assert_eq!(v.data[v.index(z, 0, 0)], ((z * f + t) * 1000) as f32, "t {t} z {z}");
            assert_eq!(v.data[v.index(z, 4, 5)], ((z * f + t) * 1000 + 29) as f32);
        }
        assert_voxel(v.voxel_um, [0.5, 0.5, 2.0]);
    }
    // One time point, z fastest, the z size in nm, no y size (y = x).
    let p = d.path().join("one.ome.tif");
    let physical = "PhysicalSizeX=\"0.8\" PhysicalSizeZ=\"1750\" PhysicalSizeZUnit=\"nm\"";
    write_raw::<colortype::Gray16>(&p, w, h, &pages[..s], Some(&ome_xml("XYZCT", s, 1, 1, physical)));
    let v = io::read_volume(&p).unwrap();
    assert_eq!(v.dims, [s, h as usize, w as usize]);
    assert_eq!(v.data[v.index(3, 0, 0)], 3000.0);
    assert_voxel(v.voxel_um, [0.8, 0.8, 1.75]);
    // Without a z size the voxel size is unknown (infer then says so and uses --voxel-size).
    let p = d.path().join("noz.ome.tif");
    write_raw::<colortype::Gray16>(&p, w, h, &pages[..s], Some(&ome_xml("XYZCT", s, 1, 1, "PhysicalSizeX=\"0.8\"")));
    assert_eq!(io::read_volume(&p).unwrap().voxel_um, None);
}

#[test]
fn ome_tiff_that_cannot_be_read_as_one_stack_gives_errors_naming_the_file() {
    let d = tmp();
    let (w, h) = (6u32, 5u32);
    let pages: Vec<Vec<u16>> = (0..8).map(|i| (0..w * h).map(|k| (i * 100 + k) as u16).collect()).collect();
    let cases = [
        ("twochannels.ome.tif", ome_xml("XYCZT", 4, 2, 1, ""), "2 channels"),
        ("otherfiles.ome.tif", ome_xml("XYZCT", 16, 1, 1, ""), "several files"),
        ("badxml.ome.tif", "<?xml version=\"1.0\"?><OME><Image><Pixels SizeZ=\"8\">".to_string(), "not valid xml"),
        ("order.ome.tif", ome_xml("XYZQT", 8, 1, 1, ""), "dimensionorder"),
        // Sizes whose product wraps a 64-bit count (to 8 here): refused, not read as 8 planes.
        (
            "huge.ome.tif",
            "<?xml version=\"1.0\"?><OME><Image ID=\"Image:0\"><Pixels ID=\"Pixels:0\" DimensionOrder=\"XYTZC\" \
             Type=\"uint16\" SizeX=\"6\" SizeY=\"5\" SizeZ=\"8\" SizeC=\"1\" SizeT=\"2305843009213693953\"/>\
             </Image></OME>"
                .to_string(),
            "more than any file holds",
        ),
    ];
    for (name, desc, needle) in cases {
        let p = d.path().join(name);
        write_raw::<colortype::Gray16>(&p, w, h, &pages, Some(&desc));
        assert_err_names_file(&p, name, needle);
    }
}

#[test]
fn imagej_escaped_micro_unit_and_missing_spacing() {
    let d = tmp();
    let pages: Vec<Vec<u8>> = (0..3).map(|i| vec![i as u8; 12]).collect();
    let p = d.path().join("mu.tif");
    let desc = "ImageJ=1.53t\nimages=3\nslices=3\nunit=\\u00B5m\nloop=false\n";
    write_raw_res::<colortype::Gray8>(
        &p,
        4,
        3,
        &pages,
        Some(desc),
        Some((Rational { n: 2, d: 1 }, Rational { n: 2, d: 1 }, 1)),
    );
    let v = io::read_volume(&p).unwrap();
    assert_voxel(v.voxel_um, [0.5, 0.5, 1.0]); // ImageJ omits spacing when it is 1 unit
                                               // Pixel units mean no voxel size.
    let q = d.path().join("px.tif");
    write_raw_res::<colortype::Gray8>(&q, 4, 3, &pages, Some("ImageJ=1.53t\nimages=3\nunit=pixel\n"), None);
    assert_eq!(io::read_volume(&q).unwrap().voxel_um, None);
}

/// One little-endian IFD entry of a hand-written TIFF (a SHORT value sits in
/// the low bytes of the 4-byte field).
fn ifd_entry(b: &mut Vec<u8>, tag: u16, ty: u16, count: u32, val: u32) {
    b.extend(tag.to_le_bytes());
    b.extend(ty.to_le_bytes());
    b.extend(count.to_le_bytes());
    b.extend(val.to_le_bytes());
}

/// The hand-written TIFF `bytes`, saved as `name`, reads as one volume of
/// `dims` (z, y, x) holding `values`.
fn assert_reads_as(bytes: &[u8], name: &str, dims: [usize; 3], values: &[u16]) {
    let d = tmp();
    let p = d.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    let v = io::read_volume(&p).unwrap();
    assert_eq!(v.dims, dims, "{name}");
    assert_eq!(v.data, values.iter().map(|&x| x as f32).collect::<Vec<_>>(), "{name}");
}

/// A hand-made little-endian TIFF with one IFD and `images` planes stored
/// contiguously after it, the way ImageJ writes stacks over 4 GiB.
#[test]
fn imagej_contiguous_large_stack_layout() {
    let (w, h, images) = (5u32, 3u32, 4u32);
    let desc = format!("ImageJ=1.53t\nimages={images}\nslices={images}\nloop=false\n\0");
    let n_entries = 9u16;
    let ifd_off = 8u32;
    let desc_off = ifd_off + 2 + n_entries as u32 * 12 + 4;
    let data_off = desc_off + desc.len() as u32;
    let plane_bytes = w * h * 2;
    let mut b: Vec<u8> = b"II".to_vec();
    b.extend(42u16.to_le_bytes());
    b.extend(ifd_off.to_le_bytes());
    b.extend(n_entries.to_le_bytes());
    let mut entry = |tag: u16, ty: u16, count: u32, val: u32| ifd_entry(&mut b, tag, ty, count, val);
    entry(256, 4, 1, w); // width
    entry(257, 4, 1, h); // length
    entry(258, 3, 1, 16); // bits per sample
    entry(259, 3, 1, 1); // no compression
    entry(262, 3, 1, 1); // black is zero
    entry(270, 2, desc.len() as u32, desc_off); // description
    entry(273, 4, 1, data_off); // strip offset
    entry(278, 4, 1, h); // rows per strip
    entry(279, 4, 1, plane_bytes); // strip byte count (first plane)
    b.extend(0u32.to_le_bytes()); // no next IFD
    b.extend(desc.as_bytes());
    let values: Vec<u16> = (0..w * h * images).map(|i| (i * 7 % 1000) as u16).collect();
    for v in &values {
        b.extend(v.to_le_bytes());
    }
    assert_reads_as(&b, "contig.tif", [images as usize, h as usize, w as usize], &values);
    // Cut short: a clear truncation error.
    let d = tmp();
    let q = d.path().join("contig_cut.tif");
    std::fs::write(&q, &b[..b.len() - 10]).unwrap();
    let e = io::read_stack(&q).unwrap_err().to_string();
    assert!(e.contains("contig_cut.tif") && e.contains("truncated"), "{e}");
}

#[test]
fn zstd_compressed_pages_read() {
    // As tifffile writes compression='zstd' (TIFF compression 50000): one strip a page.
    let (w, h, pages) = (7u32, 5u32, 3u32);
    let values: Vec<u16> = (0..w * h * pages).map(|i| (i * 7919 % 4000) as u16).collect();
    let strips: Vec<Vec<u8>> = values
        .chunks((w * h) as usize)
        .map(|p| {
            let raw: Vec<u8> = p.iter().flat_map(|v| v.to_le_bytes()).collect();
            zstd::encode_all(&raw[..], 3).unwrap()
        })
        .collect();
    let n_entries = 8u16;
    let ifd_len = 2 + n_entries as u32 * 12 + 4;
    let mut b: Vec<u8> = b"II".to_vec();
    b.extend(42u16.to_le_bytes());
    b.extend(8u32.to_le_bytes());
    for (i, s) in strips.iter().enumerate() {
        let strip_off = b.len() as u32 + ifd_len;
        let padded = s.len() as u32 + s.len() as u32 % 2; // the next IFD on a word boundary
        let next = if i + 1 < strips.len() { strip_off + padded } else { 0 };
        b.extend(n_entries.to_le_bytes());
        for (tag, ty, val) in [
            (256u16, 4u16, w),        // width
            (257, 4, h),              // length
            (258, 3, 16),             // bits per sample
            (259, 3, 50000),          // zstd
            (262, 3, 1),              // black is zero
            (273, 4, strip_off),      // strip offset
            (278, 4, h),              // rows per strip
            (279, 4, s.len() as u32), // strip byte count
        ] {
            ifd_entry(&mut b, tag, ty, 1, val);
        }
        b.extend(next.to_le_bytes());
        b.extend(s);
        b.resize((strip_off + padded) as usize, 0);
    }
    assert_reads_as(&b, "zstd.tif", [pages as usize, h as usize, w as usize], &values);
}

/// A file of the example data beside the repository (`../shared`, present in
/// CI): missing data fails the test, it is never skipped.
fn example(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/qcanet-example").join(rel);
    assert!(
        p.exists(),
        "{} is missing: these tests need the example data in ../shared/data/qcanet-example",
        p.display()
    );
    p
}

#[test]
fn example_embryo_reads_with_its_shape_and_range() {
    let p = example("images_raw/16_cell_stage.tif");
    let v = io::read_volume(&p).unwrap();
    assert_eq!(v.dims, [51, 120, 122]);
    let p8 = example("images_raw/8_cell_stage.tif");
    let v8 = io::read_volume(&p8).unwrap();
    eprintln!("16-cell {:?}, 8-cell {:?}", v.min_max(), v8.min_max());
    assert_eq!(v8.dims, [51, 120, 122]);
    // The README's range 92..4171 covers both raw stacks together.
    let (a, b) = (v.min_max(), v8.min_max());
    assert_eq!((a.0.min(b.0), a.1.max(b.1)), (92.0, 4171.0));
    assert_eq!(v.voxel_um, None, "the example files carry no voxel size");
    let m = example("images_nsn/16_cell_stage.tif");
    let m = io::read_volume(&m).unwrap();
    assert_eq!(m.dims, [51, 120, 122]);
    assert!(m.data.iter().all(|&x| x == 0.0 || x == 255.0));
}

fn assert_err_names_file(p: &Path, what: &str, needle: &str) {
    let r = std::panic::catch_unwind(|| io::read_stack(p));
    let r = r.unwrap_or_else(|_| panic!("{what}: read_stack panicked"));
    let e = r.expect_err(what).to_string();
    let name = p.file_name().unwrap().to_string_lossy();
    assert!(e.contains(&*name), "{what}: error does not name the file: {e}");
    assert!(e.to_lowercase().contains(needle), "{what}: error should say '{needle}': {e}");
}

#[test]
fn bad_inputs_give_errors_naming_the_file() {
    let d = tmp();
    let mut r = rng(4);
    let data: Vec<u16> = (0..n()).map(|_| r.random()).collect();
    let good = d.path().join("good.tif");
    io::write_u16(&good, DIMS, &data, None).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    // Truncated: cut a valid TIFF in half (and at a few other places).
    let p = d.path().join("half.tif");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    assert_err_names_file(&p, "truncated", "truncated");
    for cut in [3, 9, 100, bytes.len() - 1] {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = std::panic::catch_unwind(|| io::read_stack(&p)).expect("no panic");
        assert!(e.unwrap_err().to_string().contains("half.tif"));
    }

    let p = d.path().join("notes.txt");
    std::fs::write(&p, "this is not an image\n").unwrap();
    assert_err_names_file(&p, "text file", "not a tiff");

    let p = d.path().join("missing.tif");
    assert_err_names_file(&p, "missing file", "cannot open");

    let p = d.path().join("single.tif");
    write_raw::<colortype::Gray16>(&p, 9, 7, &[data[..63].to_vec()], None);
    assert_err_names_file(&p, "single page", "single 2-d page");

    let p = d.path().join("rgb.tif");
    write_raw::<colortype::RGB8>(&p, 4, 3, &[vec![7u8; 36], vec![9u8; 36]], None);
    assert_err_names_file(&p, "rgb", "colour");

    let p = d.path().join("nan.tif");
    let mut f: Vec<f32> = (0..n()).map(|_| r.random()).collect();
    f[100] = f32::NAN;
    f[200] = f32::INFINITY;
    write_raw::<colortype::Gray32Float>(&p, 9, 7, &f.chunks(63).map(|c| c.to_vec()).collect::<Vec<_>>(), None);
    assert_err_names_file(&p, "nan", "nan or infinite");

    let p = d.path().join("sizes.tif");
    write_raw::<colortype::Gray8>(&p, 4, 3, &[vec![1u8; 12]], None);
    write_raw::<colortype::Gray8>(&p, 4, 3, &[vec![1u8; 12], vec![2u8; 12]], None);
    {
        let mut enc = TiffEncoder::new(BufWriter::new(File::create(&p).unwrap())).unwrap();
        enc.write_image::<colortype::Gray8>(4, 3, &[1u8; 12]).unwrap();
        enc.write_image::<colortype::Gray8>(5, 3, &[1u8; 15]).unwrap();
    }
    assert_err_names_file(&p, "page sizes", "different sizes");

    let p = d.path().join("channels.tif");
    let pages: Vec<Vec<u8>> = (0..6).map(|i| vec![i as u8; 12]).collect();
    write_raw::<colortype::Gray8>(
        &p,
        4,
        3,
        &pages,
        Some("ImageJ=1.53t\nimages=6\nchannels=2\nslices=3\nhyperstack=true\n"),
    );
    assert_err_names_file(&p, "channels", "--channel 1..2");

    let p = d.path().join("mismatch.tif");
    write_raw::<colortype::Gray8>(&p, 4, 3, &pages, Some("ImageJ=1.53t\nimages=6\nslices=4\nframes=2\n"));
    assert_err_names_file(&p, "page count", "pages");

    // Sizes in the description that wrap a 64-bit product: errors, not panics.
    let p = d.path().join("wrapimages.tif");
    let desc = "ImageJ=1.53t\nimages=576460752303423489\nslices=576460752303423489\n";
    write_raw::<colortype::Gray8>(&p, 4, 3, &pages[..1], Some(desc));
    assert_err_names_file(&p, "wrapping image count", "576460752303423489");
    let p = d.path().join("wrapframes.tif");
    write_raw::<colortype::Gray8>(
        &p,
        4,
        3,
        &pages,
        Some("ImageJ=1.53t\nimages=6\nslices=4\nframes=4611686018427387904\n"),
    );
    assert_err_names_file(&p, "wrapping frame count", "18446744073709551616 pages");

    let p = d.path().join("timeseries2d.tif");
    write_raw::<colortype::Gray8>(&p, 4, 3, &pages, Some("ImageJ=1.53t\nimages=6\nframes=6\n"));
    assert_err_names_file(&p, "2-D time series", "single 2-d page");
}

#[test]
fn atomic_write_leaves_nothing_when_the_writer_fails() {
    let d = tmp();
    let p = d.path().join("out.json");
    let e = io::write_atomic(&p, |w| {
        w.write_all(b"partial").unwrap();
        Err(qcanet_gpu::Error::invalid("writer failed"))
    })
    .unwrap_err();
    assert!(e.to_string().contains("writer failed"));
    assert!(!p.exists());
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0, "temporary file left behind");

    // An existing file survives a failed rewrite untouched, and a successful one replaces it.
    io::write_atomic(&p, |w| Ok(w.write_all(b"first")?)).unwrap();
    let _ = io::write_atomic(&p, |w| {
        w.write_all(b"second, broken")?;
        Err(qcanet_gpu::Error::invalid("no"))
    });
    assert_eq!(std::fs::read(&p).unwrap(), b"first");
    io::write_atomic(&p, |w| Ok(w.write_all(b"second")?)).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"second");
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);

    // A TIFF writer refusing its input leaves nothing either.
    let q = d.path().join("bad.tif");
    assert!(io::write_f32(&q, [1, 1, 2], &[1.0, f32::NAN], None).is_err());
    assert!(!q.exists());
    // A missing directory is a clear error naming the file.
    let e = io::write_u8(&d.path().join("nope/x.tif"), [1, 1, 1], &[0], None).unwrap_err().to_string();
    assert!(e.contains("x.tif") && e.contains("does not exist"), "{e}");
}

#[test]
fn voxel_size_flag_parsing() {
    assert_eq!(io::parse_voxel_size("0.8,0.8,1.75").unwrap(), [0.8, 0.8, 1.75]);
    assert_eq!(io::parse_voxel_size(" 0.8, 0.8 ,2 ").unwrap(), [0.8, 0.8, 2.0]);
    assert_eq!(io::parse_voxel_size("0.5x0.5x1").unwrap(), [0.5, 0.5, 1.0]);
    for bad in ["", "0.8,0.8", "0.8,0.8,1.75,2", "a,b,c", "0.8,0,1", "0.8,-1,1", "nan,1,1", "inf,1,1"] {
        let e = io::parse_voxel_size(bad).unwrap_err().to_string();
        assert!(e.contains("voxel size"), "{bad}: {e}");
    }
}

#[test]
fn volume_new_checks_length() {
    assert!(Volume::new([2, 3, 4], vec![0.0; 24], None).is_ok());
    assert!(Volume::new([2, 3, 4], vec![0.0; 23], None).is_err());
}
