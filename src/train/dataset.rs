//! The QCANet dataset layout on disk:
//! `DIR/images_raw/NAME` (fluorescence stack), `DIR/images_nsn/NAME`
//! (segmentation ground truth), `DIR/images_ndn/NAME` (detection ground
//! truth), paired by file name; `DIR/split_list/train.txt` and
//! `validation.txt` list the names (one a line).

use std::path::{Path, PathBuf};

use super::centres::centre_map;
use super::patch::{dilate, dilate_within, Sample, Vol};
use super::small_nuclei::{small_nucleus_weights, SmallNuclei};
use super::touching::separated_nuclei;
use crate::error::{Error, Result};
use crate::io;
use crate::preprocess::{self, Interp, NetGrid, Normalization};

/// Which ground truth a network learns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// `images_nsn/`: nucleus segmentation.
    Nsn,
    /// `images_ndn/`: nucleus centre markers.
    Ndn,
}

impl Target {
    pub fn folder(&self) -> &'static str {
        match self {
            Target::Nsn => "images_nsn",
            Target::Ndn => "images_ndn",
        }
    }
}

/// How volumes are prepared (the same at inference: stored in the weights).
#[derive(Clone, Debug)]
pub struct DataOptions {
    pub target: Target,
    /// x, y, z in µm when the file does not say.
    pub voxel_um: [f64; 3],
    /// The grid the network learns on: every volume is resampled to it
    /// (linear for images, nearest for labels).
    pub grid: NetGrid,
    pub normalization: Normalization,
    /// Dilate the ground truth by a ball of this radius (voxels; NDN markers), never joining two objects ([`super::patch::dilate`]).
    pub dilate: usize,
    /// Dilate within the nuclei: no marker grows into another nucleus
    /// ([`super::patch::dilate_within`]); the instance labels are read from
    /// `DIR/labels_instance/NAME`.
    pub dilate_within_nuclei: bool,
    /// The target is each nucleus's centre map ([`super::centres`]), made
    /// from `DIR/labels_instance/NAME` on the network's grid, instead of the
    /// binary `images_nsn/` or `images_ndn/`; no dilation.
    pub centre_map: bool,
    /// The target is the nuclei of `DIR/labels_instance/NAME` with touching
    /// nuclei separated ([`super::touching::separated_nuclei`], on the
    /// network's grid) instead of the binary `images_nsn/`.
    pub separate_touching: bool,
    /// Weigh the markers of small nuclei (of `DIR/labels_instance/NAME`) in
    /// the loss ([`super::small_nuclei`]; [`Sample::weight`]).
    pub small_nuclei: Option<SmallNuclei>,
}

impl DataOptions {
    /// Whether the target is made from the instance labels (not read from
    /// `images_nsn/` or `images_ndn/`).
    pub fn target_from_labels(&self) -> bool {
        self.centre_map || self.separate_touching
    }

    /// What the instance labels are read for (in messages).
    fn labels_needed_by(&self) -> &'static str {
        if self.centre_map {
            "the centre map"
        } else if self.separate_touching {
            "separating touching nuclei"
        } else if self.small_nuclei.is_some() {
            "weighing small nuclei"
        } else {
            "dilating the markers within their nuclei"
        }
    }
}

/// The names listed in `DIR/split_list/{split}.txt`.
pub fn split_names(dir: &Path, split: &str) -> Result<Vec<String>> {
    let list = dir.join("split_list").join(format!("{split}.txt"));
    if !list.exists() {
        return Err(Error::file(
            &list,
            format!("cannot read the {split} list; a dataset needs split_list/{split}.txt"),
        ));
    }
    list_names(&list)
}

/// The names in a list file: one a line, blank lines and `#` comments skipped.
pub fn list_names(list: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(list).map_err(|e| Error::file(list, format!("cannot read the list: {e}")))?;
    let names: Vec<String> =
        text.lines().map(|l| l.trim()).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect();
    if names.is_empty() {
        return Err(Error::file(list, "lists no images"));
    }
    Ok(names)
}

/// The names of a split: from `list` when given, else `DIR/split_list/{split}.txt`.
pub fn names_of(dir: &Path, split: &str, list: Option<&Path>) -> Result<Vec<String>> {
    match list {
        Some(l) => list_names(l),
        None => split_names(dir, split),
    }
}

/// Loads the images of one split with their ground truth, prepared per `o`.
pub fn load_split(dir: &Path, split: &str, o: &DataOptions) -> Result<Vec<Sample>> {
    load_names(dir, &split_names(dir, split)?, o)
}

/// Loads the named images with their ground truth, prepared per `o`.
pub fn load_names(dir: &Path, names: &[String], o: &DataOptions) -> Result<Vec<Sample>> {
    let within = o.dilate > 0 && o.dilate_within_nuclei;
    names
        .iter()
        .map(|name| {
            let labels = dir.join("labels_instance").join(name);
            let gt = if o.target_from_labels() { labels.clone() } else { dir.join(o.target.folder()).join(name) };
            let nuclei = (within || o.target_from_labels() || o.small_nuclei.is_some()).then_some(labels);
            load_pair(&dir.join("images_raw").join(name), &gt, nuclei.as_deref(), o)
        })
        .collect()
}

/// Reads an image and its ground truth and prepares them; `nuclei_path`
/// names the instance labels the dilation stays within, when it should, the
/// small nuclei are found in, or the target is made of (the centre map, the
/// separated nuclei: then `gt_path` is not read).
pub fn load_pair(raw_path: &Path, gt_path: &Path, nuclei_path: Option<&Path>, o: &DataOptions) -> Result<Sample> {
    if !raw_path.exists() {
        return Err(Error::file(raw_path, "image listed in the split list does not exist"));
    }
    if !o.target_from_labels() && !gt_path.exists() {
        return Err(Error::file(gt_path, format!("ground truth missing for image {}", raw_path.display())));
    }
    let raw = io::read_volume(raw_path)?;
    if let Some(i) = raw.data.iter().position(|v| !v.is_finite()) {
        let [_, h, w] = raw.dims;
        return Err(Error::file(
            raw_path,
            format!("holds a non-finite value (NaN or infinity) at z {}, y {}, x {}", i / (h * w), i / w % h, i % w),
        ));
    }
    let target = if o.target_from_labels() {
        Vec::new()
    } else {
        let gt = io::read_volume(gt_path)?;
        if gt.dims != raw.dims {
            return Err(Error::file(
                gt_path,
                format!(
                    "ground truth is {:?} (z, y, x) but the image {} is {:?}",
                    gt.dims,
                    raw_path.display(),
                    raw.dims
                ),
            ));
        }
        binarize(gt_path, &gt.data)?
    };
    let nuclei = match nuclei_path {
        None => None,
        Some(p) => Some(read_instance_labels(p, o.labels_needed_by(), raw_path, raw.dims)?.labels),
    };
    let voxel = raw.voxel_um.unwrap_or(o.voxel_um);
    prepare(raw_path, raw.dims, raw.data, target, nuclei, voxel, o)
}

/// Ground truth as 0/1: it must hold 0 and at most one other value.
pub fn binarize(path: &Path, data: &[f32]) -> Result<Vec<f32>> {
    let mut fg: Option<f32> = None;
    for &v in data {
        if v == 0.0 {
            continue;
        }
        match fg {
            None => fg = Some(v),
            Some(f) if f == v => {}
            Some(f) => {
                return Err(Error::file(
                    path,
                    format!(
                        "ground truth is not binary: it holds {f} and {v} besides 0 (expected 0 for background and one value, e.g. 255, for foreground)"
                    ),
                ))
            }
        }
    }
    if fg.is_none() {
        log::warn!("{}: ground truth has no foreground voxels", path.display());
    }
    Ok(data.iter().map(|&v| if v != 0.0 { 1.0 } else { 0.0 }).collect())
}

/// Resampling to the network's grid, normalisation and dilation (within
/// the `nuclei`, instance labels on the image's grid, with
/// `o.dilate_within_nuclei`), the small-nucleus weights of `o.small_nuclei`
/// (found in the `nuclei`), or with
/// `o.centre_map` the centre map of the `nuclei` on the network's grid, with
/// `o.separate_touching` its nuclei with touching ones separated
/// ([`super::touching::separated_nuclei`]; `target` unused in both).
pub fn prepare(
    path: &Path,
    dims: [usize; 3],
    image: Vec<f32>,
    mut target: Vec<f32>,
    nuclei: Option<Vec<u32>>,
    voxel_um: [f64; 3],
    o: &DataOptions,
) -> Result<Sample> {
    let d0 = dims[0];
    let grid_um = o.grid.voxel_um(dims, voxel_um);
    let image = prepare_image(dims, image, voxel_um, o.grid, o.normalization).map_err(|e| match e {
        Error::Invalid(m) => Error::file(path, m),
        e => e,
    })?;
    if !o.target_from_labels() {
        target = preprocess::resample(target, dims, image.dims, Interp::Nearest);
    }
    // Labels as f32 are exact below 2^24; nearest resampling only copies them.
    let nuclei = nuclei.map(|n| {
        let f = preprocess::resample(n.iter().map(|&l| l as f32).collect(), dims, image.dims, Interp::Nearest);
        f.iter().map(|&l| l as u32).collect::<Vec<u32>>()
    });
    let nd = image.dims;
    let labels = || {
        let why = o.labels_needed_by();
        nuclei.as_deref().ok_or_else(|| Error::file(path, format!("{why} needs instance labels (labels_instance/)")))
    };
    let mut t = if o.centre_map {
        let spacing = grid_um.map(|v| v as f32);
        Vol::new(nd, centre_map(labels()?, nd, spacing)?)?
    } else if o.separate_touching {
        Vol::new(nd, separated_nuclei(labels()?, nd))?
    } else {
        Vol::new(nd, target)?
    };
    if o.dilate > 0 && !o.target_from_labels() {
        t = match (&nuclei, o.dilate_within_nuclei) {
            (Some(n), true) => dilate_within(&t, o.dilate, n)?,
            _ => dilate(&t, o.dilate),
        };
    }
    let weight = match &o.small_nuclei {
        Some(s) => {
            let voxel_um3 = grid_um.iter().product::<f64>();
            Some(Vol::new(nd, small_nucleus_weights(&t.data, labels()?, nd, voxel_um3, s))?)
        }
        None => None,
    };
    let z_step = nd[0] as f32 / d0 as f32;
    Ok(Sample { name: display_name(path), image, target: t, weight, z_step })
}

/// An image as a network sees it ([`preprocess::for_network`]).
pub fn prepare_image(
    dims: [usize; 3],
    image: Vec<f32>,
    voxel_um: [f64; 3],
    grid: NetGrid,
    normalization: Normalization,
) -> Result<Vol> {
    let (image, dims) = preprocess::for_network(image, dims, voxel_um, grid, normalization)?;
    Vol::new(dims, image)
}

/// Instance labels (`labels_instance/NAME`) for the image `image` of
/// shape `dims` (z, y, x), read as `eval` reads them
/// ([`crate::metrics::read_labels`]); a missing file is named as such, with
/// what `needed_by` them, and labels of another shape than the image's are
/// refused, naming both files.
pub fn read_instance_labels(
    path: &Path,
    needed_by: &str,
    image: &Path,
    dims: [usize; 3],
) -> Result<crate::metrics::LabelImage> {
    if !path.exists() {
        return Err(Error::file(path, format!("instance ground truth missing ({needed_by} needs labels_instance/)")));
    }
    let l = crate::metrics::read_labels(path, crate::postprocess::Connectivity::TwentySix)?;
    if l.dims != dims {
        return Err(Error::file(
            path,
            format!("instance labels are {:?} (z, y, x) but the image {} is {:?}", l.dims, image.display(), dims),
        ));
    }
    Ok(l)
}

fn display_name(p: &Path) -> String {
    p.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string())
}

/// `DIR/images_raw/NAME` for each listed name (for messages).
pub fn raw_paths(dir: &Path, split: &str) -> Result<Vec<PathBuf>> {
    Ok(split_names(dir, split)?.iter().map(|n| dir.join("images_raw").join(n)).collect())
}
