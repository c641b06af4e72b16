//! Deterministic per-channel sums over (N, D, H, W) (`shaders/reduce.wgsl`):
//! fixed-order strided sums and workgroup trees, no float atomics, so the
//! result is bit-identical from run to run. Used for bias gradients and batch
//! statistics.

use crate::error::Result;
use crate::gpu::{grid, split_units, Arg, GpuContext, GpuTensor, ShaderSource};
use crate::tensor::Shape5;

pub const SHADER: ShaderSource = crate::shader!("reduce", prelude);

/// The vec4 form of `shaders/reduce.wgsl`: `channel_partials` loads vec4s
/// (element alias `V`), for tensors whose channels and windows start on 4
/// elements (built once).
pub fn shader_vec4() -> &'static ShaderSource {
    static S: std::sync::OnceLock<ShaderSource> = std::sync::OnceLock::new();
    S.get_or_init(|| SHADER.form("reduce_vec4", "", &super::VEC4_FORM))
}
/// The first pass of a chunked per-channel reduction (`channel_sum`, batch
/// norm's statistics): workgroup size and the elements one workgroup sums.
/// On a CPU adapter few long workgroups, since there the workgroup tree's
/// barriers cost more than the loads (lavapipe runs each as a switch
/// between its invocations); on a GPU `gpu_wg` lanes over [`REDUCE_CHUNK`]
/// elements, many workgroups to fill it.
pub fn first_pass(ctx: &GpuContext, gpu_wg: u32) -> (u32, usize) {
    if ctx.is_cpu_adapter() {
        (64, 32768)
    } else {
        (gpu_wg, REDUCE_CHUNK)
    }
}

uniform_params! {
    struct PartialParams {
        spatial: u32,
        nchunks: u32,
        channels: u32,
        base_x: u32,
        part_base: u32,
        _pad: [u32; 3],
    }
}

uniform_params! {
    struct FinishParams {
        channels: u32,
        samples: u32,
        nchunks: u32,
        _pad: u32,
    }
}

/// Sum of each channel over N, D, H, W: shape (1, C, 1, 1, 1).
pub fn channel_sum(ctx: &GpuContext, x: &GpuTensor) -> Result<GpuTensor> {
    let s = x.shape;
    let spatial = s.spatial();
    let (wg, chunk) = first_pass(ctx, 256);
    let groups = split_units(s.c, spatial, ctx.max_window_elems(), "channel_sum")?;
    let windows = (0..s.n)
        .flat_map(|n| groups.iter().map(move |g| (n, g.clone())))
        .map(|(n, g)| Ok((n, x.window_nc(ctx, &(n..n + 1), &g)?, g)))
        .collect::<Result<Vec<_>>>()?;
    // vec4 views where the channels and every window start on 4 elements.
    let v = if spatial % 4 == 0 && windows.iter().all(|w| w.1.base % 4 == 0) { 4 } else { 1 };
    // Units (values or vec4s) each invocation sums.
    let per = (chunk / (wg as usize * v)).max(1) as u32;
    let chunk = (wg * per) as usize * v;
    let nchunks = spatial.div_ceil(chunk);
    let consts = [("WG", wg as f64), ("PER_THREAD", per as f64)];
    let p1 = ctx.pipeline(if v == 4 { shader_vec4() } else { &SHADER }, "channel_partials", &consts)?;
    let p2 = ctx.pipeline(&SHADER, "channel_finish", &[("WG", FINISH_WG as f64)])?;
    let part = ctx.empty(Shape5::new(s.n, s.c, 1, 1, nchunks), "channel_sum partials")?;
    let label = format!("channel_sum {s}");
    for (n, wx, group) in &windows {
        let part_base = ((n * s.c + group.start) * nchunks) as u32;
        let wp = part.full_window(ctx)?;
        let pp = PartialParams {
            spatial: (spatial / v) as u32,
            nchunks: nchunks as u32,
            channels: group.len() as u32,
            base_x: wx.base / v as u32,
            part_base: part_base + wp.base,
            _pad: [0; 3],
        };
        ctx.dispatch(
            &label,
            &p1,
            &[Arg::Buf(wx), Arg::Buf(&wp), Arg::Uniform(bytemuck::bytes_of(&pp))],
            grid((group.len() * nchunks) as u64),
        )?;
    }
    let out = ctx.empty(Shape5::new(1, s.c, 1, 1, 1), "channel_sum")?;
    let fp = FinishParams { channels: s.c as u32, samples: s.n as u32, nchunks: nchunks as u32, _pad: 0 };
    ctx.dispatch(
        &label,
        &p2,
        &[Arg::Whole(&part.buf), Arg::Whole(&out.buf), Arg::Uniform(bytemuck::bytes_of(&fp))],
        grid(s.c as u64),
    )?;
    Ok(out)
}

/// Workgroup size of pass 2 (one workgroup a channel).
const FINISH_WG: u32 = 256;

/// Plain-Rust reference.
pub mod reference {
    use crate::tensor::{CpuTensor, Shape5};

    /// Per-channel sum over N, D, H, W accumulated in f64.
    pub fn channel_sum(x: &CpuTensor) -> CpuTensor {
        let s = x.shape;
        let mut out = vec![0f64; s.c];
        for n in 0..s.n {
            for (c, o) in out.iter_mut().enumerate() {
                *o += x.channel(n, c).iter().map(|&v| v as f64).sum::<f64>();
            }
        }
        CpuTensor::from_vec(Shape5::new(1, s.c, 1, 1, 1), out.into_iter().map(|v| v as f32).collect())
    }
}

/// Voxels one workgroup of a chunked reduction sums (before capping to the
/// binding limit).
pub const REDUCE_CHUNK: usize = 4096;

/// One binding window of a chunked per-channel reduction: channels
/// `c0..c0+nc` of sample `n`, chunks `j0..j0+nj` of each (either whole
/// channels, or a run of chunks of one channel larger than a binding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seg {
    pub n: usize,
    pub c0: usize,
    pub nc: usize,
    pub j0: usize,
    pub nj: usize,
}

/// How a tensor of `n` samples × `c` channels × `spatial` voxels is cut into
/// reduction chunks of `chunk` voxels (`nchunks` per channel) and windows
/// that fit one storage binding.
#[derive(Clone, Debug)]
pub struct ChunkPlan {
    pub chunk: usize,
    pub nchunks: usize,
    pub spatial: usize,
    pub channels: usize,
    pub segs: Vec<Seg>,
}

impl ChunkPlan {
    /// Element index, in an (n, c, spatial) tensor, of the first element of `s`.
    pub fn start(&self, s: &Seg) -> usize {
        (s.n * self.channels + s.c0) * self.spatial + s.j0 * self.chunk
    }
    /// Elements covered by `s`.
    pub fn len(&self, s: &Seg) -> usize {
        if s.j0 == 0 && s.nj == self.nchunks {
            s.nc * self.spatial
        } else {
            (s.nj * self.chunk).min(self.spatial - s.j0 * self.chunk)
        }
    }
}

/// Plans a chunked reduction over each channel of an (n, c, spatial) tensor
/// in chunks of `chunk` voxels (fewer where the channel or a binding is
/// smaller), with windows of at most `max_elems` elements (see [`ChunkPlan`]). Whole
/// channels are grouped into one window when they fit; a channel larger than
/// one window is split into runs of chunks.
pub fn chunk_plan(n: usize, c: usize, spatial: usize, chunk: usize, max_elems: usize) -> ChunkPlan {
    let max_elems = max_elems.max(1);
    let chunk = chunk.max(1).min(max_elems).min(spatial.max(1));
    let nchunks = spatial.div_ceil(chunk).max(1);
    let mut segs = Vec::new();
    for s in 0..n {
        if spatial <= max_elems {
            let per = (max_elems / spatial.max(1)).max(1);
            let mut c0 = 0;
            while c0 < c {
                let nc = per.min(c - c0);
                segs.push(Seg { n: s, c0, nc, j0: 0, nj: nchunks });
                c0 += nc;
            }
        } else {
            let per = (max_elems / chunk).max(1);
            for ch in 0..c {
                let mut j0 = 0;
                while j0 < nchunks {
                    let nj = per.min(nchunks - j0);
                    segs.push(Seg { n: s, c0: ch, nc: 1, j0, nj });
                    j0 += nj;
                }
            }
        }
    }
    ChunkPlan { chunk, nchunks, spatial, channels: c, segs }
}

/// Cuts `0..len` into consecutive ranges of at most `max_elems` elements,
/// each (but the last) a multiple of `multiple` long.
pub fn flat_windows(len: usize, multiple: usize, max_elems: usize) -> Vec<std::ops::Range<usize>> {
    let multiple = multiple.max(1);
    let step = (max_elems / multiple * multiple).max(multiple.min(max_elems)).max(1);
    (0..len).step_by(step).map(|s| s..(s + step).min(len)).collect()
}

/// A new output tensor of `shape` whose buffer holds at least `elems` values.
/// When the context poisons new tensors (tests), it is filled with NaN so an
/// element a kernel fails to write shows up, as [`GpuContext::empty`] does;
/// unlike it, the buffer may hold more values (`elems`) than the shape.
pub fn new_output(ctx: &GpuContext, shape: Shape5, elems: usize, what: &str) -> Result<GpuTensor> {
    let elems = elems.max(shape.numel());
    let buf = ctx.create_storage(elems as u64 * 4, &format!("{what} {shape}"))?;
    if ctx.poison_new_tensors() {
        ctx.fill(&buf, f32::NAN)?;
    }
    Ok(GpuTensor { buf, shape, dtype: crate::gpu::DType::F32 })
}
