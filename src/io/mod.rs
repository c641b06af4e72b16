//! File formats: TIFF stacks (read/write, voxel size; ImageJ and OME-TIFF
//! metadata), atomic writes, PNG
//! plots and the names of `infer`'s outputs.
//!
//! Volumes are z, y, x (x fastest) in `f32`; voxel sizes are x, y, z in µm.

mod atomic;
pub mod ome;
pub mod png;
pub mod tiff;

pub use self::atomic::{readable_by_all, refuse_input, same_file, write_atomic, FileGroup};
pub use self::tiff::{
    read_stack, read_stack_channel, read_volume, unit_to_um, write_f32, write_labels, write_u16, write_u32, write_u8,
    ImageJMeta,
};

use std::path::Path;

use crate::error::{Error, Result};

/// Suffixes (before `.tif` / `.csv`) of the files `infer` writes.
pub const LABELS_SUFFIX: &str = "_labels";
pub const CRITERIA_SUFFIX: &str = "_criteria";
pub const NSN_PROB_SUFFIX: &str = "_nsn_prob";
pub const NDN_PROB_SUFFIX: &str = "_ndn_prob";

/// Whether `p` is named `.tif` or `.tiff` (any case).
pub fn is_tiff(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("tif") || e.eq_ignore_ascii_case("tiff"))
}

/// The name a stack's outputs and scores go by: the file name without
/// `.tif`/`.tiff`, and without `.ome` before it (OME-TIFF's double
/// extension), so `x.ome.tif` gives `x_labels.tif` and pairs with it in
/// `eval`. Any other file: its stem; a path without a file name: `stack`.
pub fn stack_stem(p: &Path) -> std::ffi::OsString {
    let stem = p.file_stem().map(|s| s.to_os_string()).unwrap_or_else(|| "stack".into());
    if !is_tiff(p) {
        return stem;
    }
    match stem.to_str() {
        // ".ome" is ASCII, so where those four bytes end the name, the cut is a char boundary.
        Some(s) if s.len() > 4 && s.as_bytes()[s.len() - 4..].eq_ignore_ascii_case(b".ome") => s[..s.len() - 4].into(),
        _ => stem,
    }
}

/// One 3-D grey stack (one time point).
#[derive(Clone, Debug)]
pub struct Volume {
    /// z, y, x
    pub dims: [usize; 3],
    /// `dims[0] * dims[1] * dims[2]` values, x fastest.
    pub data: Vec<f32>,
    /// x, y, z in µm, from the file when it says.
    pub voxel_um: Option<[f64; 3]>,
}

impl Volume {
    /// A volume of `data` (error if the length does not match `dims`).
    pub fn new(dims: [usize; 3], data: Vec<f32>, voxel_um: Option<[f64; 3]>) -> Result<Volume> {
        if dims.iter().product::<usize>() != data.len() {
            return Err(Error::invalid(format!("volume dims {dims:?} (z,y,x) do not match {} values", data.len())));
        }
        Ok(Volume { dims, data, voxel_um })
    }
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// Linear index of (z, y, x).
    pub fn index(&self, z: usize, y: usize, x: usize) -> usize {
        (z * self.dims[1] + y) * self.dims[2] + x
    }
    /// Smallest and largest value ((0, 0) when empty).
    pub fn min_max(&self) -> (f32, f32) {
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for &v in &self.data {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if lo > hi {
            (0.0, 0.0)
        } else {
            (lo, hi)
        }
    }
}

/// Parses "X,Y,Z" in µm (as for `--voxel-size 0.8,0.8,1.75`; `x` or spaces
/// also separate), every value finite and positive.
pub fn parse_voxel_size(s: &str) -> Result<[f64; 3]> {
    let bad =
        |why: &str| Error::invalid(format!("invalid voxel size '{s}': {why}; expected X,Y,Z in µm, e.g. 0.8,0.8,1.75"));
    let parts: Vec<&str> = s.split([',', 'x', 'X', ' ', ';']).filter(|p| !p.trim().is_empty()).collect();
    if parts.len() != 3 {
        return Err(bad(&format!("found {} values", parts.len())));
    }
    let mut v = [0.0; 3];
    for (o, p) in v.iter_mut().zip(&parts) {
        *o = p.trim().parse::<f64>().map_err(|_| bad(&format!("'{}' is not a number", p.trim())))?;
        if !(o.is_finite() && *o > 0.0) {
            return Err(bad("every value must be positive"));
        }
    }
    Ok(v)
}
