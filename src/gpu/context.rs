//! Adapter selection, device creation with the adapter's own limits, error
//! capture and the pending command encoder that batches dispatches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// Environment variable that selects an adapter by index or name substring.
pub const ENV_ADAPTER: &str = "QCANET_ADAPTER";
/// Environment variable that caps the storage-binding size in bytes (tests use
/// it to force the split path for tensors larger than one binding).
pub const ENV_MAX_BINDING: &str = "QCANET_MAX_BINDING";
/// Environment variable: any non-empty value sets [`ContextOptions::checked_kernels`].
pub const ENV_CHECKED_KERNELS: &str = "QCANET_CHECKED_KERNELS";
/// Environment variable: any non-empty value sets [`ContextOptions::cooperative_matrix`].
pub const ENV_COOPERATIVE_MATRIX: &str = "QCANET_COOPERATIVE_MATRIX";

/// Environment variable: any non-empty value sets [`ContextOptions::no_buffer_reuse`].
pub const ENV_NO_BUFFER_REUSE: &str = "QCANET_NO_BUFFER_REUSE";

/// How to open the GPU.
#[derive(Clone, Debug, Default)]
pub struct ContextOptions {
    /// Adapter index (as listed by `qcanet-gpu devices`) or a case-insensitive
    /// substring of its name. `None`: high-performance adapter first.
    pub adapter: Option<String>,
    /// Cap on the bytes one storage binding may cover, below the adapter's own
    /// `max_storage_buffer_binding_size`. `None`: the adapter's limit.
    pub max_binding_bytes: Option<u64>,
    /// Build every kernel with naga's runtime checks, also the ones that
    /// bound-check themselves and are otherwise built without them
    /// ([`GpuContext::pipeline_trusted`]): slower, for chasing a kernel bug
    /// or measuring what the checks cost.
    pub checked_kernels: bool,
    /// Kernel variants forced per op, as (op, variant) names (`--gpu-kernel
    /// conv3d=f32-4x8`). The runtime stores them and knows no op: each op
    /// module resolves its own choice (`crate::ops::variants`), and the
    /// command line checks the names against the registry when it opens the
    /// GPU. Ops not named here get the best variant the adapter supports.
    pub kernels: Vec<(String, String)>,
    /// Open the device with wgpu's experimental cooperative matrices where
    /// the adapter offers them (`QCANET_COOPERATIVE_MATRIX=1`; the command
    /// line also sets it when `--gpu-kernel` forces a variant that needs
    /// them). Off by default: on Vulkan the feature changes how wgpu
    /// compiles every shader (the Vulkan memory model), and no kernel that
    /// uses it has run yet.
    pub cooperative_matrix: bool,
    /// Give every storage buffer back to the driver as soon as its tensors
    /// are gone instead of keeping it for the next tensor of the same size
    /// ([`super::pool`]; `QCANET_NO_BUFFER_REUSE=1`): for measuring what the
    /// reuse saves, or ruling it out.
    pub no_buffer_reuse: bool,
}

impl ContextOptions {
    /// Options from `QCANET_ADAPTER`, `QCANET_MAX_BINDING`,
    /// `QCANET_CHECKED_KERNELS`, `QCANET_COOPERATIVE_MATRIX` and
    /// `QCANET_NO_BUFFER_REUSE`, read here once (the library reads no other
    /// environment when it runs kernels).
    pub fn from_env() -> Self {
        ContextOptions {
            adapter: std::env::var(ENV_ADAPTER).ok().filter(|s| !s.is_empty()),
            max_binding_bytes: std::env::var(ENV_MAX_BINDING).ok().and_then(|s| s.trim().parse().ok()),
            checked_kernels: std::env::var_os(ENV_CHECKED_KERNELS).is_some_and(|v| !v.is_empty()),
            kernels: Vec::new(),
            cooperative_matrix: std::env::var_os(ENV_COOPERATIVE_MATRIX).is_some_and(|v| !v.is_empty()),
            no_buffer_reuse: std::env::var_os(ENV_NO_BUFFER_REUSE).is_some_and(|v| !v.is_empty()),
        }
    }
}

/// Text shown when no adapter can be found.
pub fn no_adapter_help() -> String {
    "qcanet-gpu needs a Vulkan, Metal or DX12 driver.\n\
     On Debian/Ubuntu without a GPU, install Mesa's software Vulkan driver:\n\
     \x20   sudo apt-get update && sudo apt-get install -y mesa-vulkan-drivers libvulkan1\n\
     With an NVIDIA/AMD/Intel GPU, install its vendor driver with Vulkan support.\n\
     `qcanet-gpu devices` lists the adapters wgpu can see."
        .to_string()
}

/// One adapter as `qcanet-gpu devices` reports it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AdapterSummary {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    pub shader_f16: bool,
    pub subgroups: bool,
    pub timestamp_query: bool,
    /// The cooperative-matrix shapes the adapter offers, "MxNxK A->C"
    /// (e.g. "16x16x16 F16->F32"); empty without wgpu's experimental feature.
    pub cooperative_matrix: Vec<String>,
}

impl AdapterSummary {
    fn of(index: usize, a: &wgpu::Adapter) -> Self {
        let info = a.get_info();
        let l = a.limits();
        let f = a.features();
        AdapterSummary {
            index,
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
            max_buffer_size: l.max_buffer_size,
            max_compute_workgroup_storage_size: l.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
            subgroup_min_size: info.subgroup_min_size,
            subgroup_max_size: info.subgroup_max_size,
            shader_f16: f.contains(wgpu::Features::SHADER_F16),
            subgroups: f.contains(wgpu::Features::SUBGROUP),
            timestamp_query: f.contains(wgpu::Features::TIMESTAMP_QUERY),
            cooperative_matrix: if f.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
                a.cooperative_matrix_properties()
                    .iter()
                    .map(|p| format!("{}x{}x{} {:?}->{:?}", p.m_size, p.n_size, p.k_size, p.ab_type, p.cr_type))
                    .collect()
            } else {
                Vec::new()
            },
        }
    }
}

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    // GL has no usable compute path for us; unless WGPU_BACKEND says otherwise,
    // use the primary backends (Vulkan, Metal, DX12).
    if std::env::var("WGPU_BACKEND").is_err() {
        desc.backends = wgpu::Backends::PRIMARY;
    }
    wgpu::Instance::new(desc)
}

/// Every adapter wgpu can see, in a stable order.
pub fn list_adapters() -> Vec<AdapterSummary> {
    let inst = instance();
    let adapters = pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()));
    adapters.iter().enumerate().map(|(i, a)| AdapterSummary::of(i, a)).collect()
}

/// Counts of [`GpuContext::traffic`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Traffic {
    pub submits: u64,
    pub reads: u64,
}

impl Traffic {
    /// The counts since `before`.
    pub fn since(&self, before: &Traffic) -> Traffic {
        Traffic { submits: self.submits - before.submits, reads: self.reads - before.reads }
    }
}

/// A pending batch of GPU work: one command encoder, the labels of the ops
/// recorded into it (for error messages), and the uniform parameters of its
/// dispatches, packed for one write into [`GpuContext::uniform_arena`] just
/// before the batch is submitted.
pub(crate) struct Pending {
    pub(crate) encoder: Option<wgpu::CommandEncoder>,
    pub(crate) labels: Vec<String>,
    pub(crate) uniforms: Vec<u8>,
}

impl Pending {
    /// The batch's encoder, made on first use.
    pub(crate) fn encoder(&mut self, device: &wgpu::Device) -> &mut wgpu::CommandEncoder {
        self.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("qcanet batch") })
        })
    }

    /// Notes a recorded command; true when the batch is full and must be
    /// submitted ([`MAX_PENDING`]).
    pub(crate) fn recorded(&mut self, label: &str) -> bool {
        self.labels.push(label.to_string());
        self.labels.len() >= MAX_PENDING
    }
}

/// The GPU: device, queue, limits, pipeline cache and batched command encoder.
pub struct GpuContext {
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    binding_limit: u64,
    pub(crate) pipelines: Mutex<HashMap<String, Arc<super::pipeline::Pipeline>>>,
    pub(crate) modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pub(crate) pending: Mutex<Pending>,
    /// One uniform buffer for the parameters of every dispatch of a batch
    /// (each at its own aligned offset), written once per submission
    /// instead of a new buffer per dispatch. A queue write lands before the
    /// submission it precedes and after every earlier one, so the one buffer
    /// serves batch after batch.
    pub(crate) uniform_arena: wgpu::Buffer,
    errors: Arc<Mutex<Vec<String>>>,
    poison: std::sync::atomic::AtomicBool,
    /// [`ContextOptions::checked_kernels`].
    pub(super) checked_kernels: bool,
    /// [`ContextOptions::kernels`], op name to variant name.
    kernel_choices: HashMap<String, String>,
    /// Every storage buffer, in use or free for reuse ([`super::pool`]).
    pub(crate) pool: Mutex<super::pool::BufferPool>,
    /// Not [`ContextOptions::no_buffer_reuse`].
    pub(crate) reuse_buffers: bool,
    peak: std::sync::atomic::AtomicU64,
    /// Command buffers submitted and host reads waited for, since the
    /// context was made ([`GpuContext::traffic`]).
    submits: std::sync::atomic::AtomicU64,
    pub(crate) reads: std::sync::atomic::AtomicU64,
    /// The running kernel-time profile, if any ([`super::profile`]).
    pub(crate) profile: super::profile::ProfileSlot,
}

/// Dispatches recorded before the pending encoder is submitted on its own.
const MAX_PENDING: usize = 256;
/// Bytes of [`GpuContext::uniform_arena`]: MAX_PENDING dispatches of up to
/// 256 bytes of parameters each (the most a batch holds at WebGPU's largest
/// offset alignment); a dispatch whose parameters do not fit gets a buffer
/// of its own.
pub(crate) const UNIFORM_ARENA_BYTES: u64 = MAX_PENDING as u64 * 256;

impl GpuContext {
    /// Opens the adapter chosen by `opts` (see [`ContextOptions`]).
    pub fn new(opts: &ContextOptions) -> Result<Self> {
        let inst = instance();
        let adapters = pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()));
        let adapter = match &opts.adapter {
            Some(sel) => {
                let found = if let Ok(i) = sel.parse::<usize>() {
                    adapters.into_iter().nth(i)
                } else {
                    let s = sel.to_lowercase();
                    adapters.into_iter().find(|a| a.get_info().name.to_lowercase().contains(&s))
                };
                found.ok_or_else(|| Error::NoAdapter {
                    reason: format!("no adapter matches '{sel}'"),
                    help: "run `qcanet-gpu devices` to list the adapters and pick one by index or name".into(),
                })?
            }
            None => {
                if adapters.is_empty() {
                    return Err(Error::NoAdapter {
                        reason: "wgpu found no Vulkan, Metal or DX12 adapter".into(),
                        help: no_adapter_help(),
                    });
                }
                pollster::block_on(inst.request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::HighPerformance,
                    force_fallback_adapter: false,
                    compatible_surface: None,
                    apply_limit_buckets: false,
                }))
                .or_else(|_| adapters.into_iter().next().ok_or(()))
                .map_err(|_| Error::NoAdapter {
                    reason: "no adapter could be requested".into(),
                    help: no_adapter_help(),
                })?
            }
        };
        Self::from_adapter(adapter, opts)
    }

    /// Opens a device on `adapter` with its own limits and the optional
    /// features we can use.
    pub fn from_adapter(adapter: wgpu::Adapter, opts: &ContextOptions) -> Result<Self> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let mut wanted = wgpu::Features::SHADER_F16
            | wgpu::Features::SUBGROUP
            | wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        if opts.cooperative_matrix {
            wanted |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        }
        let features = adapter.features() & wanted;
        let experimental_features = if features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            // SAFETY: wgpu's experimental features may have soundness holes;
            // asked for only with `cooperative_matrix`, an explicit opt-in.
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("qcanet-gpu"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::NoAdapter {
            reason: format!("could not open {}: {e}", info.name),
            help: no_adapter_help(),
        })?;

        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        {
            let errors = errors.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                errors.lock().unwrap().push(e.to_string());
            }));
        }
        let mut binding_limit = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        if let Some(cap) = opts.max_binding_bytes {
            binding_limit = binding_limit.min(cap.max(4 * limits.min_storage_buffer_offset_alignment as u64));
        }
        binding_limit &= !3;
        log::info!(
            "GPU: {} ({:?}, {:?}), driver {} {}",
            info.name,
            info.backend,
            info.device_type,
            info.driver,
            info.driver_info
        );
        let uniform_arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("uniform arena"),
            size: UNIFORM_ARENA_BYTES,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(GpuContext {
            adapter,
            device,
            queue,
            info,
            limits,
            features,
            binding_limit,
            pipelines: Mutex::default(),
            modules: Mutex::default(),
            pending: Mutex::new(Pending { encoder: None, labels: Vec::new(), uniforms: Vec::new() }),
            uniform_arena,
            errors,
            poison: std::sync::atomic::AtomicBool::new(false),
            checked_kernels: opts.checked_kernels,
            kernel_choices: opts.kernels.iter().cloned().collect(),
            pool: Mutex::default(),
            reuse_buffers: !opts.no_buffer_reuse,
            peak: std::sync::atomic::AtomicU64::new(0),
            submits: Default::default(),
            reads: Default::default(),
            profile: Mutex::default(),
        })
    }

    /// The most bytes one storage binding may cover (adapter limit, or the cap
    /// from [`ContextOptions::max_binding_bytes`]).
    pub fn binding_limit(&self) -> u64 {
        self.binding_limit
    }

    /// Whether a one-dimensional workgroup of `lanes` invocations fits the
    /// adapter's limits (at least 1).
    pub fn workgroup_fits(&self, lanes: u32) -> bool {
        lanes >= 1
            && lanes <= self.limits.max_compute_invocations_per_workgroup
            && lanes <= self.limits.max_compute_workgroup_size_x
    }

    /// When on, every tensor made by [`GpuContext::empty`] is filled with NaN,
    /// so a kernel that leaves an output element unwritten fails its test.
    /// Tests turn it on; [`GpuContext::zeros`] stays zero.
    pub fn set_poison_new_tensors(&self, on: bool) {
        self.poison.store(on, std::sync::atomic::Ordering::Relaxed);
    }
    pub fn poison_new_tensors(&self) -> bool {
        self.poison.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Notes the bytes in use after an allocation, for [`GpuContext::peak_bytes`].
    pub(crate) fn note_in_use(&self, in_use: u64) {
        self.peak.fetch_max(in_use, std::sync::atomic::Ordering::Relaxed);
    }

    /// Bytes of storage buffers in use now (held by tensors, windows,
    /// volumes; not the free ones kept for reuse, see
    /// [`GpuContext::buffer_stats`]).
    pub fn live_bytes(&self) -> u64 {
        self.pool.lock().unwrap().in_use_bytes()
    }

    /// What the buffer pool has created, reused and dropped, and the bytes
    /// in use and free now ([`super::pool`]).
    pub fn buffer_stats(&self) -> super::pool::BufferStats {
        self.pool.lock().unwrap().stats()
    }

    /// Hands every free buffer back to the driver (memory other programs
    /// may want, between jobs).
    pub fn release_free_buffers(&self) {
        self.pool.lock().unwrap().trim_to(0);
    }

    /// Most bytes of storage buffers in use at once since the last
    /// [`GpuContext::reset_peak_bytes`].
    pub fn peak_bytes(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Starts a new peak measurement from what is alive now.
    pub fn reset_peak_bytes(&self) {
        let live = self.live_bytes();
        self.peak.store(live, std::sync::atomic::Ordering::Relaxed);
    }

    /// The kernel variant forced for `op` ([`ContextOptions::kernels`]), if any.
    pub fn kernel_choice(&self, op: &str) -> Option<&str> {
        self.kernel_choices.get(op).map(String::as_str)
    }

    /// Every forced (op, variant) pair, sorted by op.
    pub fn kernel_choices(&self) -> Vec<(&str, &str)> {
        let mut v: Vec<(&str, &str)> = self.kernel_choices.iter().map(|(o, k)| (o.as_str(), k.as_str())).collect();
        v.sort();
        v
    }

    pub fn has_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }
    pub fn has_subgroups(&self) -> bool {
        self.features.contains(wgpu::Features::SUBGROUP)
    }
    /// Whether the device was opened with cooperative matrices and the
    /// adapter offers 16x16x16 ones with f16 inputs and f32 sums.
    pub fn has_coop_matrix_16_f16(&self) -> bool {
        use wgpu::CooperativeScalarType as S;
        self.features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
            && self
                .adapter
                .cooperative_matrix_properties()
                .iter()
                .any(|p| (p.m_size, p.n_size, p.k_size) == (16, 16, 16) && p.ab_type == S::F16 && p.cr_type == S::F32)
    }
    pub fn has_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }
    /// True on software rasterisers such as lavapipe (device type Cpu).
    pub fn is_cpu_adapter(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Short description: name, backend, driver.
    pub fn describe(&self) -> String {
        format!("{} ({:?}, {} {})", self.info.name, self.info.backend, self.info.driver, self.info.driver_info)
    }

    /// Runs `f` with the pending command encoder (created on demand). The
    /// recorded work is submitted by [`GpuContext::flush`], by a download, or
    /// on its own once many dispatches are pending.
    pub fn record<R>(&self, label: &str, f: impl FnOnce(&mut wgpu::CommandEncoder) -> R) -> Result<R> {
        let full = {
            let mut p = self.pending.lock().unwrap();
            let r = f(p.encoder(&self.device));
            (r, p.recorded(label))
        };
        if full.1 {
            self.flush()?;
        }
        Ok(full.0)
    }

    /// Command buffers submitted and host reads (downloads) waited for since
    /// the context was made: a whole forward pass or training step that
    /// submits once and reads once has no host round trip inside.
    pub fn traffic(&self) -> Traffic {
        use std::sync::atomic::Ordering::Relaxed;
        Traffic { submits: self.submits.load(Relaxed), reads: self.reads.load(Relaxed) }
    }

    /// Submits the pending work (does not wait for it).
    pub fn flush(&self) -> Result<()> {
        self.flush_then(|| ())
    }

    /// Submits the pending work, then runs `then` (e.g. a queue write) while
    /// still holding the encoder lock, so that threads sharing the context
    /// submit their batches in the order they recorded them.
    pub(crate) fn flush_then<R>(&self, then: impl FnOnce() -> R) -> Result<R> {
        let (r, labels) = {
            let mut p = self.pending.lock().unwrap();
            if let Some(enc) = p.encoder.take() {
                if !p.uniforms.is_empty() {
                    self.queue.write_buffer(&self.uniform_arena, 0, &p.uniforms);
                    p.uniforms.clear();
                }
                self.queue.submit(Some(enc.finish()));
                self.submits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            (then(), std::mem::take(&mut p.labels))
        };
        self.check_errors(&labels)?;
        Ok(r)
    }

    /// Submits the pending work and waits for the GPU to finish it.
    pub fn sync(&self) -> Result<()> {
        self.flush()?;
        self.device
            .poll(wgpu::PollType::Wait { submission_index: None, timeout: None })
            .map_err(|e| Error::Gpu { op: "sync".into(), message: e.to_string() })?;
        self.check_errors(&[])
    }

    /// Turns errors the device reported since the last check into an [`Error`].
    pub fn check_errors(&self, labels: &[String]) -> Result<()> {
        let errs = std::mem::take(&mut *self.errors.lock().unwrap());
        if errs.is_empty() {
            return Ok(());
        }
        let msg = errs.join("; ");
        let op = if labels.is_empty() { "GPU work".to_string() } else { labels.join(", ") };
        if msg.to_lowercase().contains("out of memory") {
            return Err(Error::OutOfMemory { op, bytes: 0, what: msg });
        }
        Err(Error::Gpu { op, message: msg })
    }
}
