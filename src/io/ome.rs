//! OME-TIFF metadata: the OME-XML that Bio-Formats, Fiji's Bio-Formats
//! exporter, microscope software and `tifffile` (`ome=True`) write into the
//! first page's ImageDescription. It says how the pages map to (z, channel,
//! time) and the physical voxel size, which plain TIFF tags cannot.

use super::tiff::unit_to_um;

/// What the OME-XML of a one-file, one-image OME-TIFF says.
#[derive(Clone, Debug, PartialEq)]
pub struct OmeMeta {
    pub size_z: usize,
    pub size_c: usize,
    pub size_t: usize,
    /// Page stride of z, channel and time (from `DimensionOrder`).
    pub strides: [usize; 3],
    /// x, y, z in µm; `None` unless all three are given in known units.
    pub voxel_um: Option<[f64; 3]>,
}

impl OmeMeta {
    /// The page (IFD index among full-resolution pages) of plane (z, c, t).
    pub fn page(&self, z: usize, c: usize, t: usize) -> usize {
        z * self.strides[0] + c * self.strides[1] + t * self.strides[2]
    }
    /// Planes the image has.
    pub fn planes(&self) -> usize {
        self.size_z * self.size_c * self.size_t
    }

    /// `Ok(None)` when `desc` is not OME-XML; an error (a sentence, without
    /// the file's name) when it is and cannot be used.
    pub fn parse(desc: &str) -> Result<Option<OmeMeta>, String> {
        let s = desc.trim_start_matches('\u{feff}').trim_start();
        if !(s.starts_with("<?xml") || s.starts_with("<OME")) || !s.contains("OME") {
            return Ok(None);
        }
        let doc = roxmltree::Document::parse(s).map_err(|e| format!("its OME-XML metadata is not valid XML: {e}"))?;
        if doc.root_element().tag_name().name() != "OME" {
            return Ok(None);
        }
        let images: Vec<_> = doc.descendants().filter(|n| n.tag_name().name() == "Image").collect();
        if images.len() > 1 {
            return Err(format!(
                "an OME-TIFF holding {} images (series or positions); save each image as its own file \
                 (Fiji: Bio-Formats importer, then File > Save As > Tiff)",
                images.len()
            ));
        }
        let Some(px) = doc.descendants().find(|n| n.tag_name().name() == "Pixels") else {
            return Err("its OME-XML metadata has no Pixels element".into());
        };
        let size = |a: &str| -> Result<usize, String> {
            match px.attribute(a) {
                None => Ok(1),
                Some(v) => v
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("its OME-XML says {a}=\"{v}\", not a positive whole number")),
            }
        };
        let (size_z, size_c, size_t) = (size("SizeZ")?, size("SizeC")?, size("SizeT")?);
        // Every page index and stride below is at most the number of planes, so this bounds them all.
        if size_z.checked_mul(size_c).and_then(|n| n.checked_mul(size_t)).is_none() {
            return Err(format!(
                "its OME-XML says SizeZ={size_z} × SizeC={size_c} × SizeT={size_t} planes, more than any file holds"
            ));
        }
        let order = px.attribute("DimensionOrder").unwrap_or("XYZCT");
        let strides = strides(order, [size_z, size_c, size_t])
            .ok_or_else(|| format!("its OME-XML has an unknown DimensionOrder \"{order}\""))?;
        // Samples per pixel above 1 in a channel (RGB) is refused by the
        // TIFF reader from the pages themselves.
        let length = |a: &str| -> Option<f64> {
            let v: f64 = px.attribute(a)?.trim().parse().ok()?;
            let unit = px.attribute(format!("{a}Unit").as_str()).unwrap_or("µm");
            let um = v * unit_to_um(unit)?;
            (um.is_finite() && um > 0.0).then_some(um)
        };
        let voxel_um = match (length("PhysicalSizeX"), length("PhysicalSizeY"), length("PhysicalSizeZ")) {
            (Some(x), y, Some(z)) => Some([x, y.unwrap_or(x), z]),
            _ => None,
        };
        Ok(Some(OmeMeta { size_z, size_c, size_t, strides, voxel_um }))
    }
}

/// Page strides of (z, c, t) for an OME `DimensionOrder` ("XY" then Z, C
/// and T in the order they vary, fastest first).
fn strides(order: &str, sizes: [usize; 3]) -> Option<[usize; 3]> {
    let rest = order.strip_prefix("XY")?;
    if rest.len() != 3 {
        return None;
    }
    let mut out = [0usize; 3];
    let mut seen = [false; 3];
    let mut stride = 1;
    for ch in rest.chars() {
        let i = match ch {
            'Z' => 0,
            'C' => 1,
            'T' => 2,
            _ => return None,
        };
        if seen[i] {
            return None;
        }
        seen[i] = true;
        out[i] = stride;
        stride *= sizes[i];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xml(pixels_attrs: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<OME xmlns=\"http://www.openmicroscopy.org/Schemas/OME/2016-06\" \
             UUID=\"urn:uuid:0\"><Image ID=\"Image:0\" Name=\"x\"><Pixels ID=\"Pixels:0\" Type=\"uint16\" {pixels_attrs}>\
             <Channel ID=\"Channel:0:0\" SamplesPerPixel=\"1\"/><TiffData/></Pixels></Image></OME>"
        )
    }

    #[test]
    fn reads_sizes_order_and_voxel_size() {
        let m = OmeMeta::parse(&xml(
            "DimensionOrder=\"XYCZT\" SizeX=\"7\" SizeY=\"5\" SizeZ=\"4\" SizeC=\"2\" SizeT=\"3\" \
             PhysicalSizeX=\"0.5\" PhysicalSizeXUnit=\"µm\" PhysicalSizeY=\"0.6\" PhysicalSizeZ=\"2000\" PhysicalSizeZUnit=\"nm\"",
        ))
        .unwrap()
        .unwrap();
        assert_eq!((m.size_z, m.size_c, m.size_t), (4, 2, 3));
        // C fastest, then Z, then T.
        assert_eq!(m.strides, [2, 1, 8]);
        assert_eq!(m.page(3, 1, 2), 3 * 2 + 1 + 2 * 8);
        assert_eq!(m.planes(), 24);
        let v = m.voxel_um.unwrap();
        assert!((v[0] - 0.5).abs() < 1e-12 && (v[1] - 0.6).abs() < 1e-12 && (v[2] - 2.0).abs() < 1e-12);
    }

    #[test]
    fn time_before_z_and_missing_sizes() {
        let m = OmeMeta::parse(&xml("DimensionOrder=\"XYTZC\" SizeZ=\"5\" SizeT=\"2\" PhysicalSizeX=\"0.8\""))
            .unwrap()
            .unwrap();
        assert_eq!((m.size_z, m.size_c, m.size_t), (5, 1, 2));
        assert_eq!(m.page(4, 0, 1), 4 * 2 + 1);
        // No z size: the voxel size is unknown, not guessed.
        assert_eq!(m.voxel_um, None);
    }

    #[test]
    fn not_ome_and_bad_ome() {
        assert_eq!(OmeMeta::parse("ImageJ=1.53t\nimages=3\n"), Ok(None));
        assert_eq!(OmeMeta::parse("{\"shape\": [3, 4, 5]}"), Ok(None));
        assert!(OmeMeta::parse("<?xml version=\"1.0\"?><OME><Image>").unwrap_err().contains("not valid XML"));
        let two = xml("SizeZ=\"3\"").replace("</OME>", "<Image ID=\"Image:1\"><Pixels SizeZ=\"3\"/></Image></OME>");
        assert!(OmeMeta::parse(&two).unwrap_err().contains("2 images"));
        assert!(OmeMeta::parse(&xml("DimensionOrder=\"XYZZT\"")).unwrap_err().contains("DimensionOrder"));
        assert!(OmeMeta::parse(&xml("SizeZ=\"0\"")).unwrap_err().contains("SizeZ"));
    }
}
