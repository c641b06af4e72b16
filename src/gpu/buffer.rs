//! GPU tensors: storage buffers with a 5-D shape and an element type (f32,
//! or f16 where the adapter has `shader-f16`), upload, download, fill, and
//! windows for binding part of a buffer larger than one storage binding.

use std::sync::Arc;

use wgpu::util::DeviceExt;

use super::context::GpuContext;
use crate::error::{Error, Result};
use crate::tensor::{CpuTensor, Shape5};

/// The element type of a GPU tensor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub enum DType {
    /// 32-bit float: every op's kernels.
    #[default]
    F32,
    /// 16-bit float (IEEE binary16), for kernels that need `shader-f16`.
    F16,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A tensor in one GPU storage buffer (N, C, D, H, W, W fastest) of
/// elements of type `dtype`.
#[derive(Clone, Debug)]
pub struct GpuTensor {
    pub buf: Arc<wgpu::Buffer>,
    pub shape: Shape5,
    pub dtype: DType,
}

impl GpuTensor {
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }
    /// Bytes of its elements (the buffer may be up to 3 bytes longer).
    pub fn bytes(&self) -> u64 {
        (self.numel() * self.dtype.size()) as u64
    }
    /// Whole tensor as one binding window (valid only if it fits one binding;
    /// see [`GpuTensor::window`] and [`GpuTensor::window_nc`] for parts).
    pub fn full_window(&self, ctx: &GpuContext) -> Result<Window> {
        self.window(ctx, 0, self.numel())
    }

    /// The window over elements `[start, start + count)` (flat index) for
    /// an f32 kernel: an error for a tensor of another element type, so an
    /// f32 kernel never reads f16 bits as f32 (see [`GpuTensor::window_as`]).
    pub fn window(&self, ctx: &GpuContext, start: usize, count: usize) -> Result<Window> {
        self.window_as(ctx, DType::F32, start, count)
    }

    /// The window over elements `[start, start + count)` for a kernel that
    /// reads elements of type `dtype` (which must be this tensor's).
    pub fn window_as(&self, ctx: &GpuContext, dtype: DType, start: usize, count: usize) -> Result<Window> {
        if self.dtype != dtype {
            return Err(Error::shape(
                "bind",
                format!("a {} tensor {} given to a kernel that reads {dtype}", self.dtype, self.shape),
            ));
        }
        ctx.window_of(&self.buf, dtype.size(), start, count)
    }

    /// The window over samples `n` and channels `c`: from channel `c.start`
    /// of sample `n.start` to the end of channel `c.end - 1` of sample
    /// `n.end - 1`, so `c` must be all channels when `n` holds more than one
    /// sample (the pieces [`split_units`] plans: whole samples, or channel
    /// groups of one sample).
    pub fn window_nc(
        &self,
        ctx: &GpuContext,
        n: &std::ops::Range<usize>,
        c: &std::ops::Range<usize>,
    ) -> Result<Window> {
        self.window_nc_as(ctx, DType::F32, n, c)
    }

    /// [`GpuTensor::window_nc`] for a kernel that reads elements of `dtype`.
    pub fn window_nc_as(
        &self,
        ctx: &GpuContext,
        dtype: DType,
        n: &std::ops::Range<usize>,
        c: &std::ops::Range<usize>,
    ) -> Result<Window> {
        let s = self.shape;
        debug_assert!(n.len() == 1 || c.len() == s.c, "several samples need all channels");
        let count = (n.len().max(1) - 1) * s.c * s.spatial() + c.len() * s.spatial();
        self.window_as(ctx, dtype, s.idx(n.start, c.start, 0, 0, 0), count)
    }
}

/// A range of a buffer that can be bound as one storage binding: the binding
/// starts at an aligned byte offset, and `base` is the element index, inside
/// the binding, of the first element wanted. Shaders add `base` to indices.
#[derive(Clone, Debug)]
pub struct Window {
    pub buf: Arc<wgpu::Buffer>,
    pub offset: u64,
    pub size: u64,
    pub base: u32,
}

impl Window {
    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buf,
            offset: self.offset,
            size: std::num::NonZeroU64::new(self.size),
        })
    }
}

impl GpuContext {
    /// A storage buffer of `bytes` (at least 4) filled with zeros, reporting
    /// out-of-memory as an error that names `what`. It may be a free buffer
    /// of the same size from the pool ([`super::pool`]), cleared on the GPU
    /// after the work already recorded.
    pub fn create_storage(&self, bytes: u64, what: &str) -> Result<Arc<wgpu::Buffer>> {
        self.storage(bytes, what, true)
    }

    /// A storage buffer of `bytes` whose contents the caller overwrites
    /// before anything reads them (a kernel's whole output, an upload): a
    /// reused buffer keeps its old contents, a new one is zeros.
    pub fn create_storage_uncleared(&self, bytes: u64, what: &str) -> Result<Arc<wgpu::Buffer>> {
        self.storage(bytes, what, false)
    }

    fn storage(&self, bytes: u64, what: &str, zeroed: bool) -> Result<Arc<wgpu::Buffer>> {
        let size = bytes.max(4).div_ceil(4) * 4;
        if size > self.limits.max_buffer_size {
            return Err(Error::OutOfMemory {
                op: what.to_string(),
                bytes: size,
                what: format!("larger than the adapter's max buffer size of {} bytes", self.limits.max_buffer_size),
            });
        }
        if self.reuse_buffers {
            let reused = self.pool.lock().unwrap().take(size);
            if let Some((buf, in_use)) = reused {
                if zeroed {
                    self.record("clear reused buffer", |enc| enc.clear_buffer(&buf, 0, None))?;
                }
                self.note_in_use(in_use);
                return Ok(buf);
            }
        }
        self.pool.lock().unwrap().make_room(size, self.reuse_buffers);
        let buf = match self.new_storage(size, what) {
            Err(Error::OutOfMemory { .. }) if self.buffer_stats().free_bytes > 0 => {
                self.release_free_buffers();
                self.new_storage(size, what)?
            }
            r => r?,
        };
        let in_use = self.pool.lock().unwrap().insert(buf.clone());
        self.note_in_use(in_use);
        Ok(buf)
    }

    /// A new storage buffer from the driver (wgpu zero-fills it before first use).
    fn new_storage(&self, size: u64, what: &str) -> Result<Arc<wgpu::Buffer>> {
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::OutOfMemory { op: what.to_string(), bytes: size, what: e.to_string() });
        }
        Ok(Arc::new(buf))
    }

    /// A new tensor for a kernel to overwrite completely. Its contents are
    /// unspecified (a reused buffer's old values): NaN when
    /// [`GpuContext::set_poison_new_tensors`] is on (as in the tests), so an
    /// element a kernel never writes shows up.
    pub fn empty(&self, shape: Shape5, what: &str) -> Result<GpuTensor> {
        self.empty_as(shape, DType::F32, what)
    }

    /// [`GpuContext::empty`] with elements of type `dtype` (poisoned with
    /// that type's NaN).
    pub fn empty_as(&self, shape: Shape5, dtype: DType, what: &str) -> Result<GpuTensor> {
        let t = self.tensor(shape, dtype, what, false)?;
        if self.poison_new_tensors() {
            match dtype {
                DType::F32 => self.fill(&t.buf, f32::NAN)?,
                DType::F16 => self.fill_pattern(&t.buf, [0x00, 0x7E, 0x00, 0x7E])?,
            }
        }
        Ok(t)
    }

    /// A new tensor filled with `value` (NaN to poison outputs in tests).
    pub fn filled(&self, shape: Shape5, value: f32, what: &str) -> Result<GpuTensor> {
        let t = self.tensor(shape, DType::F32, what, false)?;
        self.fill(&t.buf, value)?;
        Ok(t)
    }

    /// A new tensor of zeros (for kernels that accumulate).
    pub fn zeros(&self, shape: Shape5, what: &str) -> Result<GpuTensor> {
        self.zeros_as(shape, DType::F32, what)
    }

    /// A new tensor of zeros with elements of type `dtype`.
    pub fn zeros_as(&self, shape: Shape5, dtype: DType, what: &str) -> Result<GpuTensor> {
        self.tensor(shape, dtype, what, true)
    }

    fn tensor(&self, shape: Shape5, dtype: DType, what: &str, zeroed: bool) -> Result<GpuTensor> {
        let bytes = (shape.numel() * dtype.size()) as u64;
        let what = format!("{what} {shape} {dtype}");
        let buf =
            if zeroed { self.create_storage(bytes, &what)? } else { self.create_storage_uncleared(bytes, &what)? };
        Ok(GpuTensor { buf, shape, dtype })
    }

    /// Uploads a host tensor.
    pub fn upload(&self, t: &CpuTensor) -> Result<GpuTensor> {
        let g = self.tensor(t.shape, DType::F32, "upload", false)?;
        self.write_f32(&g.buf, 0, &t.data)?;
        Ok(g)
    }

    /// A new tensor holding a copy of `t`, recorded after pending work
    /// (no wait): for callers that must not change a tensor an op updates in
    /// place.
    pub fn copy(&self, t: &GpuTensor) -> Result<GpuTensor> {
        let out = self.tensor(t.shape, t.dtype, "copy", false)?;
        let size = t.bytes().div_ceil(4) * 4;
        if size > 0 {
            self.record("copy", |enc| enc.copy_buffer_to_buffer(&t.buf, 0, &out.buf, 0, size))?;
        }
        Ok(out)
    }

    /// Uploads raw values with a shape.
    pub fn upload_slice(&self, shape: Shape5, data: &[f32]) -> Result<GpuTensor> {
        if data.len() != shape.numel() {
            return Err(Error::shape("upload", format!("{} values for shape {shape}", data.len())));
        }
        let g = self.tensor(shape, DType::F32, "upload", false)?;
        self.write_f32(&g.buf, 0, data)?;
        Ok(g)
    }

    /// Writes f32 values at element offset `at` (ordered after pending work).
    pub fn write_f32(&self, buf: &wgpu::Buffer, at: usize, data: &[f32]) -> Result<()> {
        self.write_bytes(buf, (at * 4) as u64, bytemuck::cast_slice(data))
    }

    /// Writes raw bytes at a byte offset, ordered after all work recorded so far.
    pub fn write_bytes(&self, buf: &wgpu::Buffer, offset: u64, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        // Pending dispatches must run before this write lands.
        self.flush_then(|| self.queue.write_buffer(buf, offset, bytes))
    }

    /// Fills a whole buffer with one f32 value.
    pub fn fill(&self, buf: &wgpu::Buffer, value: f32) -> Result<()> {
        self.fill_pattern(buf, value.to_le_bytes())
    }

    /// Fills a whole buffer with a repeated 4-byte pattern.
    pub fn fill_pattern(&self, buf: &wgpu::Buffer, pattern: [u8; 4]) -> Result<()> {
        let n = (buf.size() / 4) as usize;
        let chunk = n.min(1 << 22);
        let v: Vec<u8> = pattern.iter().copied().cycle().take(chunk * 4).collect();
        let mut at = 0;
        while at < n {
            let k = chunk.min(n - at);
            self.write_bytes(buf, (at * 4) as u64, &v[..k * 4])?;
            at += k;
        }
        Ok(())
    }

    /// Uploads a host tensor as elements of type `dtype` (f16: rounded to
    /// nearest, ties to even).
    pub fn upload_as(&self, t: &CpuTensor, dtype: DType) -> Result<GpuTensor> {
        match dtype {
            DType::F32 => self.upload(t),
            DType::F16 => {
                let g = self.tensor(t.shape, dtype, "upload", false)?;
                let mut bytes: Vec<u8> =
                    t.data.iter().flat_map(|&v| half::f16::from_f32(v).to_bits().to_le_bytes()).collect();
                bytes.resize(bytes.len().div_ceil(4) * 4, 0);
                self.write_bytes(&g.buf, 0, &bytes)?;
                Ok(g)
            }
        }
    }

    /// Downloads a tensor to the host as f32 (waits for all pending work).
    pub fn download(&self, t: &GpuTensor) -> Result<CpuTensor> {
        let data = match t.dtype {
            DType::F32 => self.read_f32(&t.buf, 0, t.numel())?,
            DType::F16 => {
                let bytes = self.read_bytes(&t.buf, 0, t.bytes().div_ceil(4) * 4)?;
                bytes
                    .chunks_exact(2)
                    .take(t.numel())
                    .map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
                    .collect()
            }
        };
        Ok(CpuTensor { shape: t.shape, data })
    }

    /// Reads `count` f32 values from element offset `at`.
    pub fn read_f32(&self, buf: &wgpu::Buffer, at: usize, count: usize) -> Result<Vec<f32>> {
        let bytes = self.read_bytes(buf, (at * 4) as u64, (count * 4) as u64)?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }

    /// Reads `count` u32 values from element offset `at`.
    pub fn read_u32(&self, buf: &wgpu::Buffer, at: usize, count: usize) -> Result<Vec<u32>> {
        let bytes = self.read_bytes(buf, (at * 4) as u64, (count * 4) as u64)?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }

    /// Reads raw bytes (offset and size multiples of 4).
    pub fn read_bytes(&self, buf: &wgpu::Buffer, offset: u64, size: u64) -> Result<Vec<u8>> {
        if size == 0 {
            return Ok(Vec::new());
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("download staging"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.record("download", |enc| enc.copy_buffer_to_buffer(buf, offset, &staging, 0, size))?;
        self.flush()?;
        self.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::Wait { submission_index: None, timeout: None })
            .map_err(|e| Error::Gpu { op: "download".into(), message: e.to_string() })?;
        rx.recv()
            .map_err(|e| Error::Gpu { op: "download".into(), message: e.to_string() })?
            .map_err(|e| Error::Gpu { op: "download".into(), message: e.to_string() })?;
        let out = {
            let view = staging
                .slice(..)
                .get_mapped_range()
                .map_err(|e| Error::Gpu { op: "download".into(), message: e.to_string() })?;
            view.to_vec()
        };
        staging.unmap();
        self.check_errors(&[])?;
        Ok(out)
    }

    /// Uniform buffer holding `bytes` (padded to 16).
    pub fn uniform(&self, bytes: &[u8]) -> wgpu::Buffer {
        let mut v = bytes.to_vec();
        v.resize(v.len().div_ceil(16).max(1) * 16, 0);
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: &v,
            usage: wgpu::BufferUsages::UNIFORM,
        })
    }

    /// Most f32 elements a [`Window`] may hold so that it fits one binding
    /// whatever its alignment.
    pub fn max_window_elems(&self) -> usize {
        self.max_window_elems_of(4)
    }

    /// Most elements of `elem_bytes` bytes a [`Window`] may hold.
    pub fn max_window_elems_of(&self, elem_bytes: usize) -> usize {
        ((self.binding_limit() - self.limits.min_storage_buffer_offset_alignment as u64) / elem_bytes as u64) as usize
    }

    /// The binding that covers f32 elements `[start, start+count)` of `buf`.
    pub fn window(&self, buf: &Arc<wgpu::Buffer>, start: usize, count: usize) -> Result<Window> {
        self.window_of(buf, 4, start, count)
    }

    /// The binding that covers elements of `elem_bytes` bytes
    /// `[start, start+count)` of `buf`; `base` counts such elements.
    pub fn window_of(&self, buf: &Arc<wgpu::Buffer>, elem_bytes: usize, start: usize, count: usize) -> Result<Window> {
        let e = elem_bytes as u64;
        let align = self.limits.min_storage_buffer_offset_alignment as u64;
        let byte_start = start as u64 * e;
        let offset = byte_start / align * align;
        let base = ((byte_start - offset) / e) as u32;
        // Bindings cover whole 4-byte words.
        let end = (byte_start + count.max(1) as u64 * e).div_ceil(4) * 4;
        let end = end.min(buf.size());
        let size = end - offset;
        if size > self.binding_limit() {
            return Err(Error::Gpu {
                op: "window".into(),
                message: format!(
                    "window of {size} bytes exceeds the storage binding limit of {} bytes",
                    self.binding_limit()
                ),
            });
        }
        Ok(Window { buf: buf.clone(), offset, size, base })
    }
}

/// Splits `units` units of `unit_elems` elements each into consecutive
/// groups whose elements fit `max_elems`. Errors if one unit alone is larger.
pub fn split_units(units: usize, unit_elems: usize, max_elems: usize, op: &str) -> Result<Vec<std::ops::Range<usize>>> {
    if unit_elems > max_elems {
        return Err(Error::shape(
            op,
            format!("one unit of {unit_elems} values is larger than one storage binding ({max_elems} values); use smaller tiles"),
        ));
    }
    let per = (max_elems / unit_elems.max(1)).max(1);
    Ok((0..units).step_by(per).map(|s| s..(s + per).min(units)).collect())
}
