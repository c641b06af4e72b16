//! safetensors files of named host tensors, f32 or f16, with string
//! metadata; written to a temporary file in the same folder and renamed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::tensor::{CpuTensor, Shape5};

/// The shape a tensor is stored with: per-channel vectors (biases, BN
/// tensors, shapes (1, C, 1, 1, 1)) as 1-D `[C]`, like PyTorch; others 5-D.
pub fn file_dims(s: Shape5) -> Vec<usize> {
    if s.n == 1 && s.d == 1 && s.h == 1 && s.w == 1 {
        vec![s.c]
    } else {
        s.dims().to_vec()
    }
}

/// Writes `tensors` (name, tensor) to `path` atomically, as f16 when
/// `half` (values outside the f16 range are an error), else f32.
pub fn write(
    path: &Path,
    tensors: &[(String, &CpuTensor)],
    half: bool,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let mut blobs: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let bytes = if half {
            if let Some(v) = t.data.iter().find(|v| v.is_finite() && v.abs() > 65504.0) {
                return Err(Error::file(path, format!("tensor {name} holds {v}, outside the f16 range; save as f32")));
            }
            let h: Vec<half::f16> = t.data.iter().map(|&v| half::f16::from_f32(v)).collect();
            bytemuck::cast_slice(&h).to_vec()
        } else {
            bytemuck::cast_slice(&t.data).to_vec()
        };
        blobs.push((name.clone(), file_dims(t.shape), bytes));
    }
    let dtype = if half { Dtype::F16 } else { Dtype::F32 };
    let mut views = BTreeMap::new();
    for (name, dims, bytes) in &blobs {
        let v = safetensors::tensor::TensorView::new(dtype, dims.clone(), bytes)
            .map_err(|e| Error::file(path, format!("tensor {name}: {e}")))?;
        views.insert(name.clone(), v);
    }
    let data = safetensors::serialize(views, Some(metadata)).map_err(|e| Error::file(path, e.to_string()))?;
    write_atomic(path, &data)
}

/// Writes bytes atomically through [`crate::io::write_atomic`] (temporary
/// file beside `path`, renamed into place, readable by all).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    crate::io::write_atomic(path, |w| w.write_all(data).map_err(|e| Error::file(path, format!("cannot write: {e}"))))
}

/// A safetensors file read into f32 host data.
pub struct StFile {
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    pub metadata: HashMap<String, String>,
}

/// Reads every tensor of a safetensors file (f32, f16 or bf16) as f32.
pub fn read(path: &Path) -> Result<StFile> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    let (_, meta) =
        SafeTensors::read_metadata(&bytes).map_err(|e| Error::file(path, format!("not a safetensors file: {e}")))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::file(path, format!("not a safetensors file: {e}")))?;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        let d = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F16 => d.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::BF16 => d.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            other => {
                return Err(Error::file(path, format!("tensor {name} has dtype {other:?}; expected F32, F16 or BF16")))
            }
        };
        tensors.insert(name, (view.shape().to_vec(), data));
    }
    Ok(StFile { tensors, metadata })
}

impl StFile {
    /// The tensor `name` with the layout shape `shape`; an error naming the
    /// tensor and the file if it is missing or shaped differently.
    pub fn take(&mut self, path: &Path, name: &str, shape: Shape5) -> Result<CpuTensor> {
        let (dims, data) = self
            .tensors
            .remove(name)
            .ok_or_else(|| Error::file(path, format!("tensor '{name}' is missing (expected shape {shape})")))?;
        if dims != file_dims(shape) && dims != shape.dims() {
            return Err(Error::file(
                path,
                format!("tensor '{name}' has shape {dims:?}, the network needs {:?}", file_dims(shape)),
            ));
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::file(path, format!("tensor '{name}' holds a non-finite value at index {i}")));
        }
        Ok(CpuTensor::from_vec(shape, data))
    }
}
