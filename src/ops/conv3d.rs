//! 3-D convolution, stride 1, zero padding `k/2` ("same"), odd `k` up to
//! [`MAX_K`] (`shaders/conv3d.wgsl`), forward and backward.
//!
//! - Weights are `Shape5 { n: c_out, c: c_in, d: k, h: k, w: k }` (PyTorch
//!   layout), bias `(1, c_out, 1, 1, 1)`.
//! - [`forward`] packs the weights into a blocked layout (a tiny kernel), then
//!   runs a register-blocked direct convolution: each invocation computes
//!   `co_b` output channels x `xb` consecutive x-positions ([`Tile`], override
//!   constants, so one source serves several tile shapes).
//! - [`forward_fused`] is the inference form: the input is a list of
//!   tensors whose channel concatenation is never materialised (each part is
//!   a run of input-channel groups accumulating into the output), and the
//!   store can apply ReLU, so conv + batch norm folded into its weights
//!   ([`crate::ops::batchnorm::fold_into_conv`]) + ReLU, with the decoder's
//!   skip concatenation, is one pass over memory.
//! - **f16 storage**: [`forward`] and [`forward_fused`] also take f16
//!   activations ([`crate::gpu::DType::F16`], made by [`crate::ops::cast`])
//!   where the adapter has `shader-f16`: the same kernels built from the
//!   same source with its element alias set to f16 ([`shader_f16`]), so
//!   activations and packed weights are read as f16, every sum is f32, the
//!   output is f16. Weights and bias stay f32 tensors. With several
//!   input-channel groups (the parts of a concatenation, or a split input)
//!   each partial sum is stored as f16 between groups: one more f16
//!   rounding per group (about 3e-4 relative in the op table's two-part
//!   cases; the tolerance there is 1e-3). The backward passes are f32 only.
//! - **Cooperative matrices** ([`Tile::COOP16`], variant `coop16-f16`,
//!   `shaders/conv3d_coop.wgsl`): the same convolution (same packed
//!   weights with 16-channel blocks, same parameters, channel groups,
//!   fused epilogue and transposed packing for [`backward_input`]) as an
//!   implicit GEMM on wgpu's experimental 16x16x16 cooperative matrices
//!   (tensor cores): inputs and weights rounded to f16, sums in f32. Only
//!   where the device was opened with them
//!   ([`crate::gpu::ContextOptions::cooperative_matrix`]) and the adapter
//!   offers f16 x f16 + f32; never chosen unless forced, because it has not
//!   run on such an adapter yet (lavapipe has none; naga validates it and
//!   writes its SPIR-V in `tests/shaders_naga.rs`).
//! - **CPU adapters** ([`Kernel::Unrolled`], variant `cpu-unrolled`, chosen
//!   first where the adapter is a CPU): the same convolution, parameters and
//!   dispatch, as straight-line WGSL generated per kernel size and block by
//!   [`super::conv3d_unrolled`] (8 output channels x 2 rows, 4 on planes
//!   of [`TALL_ROWS`] rows or more, x 8 x-positions an invocation),
//!   because lavapipe turns every load whose offset is not a constant into
//!   8 per-lane loads (even when all lanes read the same address) and keeps
//!   loop-indexed arrays in memory. Where subgroups have
//!   8 or more lanes the weights are loaded once per subgroup and
//!   broadcast (`subgroupBroadcast`); `cpu-unrolled-lanes` is the same
//!   kernel with every lane loading them.
//! - **Split input channels** ([`Tile::loops_split`], variant
//!   `f32-8x8-split`): a layer whose dispatch gives fewer invocations than
//!   the tile's target (a deep level: 8³ planes, hundreds of channels) is
//!   one long serial sum per invocation on a GPU with most of its lanes
//!   idle. Its input channels are cut into parts ([`split_parts`]), each
//!   summed by its own workgroups into f32 partial sums
//!   (`conv_forward4_split`); `conv_split_finish` adds the parts in a fixed
//!   order and applies the epilogue (bias or accumulation, ReLU), so the
//!   result is deterministic. Forced only until measured on a GPU.
//! - [`backward_input`] is the same convolution with channel-swapped,
//!   tap-flipped weights (the packing kernel builds them): no second conv.
//! - [`backward_weight`] is deterministic (no float atomics): each lane owns
//!   one (input channel, kz, ky) and sums `co_b x k` weights over a chunk of
//!   rows in order (partial sums), then a fixed-order sum over samples and
//!   chunks. Bit-identical across runs. How finely the rows are cut and
//!   the workgroup size are the variants of [`WEIGHT_KERNELS`]; on CPU
//!   adapters with subgroups the partial sums come from a generated
//!   straight-line kernel ([`super::conv3d_weight_unrolled`], a lane per
//!   (input channel, kz), `dy` loaded once per subgroup and broadcast),
//!   finished the same way. `f32-32-staged` (forced only until measured on
//!   a GPU) sums the same way from input rows staged in workgroup memory.
//! - [`backward_bias`] is [`crate::ops::reduce::channel_sum`].
//!
//! Tensors larger than one storage binding: per sample, input channels are
//! split into groups that accumulate into the output, and output channels into
//! groups, so that every binding fits [`GpuContext::binding_limit`]. A single
//! channel (`D*H*W` values of one sample) larger than one binding is an error:
//! tile the volume first (a 512³ f32 channel is 512 MiB).

use super::variants::{require, Kernels, Need, Variant};
use crate::error::{Error, Result};
use crate::gpu::{grid, Arg, DType, GpuContext, GpuTensor, ShaderSource};
use crate::tensor::Shape5;

pub const SHADER: ShaderSource = crate::shader!("conv3d");
/// The cooperative-matrix form of the forward conv (`conv_coop`; packs its
/// weights with `pack_weights` of [`SHADER`]).
pub const SHADER_COOP: ShaderSource = crate::shader!("conv3d_coop");
/// What the cooperative-matrix conv needs: its matrices, and f16 in WGSL
/// (`enable f16;`: its inputs are f16 matrices whatever the activations).
pub const COOP_NEEDS: &[Need] = &[Need::ShaderF16, Need::CoopMatrix16F16];
/// Output tiles (16 x-positions x 16 output channels) per workgroup of
/// `conv_coop` (`MT` in the shader).
const COOP_TILES_PER_WG: usize = 4;

/// Largest supported kernel size (register arrays in the shader are sized for it).
pub const MAX_K: usize = 7;

/// Rows per plane from which the unrolled kernel runs its `yb_tall` rows
/// per invocation. On lavapipe 4 rows against 2 were 1.1-1.2x faster on 32³
/// NSN and NDN layers, 1.25-1.4x on 64³, and 1.4-1.6x *slower* on 16³
/// while a workgroup covered one plane (fewer invocations to fill it;
/// `benches/RESULTS.md`, "Other tiles for the generated forward conv").
/// Since workgroups span planes, 4 rows are 1.1-2.3x faster on 16³ too, and
/// mixed on 8³ ("Small planes packed into workgroups").
pub const TALL_ROWS: usize = 16;

/// Rows of at most this many voxels get this many x-positions an
/// invocation from the generated CPU kernel (instead of its tile's 8).
pub const NARROW_ROW: usize = 4;

/// Register blocking of the convolution kernel: `wg` invocations per
/// workgroup, each computing `co_b` output channels x `xb` x-positions
/// (x `yb` rows with [`Kernel::Unrolled`]), and which kernel runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    pub wg: u32,
    pub co_b: u32,
    pub xb: u32,
    pub kernel: Kernel,
}

/// Which kernel a [`Tile`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// `conv_forward` / `conv_forward4` of `shaders/conv3d.wgsl`: loops over
    /// the tile (override constants), for any adapter. `split_lanes` (0:
    /// never): where a layer gives fewer invocations than this (a deep
    /// level), its input channels are cut into parts summed by separate
    /// workgroups (`conv_forward4_split`, then `conv_split_finish`; see
    /// [`split_parts`]), so that about this many invocations are in flight.
    Loops { split_lanes: u32 },
    /// The straight-line kernel generated for CPU adapters
    /// ([`super::conv3d_unrolled`]), `yb` rows per invocation, `yb_tall`
    /// where the output plane has [`TALL_ROWS`] rows or more; `co_b` is
    /// the largest output-channel block (4 for layers of 4 or fewer).
    /// `subgroup_weights`: weights loaded once per subgroup and broadcast
    /// (needs subgroups of 8 or more lanes), else by every lane.
    Unrolled { yb: u32, yb_tall: u32, subgroup_weights: bool },
    /// `conv_coop` of `shaders/conv3d_coop.wgsl` (cooperative matrices).
    Coop,
}

impl Tile {
    /// A tile of the loop kernels.
    pub const fn loops(wg: u32, co_b: u32, xb: u32) -> Tile {
        Tile { wg, co_b, xb, kernel: Kernel::Loops { split_lanes: 0 } }
    }
    /// A tile of the loop kernels whose layers with fewer than
    /// `split_lanes` invocations split their input channels (xb 4 or 8).
    pub const fn loops_split(wg: u32, co_b: u32, xb: u32, split_lanes: u32) -> Tile {
        Tile { wg, co_b, xb, kernel: Kernel::Loops { split_lanes } }
    }
    /// `conv_coop` of `shaders/conv3d_coop.wgsl`: 16 output channels x 16
    /// x-positions per matrix, 4 matrices per workgroup of 32 (a subgroup
    /// on NVIDIA).
    pub const COOP16: Tile = Tile { wg: 32, co_b: 16, xb: 16, kernel: Kernel::Coop };
    /// The generated kernel for CPU adapters, `yb` rows per invocation at
    /// every layer.
    pub const fn unrolled(wg: u32, co_b: u32, xb: u32, yb: u32, subgroup_weights: bool) -> Tile {
        Tile { wg, co_b, xb, kernel: Kernel::Unrolled { yb, yb_tall: yb, subgroup_weights } }
    }
    /// The same tile with `yb_tall` rows per invocation where the output
    /// plane has [`TALL_ROWS`] rows or more (the unrolled kernel; others
    /// are returned as they are).
    pub const fn with_tall_rows(self, yb_tall: u32) -> Tile {
        match self.kernel {
            Kernel::Unrolled { yb, subgroup_weights, .. } => {
                Tile { kernel: Kernel::Unrolled { yb, yb_tall, subgroup_weights }, ..self }
            }
            _ => self,
        }
    }
    /// What the adapter must offer for this tile's kernel (a variant may
    /// add preferences, such as [`Need::GpuAdapter`]).
    pub fn needs(self) -> &'static [Need] {
        match self.kernel {
            Kernel::Coop => COOP_NEEDS,
            Kernel::Unrolled { subgroup_weights: true, .. } => &[Need::Subgroups8],
            _ => &[],
        }
    }
    /// Whether this is the cooperative-matrix kernel.
    pub fn is_coop(self) -> bool {
        self.kernel == Kernel::Coop
    }
    /// Rows per invocation (1 but for the unrolled kernel).
    fn rows(self) -> u32 {
        match self.kernel {
            Kernel::Unrolled { yb, .. } => yb,
            _ => 1,
        }
    }
    /// The tile a layer of `out_c` output channels and output planes of
    /// `out_h` rows of `out_w` voxels runs. The unrolled kernel takes blocks
    /// of 4 for layers of 4 or fewer channels (a network's head), so that
    /// it does not compute and compile 8; one more vec4 of channels where
    /// that computes fewer (`unrolled_block`); 4 x-positions on rows of 4 or
    /// fewer voxels (a deep level: 8 would compute half of them for
    /// nothing); and its `yb_tall` rows (as `yb`) on planes of
    /// [`TALL_ROWS`] rows or more. (Public for the tests, which validate
    /// every generated kernel the variants run.)
    pub fn for_layer(self, out_c: usize, out_h: usize, out_w: usize) -> Tile {
        let Kernel::Unrolled { yb, yb_tall, subgroup_weights } = self.kernel else {
            return self;
        };
        let yb = if out_h >= TALL_ROWS { yb_tall } else { yb };
        let xb = if out_w <= NARROW_ROW { self.xb.min(NARROW_ROW as u32) } else { self.xb };
        let co_b = if out_c <= 4 { 4.min(self.co_b) } else { unrolled_block(out_c, self.co_b, xb, yb) };
        Tile { co_b, xb, kernel: Kernel::Unrolled { yb, yb_tall: yb, subgroup_weights }, ..self }
    }
}

/// Output channels per block of the unrolled forward kernel for a layer of
/// `out_c` channels (blocks of `xb` x-positions x `yb` rows): `co_b`, or
/// `co_b + 4` where the generator takes it and it computes fewer channels
/// (blocks past the layer's last channel are computed and not stored). The
/// paper's NDN has 12 channels at its first level: blocks of 8 compute 16
/// there, one block of 12 computes 12 (lavapipe, 12->12 k5 at 64³: forward
/// 299/313 -> 203/197 ms; blocks of 4, 240). The weight gradient balances
/// its blocks instead (`WeightTile::for_layer`): each rule is what
/// measured best for its kernel.
fn unrolled_block(out_c: usize, co_b: u32, xb: u32, yb: u32) -> u32 {
    let computed = |b: u32| out_c.div_ceil(b as usize) * b as usize;
    let wider = co_b + 4;
    if super::conv3d_unrolled::block_valid(wider, xb, yb) && computed(wider) < computed(co_b) {
        wider
    } else {
        co_b
    }
}

/// The register tiles of [`forward`], [`forward_fused`] and
/// [`backward_input`] as kernel variants ([`crate::ops::variants`]),
/// preferred first. On CPU adapters (lavapipe) the generated straight-line
/// kernel ([`super::conv3d_unrolled`]; 1.3-1.6x the loop kernels there,
/// another 1.3-1.4x with the weights loaded per subgroup,
/// `benches/RESULTS.md`); elsewhere the loop kernels, one shader source for
/// all their tiles (override constants). 8×8 with 32 lanes was their fastest
/// on lavapipe (`benches/conv3d_notes.md`) and is the default on GPUs until
/// another is measured faster there; `qcanet-gpu bench` times each.
pub static KERNELS: Kernels<Tile> = Kernels {
    op: "conv3d",
    variants: &[
        Variant {
            name: "cpu-unrolled",
            needs: &[Need::CpuAdapter, Need::Subgroups8],
            about: "generated straight-line WGSL for CPU adapters: each invocation 8 output channels x 2 rows \
                    (4 on planes of 16 rows or more) x 8 x-positions (4 on rows of 4 or fewer), a workgroup's \
                    lanes spanning planes, rows gathered once per input channel and kz, weights loaded once per \
                    subgroup and broadcast",
            kernel: Tile::unrolled(32, 8, 8, 2, true).with_tall_rows(4),
        },
        Variant {
            name: "cpu-unrolled-lanes",
            needs: &[Need::CpuAdapter],
            about: "cpu-unrolled for CPU adapters without subgroups of 8+ lanes: every lane loads the weights",
            kernel: Tile::unrolled(32, 8, 8, 2, false).with_tall_rows(4),
        },
        Variant {
            name: "cpu-unrolled-2rows",
            needs: &[Need::CpuAdapter, Need::Subgroups8],
            about: "cpu-unrolled with 2 rows an invocation on every plane (the default before 2026-12-04)",
            kernel: Tile::unrolled(32, 8, 8, 2, true),
        },
        Variant {
            name: "f32-8x8",
            needs: &[],
            about: "f32, each invocation 8 output channels x 8 x-positions, 32 per workgroup",
            kernel: Tile::loops(32, 8, 8),
        },
        // After f32-8x8, so forced only: not yet measured on a GPU, where it
        // is meant to pay (on a CPU adapter every layer fills the cores).
        Variant {
            name: "f32-8x8-split",
            needs: &[Need::GpuAdapter],
            about: "f32-8x8 where layers giving fewer than 65,536 invocations (deep levels) cut their input \
                    channels into parts summed by separate workgroups, added in a fixed order; forced only \
                    (--gpu-kernel conv3d=f32-8x8-split) until measured on a GPU",
            kernel: Tile::loops_split(32, 8, 8, SPLIT_LANES),
        },
        Variant {
            name: "f32-8x4",
            needs: &[],
            about: "f32, 8 output channels x 4 x-positions, 64 per workgroup (half the registers)",
            kernel: Tile::loops(64, 8, 4),
        },
        Variant {
            name: "f32-4x8",
            needs: &[],
            about: "f32, 4 output channels x 8 x-positions, 64 per workgroup (half the registers)",
            kernel: Tile::loops(64, 4, 8),
        },
        Variant {
            name: "f32-4x4",
            needs: &[],
            about: "f32, 4 output channels x 4 x-positions, 128 per workgroup (most parallelism)",
            kernel: Tile::loops(128, 4, 4),
        },
        // Last, so never chosen unless forced: on the one adapter that has
        // offered it (an NVIDIA H200, 2026-12-04) it passed the op table and
        // was slower than the f32 tiles (benches/RESULTS.md).
        Variant {
            name: "coop16-f16",
            needs: COOP_NEEDS,
            about: "cooperative matrices (tensor cores): implicit GEMM, 16x16x16 f16 inputs, f32 sums; \
                    forced only (--gpu-kernel conv3d=coop16-f16): correct on an NVIDIA H200, slower there \
                    than the f32 tiles",
            kernel: Tile::COOP16,
        },
    ],
};
/// Invocations a layer should give before [`Tile::loops_split`] tiles stop
/// splitting its input channels: about one wave of an NVIDIA H200 (132
/// multiprocessors of 512-ish resident lanes at this kernel's registers).
pub const SPLIT_LANES: u32 = 1 << 16;

/// Fewest input channels in one part of a split layer.
pub const MIN_SPLIT_CHANNELS: usize = 2;

/// How a layer's `ci_n` input channels are cut when its dispatch gives
/// `lanes` invocations and the tile asks for `split_lanes` (0: never):
/// (parts, channels per part; the last part may have fewer). Enough parts
/// for `split_lanes` invocations, each of at least [`MIN_SPLIT_CHANNELS`]
/// channels, at most `max_parts` (the partial sums must fit one binding);
/// no part is empty.
pub fn split_parts(split_lanes: u32, lanes: usize, ci_n: usize, max_parts: usize) -> (usize, usize) {
    if split_lanes == 0 || lanes >= split_lanes as usize || ci_n == 0 {
        return (1, ci_n);
    }
    let want = (split_lanes as usize).div_ceil(lanes.max(1));
    let parts = want.min(ci_n / MIN_SPLIT_CHANNELS).min(max_parts).max(1);
    let per = ci_n.div_ceil(parts);
    (ci_n.div_ceil(per), per)
}

/// How [`backward_weight`] splits its work: lanes per workgroup, `co_b`
/// output channels per lane, the kernel (see [`WeightKernel`]), and the
/// chunks of (z, y) rows of a sample summed in parallel, each by its lanes
/// in order (more chunks: more workgroups in flight, larger partial
/// buffers; `weight_finish` adds the partials in a fixed order, so the
/// result is deterministic either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightTile {
    pub wg: u32,
    /// At most 8 (`MAX_CO` of the shader) for [`WeightKernel::Loops`] and
    /// [`WeightKernel::Staged`]; a
    /// multiple of 4 up to 32 for [`WeightKernel::Unrolled`], the most a
    /// layer takes (see `WeightTile::for_layer`).
    pub co_b: u32,
    /// Most chunks per sample.
    pub max_chunks: usize,
    /// Fewest voxels per chunk.
    pub min_chunk_voxels: usize,
    pub kernel: WeightKernel,
}

/// Which kernel computes the weight-gradient partial sums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightKernel {
    /// `weight_partials` of `shaders/conv3d.wgsl`, any adapter: each lane
    /// one (input channel, kz, ky) with `co_b x k` sums.
    Loops,
    /// `weight_partials_staged`: the same sums, each (z, y) row's input
    /// segments staged in workgroup memory by consecutive lanes reading
    /// consecutive voxels, where `Loops` has each lane of a subgroup read
    /// its own row (one load touching a cache line per lane). For GPUs; at
    /// most `STAGED_MAX_WG` lanes a workgroup.
    Staged,
    /// The straight-line kernel generated for CPU adapters
    /// ([`super::conv3d_weight_unrolled`]): each lane one (input channel,
    /// kz) with `co_b x k²` sums, `xb` voxels a step, `dy` loaded once per
    /// subgroup (needs subgroups of 8 or more lanes).
    Unrolled { xb: u32 },
}

impl WeightTile {
    /// What the adapter must offer for this tile's kernel (a variant may
    /// add preferences, such as [`Need::GpuAdapter`]).
    pub fn needs(self) -> &'static [Need] {
        match self.kernel {
            WeightKernel::Loops | WeightKernel::Staged => &[],
            WeightKernel::Unrolled { .. } => &[Need::Subgroups8],
        }
    }
    /// The tile a layer of `co_n` output channels runs: the generated
    /// kernel takes the fewest blocks of at most `co_b` channels, each of
    /// the same multiple of 4 channels (12 channels: one block of 12, not
    /// 16 of which 4 are computed for nothing; 24: two of 12, not 16 + 16;
    /// lavapipe, the paper NDN's 12->12 k5 at 64³: 251/265 -> 207/201 ms).
    fn for_layer(self, co_n: usize) -> WeightTile {
        let WeightKernel::Unrolled { .. } = self.kernel else {
            return self;
        };
        let blocks = co_n.div_ceil(self.co_b as usize);
        let co_b = (co_n.div_ceil(blocks).div_ceil(4) * 4) as u32;
        WeightTile { co_b: co_b.min(self.co_b), ..self }
    }
    /// Lanes of work for `ci_n` input channels and kernel size `k`.
    fn lanes(self, ci_n: usize, k: usize) -> usize {
        match self.kernel {
            WeightKernel::Loops | WeightKernel::Staged => ci_n * k * k,
            WeightKernel::Unrolled { .. } => super::conv3d_weight_unrolled::lanes(ci_n, k),
        }
    }
}

/// The weight gradient's work splits as kernel variants, preferred first.
/// On CPU adapters with subgroups the generated kernel
/// ([`super::conv3d_weight_unrolled`]; 16 output channels x 4 voxels a
/// step, 16 lanes, was the fastest of 8/16/24 channels, 4/8 voxels and
/// 8/16/32 lanes on lavapipe, 2.2-4.9x `f32-16` there, `benches/RESULTS.md`);
/// on GPUs `f32-32-wide` (an NVIDIA H200, whole training steps at 64³, two
/// alternating rounds: NSN 46 -> 36 ms, paper NDN 118 -> 105 ms against
/// `f32-16`, for 130-370 MiB more partial sums); on other CPU adapters
/// `f32-16`, the fastest loop form on lavapipe (the wide split is 9-30 %
/// slower there). `f32-32-staged`, for GPUs, is forced only until measured
/// on one (on lavapipe it is 3-7x slower than the wide split: its barriers
/// cost there what its coalesced loads save on a GPU). The op table checks
/// every variant on every adapter.
pub static WEIGHT_KERNELS: Kernels<WeightTile> = Kernels {
    op: "conv3d_weight",
    variants: &[
        Variant {
            name: "cpu-unrolled",
            needs: &[Need::CpuAdapter, Need::Subgroups8],
            about: "generated straight-line WGSL for CPU adapters: each lane one (input channel, kz) x 16 output \
                    channels x all (ky, kx) taps, 4 voxels a step, dy loaded once per subgroup and broadcast",
            kernel: WeightTile {
                wg: 16,
                co_b: 16,
                max_chunks: 64,
                min_chunk_voxels: 1024,
                kernel: WeightKernel::Unrolled { xb: 4 },
            },
        },
        Variant {
            name: "f32-32-wide",
            needs: &[Need::GpuAdapter],
            about: "f32, 32 lanes per workgroup (an NVIDIA warp), up to 512 chunks of 256+ voxels per sample: \
                    8x the workgroups of f32-16, for GPUs with thousands of lanes (GPU adapters' default)",
            kernel: WeightTile { wg: 32, co_b: 8, max_chunks: 512, min_chunk_voxels: 256, kernel: WeightKernel::Loops },
        },
        // After the GPU default, so forced only: never run on a GPU yet.
        // tools/device-check.sh and device-train.sh time whole networks
        // with it against f32-32-wide.
        Variant {
            name: "f32-32-staged",
            needs: &[Need::GpuAdapter],
            about: "f32-32-wide with each row's input segments staged in workgroup memory, read by consecutive \
                    lanes (f32-32-wide's lanes each read their own row); forced only (--gpu-kernel \
                    conv3d_weight=f32-32-staged) until measured on a GPU",
            kernel: WeightTile {
                wg: 32,
                co_b: 8,
                max_chunks: 512,
                min_chunk_voxels: 256,
                kernel: WeightKernel::Staged,
            },
        },
        Variant {
            name: "f32-16",
            needs: &[],
            about: "f32, 16 lanes per workgroup, 8 output channels each; at most 64 chunks of 1,024+ voxels \
                    per sample",
            kernel: WeightTile { wg: 16, co_b: 8, max_chunks: 64, min_chunk_voxels: 1024, kernel: WeightKernel::Loops },
        },
    ],
};
/// Most lanes a workgroup of [`WeightKernel::Staged`] has (`ST_LANES` of
/// the shader: its workgroup memory holds one input row segment per lane).
pub const STAGED_MAX_WG: u32 = 32;
/// Workgroup size of the weight-packing and finishing kernels.
pub const PACK_WG: u32 = 256;

uniform_params! {
    struct PackParams {
        o0: u32,
        o_n: u32,
        i0: u32,
        i_n: u32,
        c1: u32,
        transposed: u32,
        base_src: u32,
        row0: u32,
        total: u32,
        base_dst: u32,
        _pad: [u32; 2],
    }
}

uniform_params! {
    struct ConvParams {
        d: u32,
        h: u32,
        w: u32,
        spatial: u32,
        ci_n: u32,
        co_n: u32,
        nxb: u32,
        tiles: u32,
        base_x: u32,
        base_w: u32,
        base_b: u32,
        base_out: u32,
        accumulate: u32,
        use_bias: u32,
        n_cob: u32,
        relu: u32,
        splits: u32,
        ci_per_split: u32,
        base_part: u32,
        _pad0: u32,
    }
}

uniform_params! {
    struct WeightParams {
        d: u32,
        h: u32,
        w: u32,
        spatial: u32,
        co_n: u32,
        ci_n: u32,
        n_cob: u32,
        n_lg: u32,
        chunk_rows: u32,
        nchunks: u32,
        base_x: u32,
        base_dy: u32,
        base_part: u32,
        _pad: [u32; 3],
    }
}

uniform_params! {
    struct FinishParams {
        e_n: u32,
        m_n: u32,
        ci_n: u32,
        cin_total: u32,
        i0: u32,
        base_part: u32,
        base_dw: u32,
        _pad: u32,
    }
}

/// The kernel size of weights `w`, checked: cubic, odd, 1..=MAX_K.
fn kernel_size(op: &str, w: Shape5) -> Result<usize> {
    if w.d != w.h || w.d != w.w {
        return Err(Error::shape(op, format!("weights {w} must have a cubic kernel (k, k, k)")));
    }
    check_k(op, w.d)
}

fn check_k(op: &str, k: usize) -> Result<usize> {
    if k == 0 || k % 2 == 0 || k > MAX_K {
        return Err(Error::shape(
            op,
            format!(
                "kernel size {k} is not supported: it must be odd and between 1 and {MAX_K} (\"same\" padding k/2)"
            ),
        ));
    }
    Ok(k)
}

fn check_nonempty(op: &str, what: &str, s: Shape5) -> Result<()> {
    if s.numel() == 0 {
        return Err(Error::shape(op, format!("{what} {s} is empty")));
    }
    Ok(())
}

/// Output shape of the convolution of `x` (N, C_in, D, H, W) with weights
/// `w` (C_out, C_in, k, k, k): (N, C_out, D, H, W). The one place the shape
/// rule lives; errors for even or non-cubic kernels and channel mismatch.
pub fn output_shape(x: Shape5, w: Shape5) -> Result<Shape5> {
    kernel_size("conv3d", w)?;
    check_nonempty("conv3d", "input", x)?;
    check_nonempty("conv3d", "weights", w)?;
    if w.c != x.c {
        return Err(Error::shape(
            "conv3d",
            format!("weights {w} expect {} input channels but the input {x} has {}", w.c, x.c),
        ));
    }
    Ok(Shape5::new(x.n, w.n, x.d, x.h, x.w))
}

/// 2 × multiply-adds of the forward convolution (the usual FLOP count; the
/// backward passes cost the same each).
pub fn flops(x: Shape5, c_out: usize, k: usize) -> f64 {
    2.0 * x.numel() as f64 * c_out as f64 * (k * k * k) as f64
}

/// Convolution forward: `y = conv(x, w) + b`.
pub fn forward(ctx: &GpuContext, x: &GpuTensor, w: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
    forward_with_tile(ctx, x, w, b, KERNELS.choose(ctx)?.kernel)
}

/// [`forward`] with an explicit register tile (for tuning and benchmarks).
pub fn forward_with_tile(
    ctx: &GpuContext,
    x: &GpuTensor,
    w: &GpuTensor,
    b: &GpuTensor,
    tile: Tile,
) -> Result<GpuTensor> {
    let out = output_shape(x.shape, w.shape)?;
    if b.shape != Shape5::new(1, w.shape.n, 1, 1, 1) {
        return Err(Error::shape(
            "conv3d",
            format!("bias {} must be [1, {}, 1, 1, 1] for weights {}", b.shape, w.shape.n, w.shape),
        ));
    }
    conv_core(ctx, &[x], w, Some(b), false, false, out, tile, "conv3d forward")
}

/// Fused inference forward: `y = conv(concat(xs), w) + b`, then ReLU when
/// `relu`. `xs` are (N, C_i, D, H, W) with equal N, D, H, W, concatenated
/// along channels in order (not materialised); `w` is (C_out, Σ C_i, k³).
/// ReLU is applied by the last input-channel group's store, when the sum is
/// complete.
pub fn forward_fused(
    ctx: &GpuContext,
    xs: &[&GpuTensor],
    w: &GpuTensor,
    b: &GpuTensor,
    relu: bool,
) -> Result<GpuTensor> {
    forward_fused_with_tile(ctx, xs, w, b, relu, KERNELS.choose(ctx)?.kernel)
}

/// [`forward_fused`] with an explicit register tile.
pub fn forward_fused_with_tile(
    ctx: &GpuContext,
    xs: &[&GpuTensor],
    w: &GpuTensor,
    b: &GpuTensor,
    relu: bool,
    tile: Tile,
) -> Result<GpuTensor> {
    let op = "conv3d forward_fused";
    let first = xs.first().ok_or_else(|| Error::shape(op, "no input tensors"))?;
    let f = first.shape;
    let mut c = 0;
    for x in xs {
        let s = x.shape;
        if (s.n, s.d, s.h, s.w) != (f.n, f.d, f.h, f.w) {
            return Err(Error::shape(op, format!("inputs {f} and {s} differ in batch or volume size")));
        }
        c += s.c;
    }
    let out = output_shape(f.with_c(c), w.shape)?;
    if b.shape != Shape5::new(1, w.shape.n, 1, 1, 1) {
        return Err(Error::shape(
            op,
            format!("bias {} must be [1, {}, 1, 1, 1] for weights {}", b.shape, w.shape.n, w.shape),
        ));
    }
    conv_core(ctx, xs, w, Some(b), false, relu, out, tile, op)
}

/// Gradient of the loss with respect to the convolution's input, given the
/// output gradient `dy` (N, C_out, D, H, W) and weights `w`:
/// a convolution of `dy` with channel-swapped, tap-flipped weights.
pub fn backward_input(ctx: &GpuContext, dy: &GpuTensor, w: &GpuTensor) -> Result<GpuTensor> {
    backward_input_with_tile(ctx, dy, w, KERNELS.choose(ctx)?.kernel)
}

/// [`backward_input`] with an explicit register tile.
pub fn backward_input_with_tile(ctx: &GpuContext, dy: &GpuTensor, w: &GpuTensor, tile: Tile) -> Result<GpuTensor> {
    let op = "conv3d backward_input";
    kernel_size(op, w.shape)?;
    check_nonempty(op, "output gradient", dy.shape)?;
    check_nonempty(op, "weights", w.shape)?;
    if dy.shape.c != w.shape.n {
        return Err(Error::shape(
            op,
            format!(
                "weights {} produce {} channels but the output gradient {} has {}",
                w.shape, w.shape.n, dy.shape, dy.shape.c
            ),
        ));
    }
    let out = dy.shape.with_c(w.shape.c);
    conv_core(ctx, &[dy], w, None, true, false, out, tile, op)
}

fn check_tile(ctx: &GpuContext, op: &str, tile: Tile) -> Result<()> {
    require(ctx, op, tile.needs())?;
    if tile.is_coop() {
        return Ok(());
    }
    let wg_ok = ctx.workgroup_fits(tile.wg);
    let (block_ok, limits) = match tile.kernel {
        Kernel::Unrolled { yb, yb_tall, .. } => (
            super::conv3d_unrolled::block_valid(tile.co_b, tile.xb, yb)
                && super::conv3d_unrolled::block_valid(tile.co_b, tile.xb, yb_tall),
            "the unrolled kernel: co_b a multiple of 4 up to 32, xb 1..=16, yb 1..=8",
        ),
        Kernel::Loops { split_lanes } if split_lanes > 0 => (
            (1..=8).contains(&tile.co_b) && (tile.xb == 4 || tile.xb == 8),
            "co_b 1..=8 and xb 4 or 8 where layers split",
        ),
        _ => ((1..=8).contains(&tile.co_b) && (1..=8).contains(&tile.xb), "co_b and xb 1..=8"),
    };
    if !(wg_ok && block_ok) {
        return Err(Error::invalid(format!(
            "{op}: tile {tile:?} is not supported ({limits}, wg up to the adapter's workgroup limit)"
        )));
    }
    Ok(())
}

fn too_big(op: &str, what: &str, values: usize, ctx: &GpuContext) -> Error {
    Error::shape(
        op,
        format!(
            "{what} of {values} values ({} bytes) is larger than one storage binding ({} bytes); \
             process the volume in smaller tiles",
            values * 4,
            ctx.binding_limit()
        ),
    )
}

/// The pipeline for `entry` of the conv3d shader. Every kernel in
/// `shaders/conv3d.wgsl` bounds-checks each buffer and local-array index
/// itself and has loops with fixed trip counts (see the comments there), so
/// the module is built without naga's runtime checks (unless the context
/// was opened with `checked_kernels`, `QCANET_CHECKED_KERNELS=1`): on
/// lavapipe the loop-bounding counters and index clamps in the hot loops
/// cost time.
fn pipeline(ctx: &GpuContext, entry: &str, consts: &[(&str, f64)]) -> Result<std::sync::Arc<crate::gpu::Pipeline>> {
    ctx.pipeline_trusted(&SHADER, entry, consts)
}

/// The f16-storage form of `shaders/conv3d.wgsl`: `enable f16;` in front and
/// its element alias `act` set to f16, so activations and packed weights
/// are read and written as f16 while every sum is f32 (built once).
pub fn shader_f16() -> &'static ShaderSource {
    static S: std::sync::OnceLock<ShaderSource> = std::sync::OnceLock::new();
    S.get_or_init(|| f16_storage_form(&SHADER, "conv3d_f16", "enable f16;\n"))
}

/// The f16-storage form of `shaders/conv3d_coop.wgsl` (it enables f16
/// itself; built once).
pub fn shader_coop_f16() -> &'static ShaderSource {
    static S: std::sync::OnceLock<ShaderSource> = std::sync::OnceLock::new();
    S.get_or_init(|| f16_storage_form(&SHADER_COOP, "conv3d_coop_f16", ""))
}

/// `src` with its one `alias act = f32;` set to f16 and `prefix` in front.
fn f16_storage_form(src: &ShaderSource, name: &'static str, prefix: &str) -> ShaderSource {
    src.form(name, prefix, &[("alias act = f32;", "alias act = f16;")])
}

/// The cooperative-matrix conv for activations of type `dtype`.
fn pipeline_coop(
    ctx: &GpuContext,
    dtype: DType,
    consts: &[(&str, f64)],
) -> Result<std::sync::Arc<crate::gpu::Pipeline>> {
    let src = match dtype {
        DType::F32 => &SHADER_COOP,
        DType::F16 => shader_coop_f16(),
    };
    ctx.pipeline_trusted(src, "conv_coop", consts)
}

/// The pipeline of `entry` for activations of type `dtype`.
fn pipeline_of(
    ctx: &GpuContext,
    dtype: DType,
    entry: &str,
    consts: &[(&str, f64)],
) -> Result<std::sync::Arc<crate::gpu::Pipeline>> {
    match dtype {
        DType::F32 => pipeline(ctx, entry, consts),
        DType::F16 => ctx.pipeline_trusted(shader_f16(), entry, consts),
    }
}

/// Consecutive ranges of `n` in steps of `step` (the last one shorter).
fn ranges(n: usize, step: usize) -> Vec<std::ops::Range<usize>> {
    (0..n).step_by(step.max(1)).map(|s| s..(s + step).min(n)).collect()
}

/// The shared convolution driver. The conv input is the channel
/// concatenation of `xs` (N, I, D, H, W in all; shapes checked by the
/// callers); the conv's output has `out.c` channels. Forward: `w` is
/// (O, I, k³). Transposed (input gradient, one part): `w` is (I, O, k³) and
/// is read channel-swapped and flipped. `relu`: the last input-channel group
/// stores max(sum, 0).
#[allow(clippy::too_many_arguments)]
fn conv_core(
    ctx: &GpuContext,
    xs: &[&GpuTensor],
    w: &GpuTensor,
    bias: Option<&GpuTensor>,
    transposed: bool,
    relu: bool,
    out_shape: Shape5,
    tile: Tile,
    op: &str,
) -> Result<GpuTensor> {
    check_tile(ctx, op, tile)?;
    let tile = tile.for_layer(out_shape.c, out_shape.h, out_shape.w);
    // Activations (inputs and output) f32, or f16 storage (forward only,
    // where the adapter has shader-f16); weights and bias are f32.
    let dtype = xs[0].dtype;
    if let Some(x) = xs.iter().find(|x| x.dtype != dtype) {
        return Err(Error::shape(op, format!("inputs mix {dtype} and {} tensors", x.dtype)));
    }
    for t in std::iter::once(w).chain(bias) {
        if t.dtype != DType::F32 {
            return Err(Error::shape(op, format!("weights and bias must be f32, not {} ({})", t.dtype, t.shape)));
        }
    }
    if dtype == DType::F16 {
        if transposed {
            return Err(Error::shape(op, "the input gradient is f32 only; this tensor is f16"));
        }
        require(ctx, op, &[Need::ShaderF16])?;
    }
    let k = kernel_size(op, w.shape)?;
    let k3 = k * k * k;
    let s = xs[0].shape;
    let in_c: usize = xs.iter().map(|x| x.shape.c).sum();
    let out_c = out_shape.c;
    let spatial = s.spatial();
    let maxw = ctx.max_window_elems().min(u32::MAX as usize / 2);
    let row_len = w.shape.c * k3; // one dim-0 row of the original weights
    let co_b = tile.co_b as usize;
    if spatial > maxw {
        return Err(too_big(op, "one channel", spatial, ctx));
    }
    if row_len > maxw {
        return Err(too_big(op, "the weights of one output channel", row_len, ctx));
    }

    // Output-channel groups: output window, and (forward) the weight rows read.
    let mut co_g = out_c.min(maxw / spatial);
    if !transposed {
        co_g = co_g.min(maxw / row_len);
    }
    if co_g >= co_b {
        co_g = co_g / co_b * co_b;
    }
    let pad_co = co_g.div_ceil(co_b) * co_b;
    // Input-channel groups: input window, packed weights, (transposed) weight rows.
    let mut ci_g = in_c.min(maxw / spatial).min(maxw / (pad_co * k3));
    if transposed {
        ci_g = ci_g.min(maxw / row_len);
    }
    if ci_g == 0 {
        return Err(too_big(op, "a block of packed weights", pad_co * k3, ctx));
    }

    // The generated CPU kernel's form that reads rows as vec4s, where the
    // layer allows it (and, per dispatch, the input window's base).
    let mut conv_v4 = None;
    let loop_consts = [("WG", tile.wg as f64), ("CO_B", tile.co_b as f64), ("XB", tile.xb as f64), ("K", k as f64)];
    let conv = if tile.is_coop() {
        pipeline_coop(ctx, dtype, &[("SG", tile.wg as f64), ("K", k as f64)])?
    } else if let Kernel::Unrolled { yb, subgroup_weights, .. } = tile.kernel {
        use super::conv3d_unrolled as u;
        let shape = u::Shape {
            k: k as u32,
            co_b: tile.co_b,
            xb: tile.xb,
            yb,
            f16: dtype == DType::F16,
            subgroup_weights,
            vec4_rows: false,
        };
        if u::Shape::vec4_rows_fit(tile.xb, s.w, 0) {
            let v4 = u::Shape { vec4_rows: true, ..shape };
            conv_v4 = Some(ctx.pipeline_trusted(u::source(v4), u::ENTRY, &[("WG", tile.wg as f64)])?);
        }
        ctx.pipeline_trusted(u::source(shape), u::ENTRY, &[("WG", tile.wg as f64)])?
    } else {
        // xb = 4 or 8: the vec4 variant (accumulators in variables, not an array).
        let entry = if tile.xb == 4 || tile.xb == 8 { "conv_forward4" } else { "conv_forward" };
        pipeline_of(ctx, dtype, entry, &loop_consts)?
    };
    // The split form of the loop kernel and its fixed-order finish, where
    // the tile asks for it (check_tile: xb 4 or 8).
    let split_lanes = match tile.kernel {
        Kernel::Loops { split_lanes } => split_lanes,
        _ => 0,
    };
    let split = if split_lanes > 0 {
        Some((
            pipeline_of(ctx, dtype, "conv_forward4_split", &loop_consts)?,
            pipeline_of(ctx, dtype, "conv_split_finish", &[("WG", PACK_WG as f64)])?,
        ))
    } else {
        None
    };
    let pack_consts = [("WG", PACK_WG as f64), ("CO_B", tile.co_b as f64), ("K", k as f64)];
    // One invocation per CO_B packed values; as vec4 stores where CO_B is a
    // multiple of 4 (every conv variant's block; the segment's base is 0).
    let pack_entry = if co_b % 4 == 0 { "pack_weights4" } else { "pack_weights" };
    let pack = pipeline_of(ctx, dtype, pack_entry, &pack_consts)?;
    let out = ctx.empty_as(out_shape, dtype, op)?;
    let label = format!("{op} x {} w {} -> {out_shape}", s.with_c(in_c), w.shape);
    let nxb = s.w.div_ceil(tile.xb as usize);
    // Workgroups per z-plane: each covers `wg` (y, x-block) positions, or
    // (cooperative matrices) 4 row tiles of 16 x-positions. The generated
    // CPU kernel instead counts workgroups per output-channel block over
    // all planes (a workgroup may span planes: on lavapipe a workgroup's
    // lanes are SIMD lanes run one after another, and small planes left
    // most of them computing clamped positions), so its grid has no z
    // factor. The GPU kernels keep one plane per workgroup: on a GPU the
    // idle lanes of an underfilled layer run beside the live ones, so
    // packing would not shorten it (reasoned, not measured on a GPU; on
    // lavapipe packing made the forced f32-4x4 variant slower at 32³).
    let per_wg = if tile.is_coop() { COOP_TILES_PER_WG } else { tile.wg as usize };
    let positions = s.h.div_ceil(tile.rows() as usize) * nxb;
    let unrolled = matches!(tile.kernel, Kernel::Unrolled { .. });
    let (tiles, planes) =
        if unrolled { ((s.d * positions).div_ceil(per_wg), 1) } else { (positions.div_ceil(per_wg), s.d) };
    // Input-channel groups: (part, its channels in the part, the same
    // channels in the concatenation).
    let mut groups = Vec::new();
    let mut c0 = 0;
    for x in xs {
        for r in ranges(x.shape.c, ci_g) {
            groups.push((*x, r.clone(), c0 + r.start..c0 + r.end));
        }
        c0 += x.shape.c;
    }

    for og in ranges(out_c, co_g) {
        let n_cob = og.len().div_ceil(co_b);
        for (gi, (x, local, ig)) in groups.iter().enumerate() {
            let ig = ig.clone();
            // Pack this (output group, input group) of the weights.
            let seg_len = n_cob * co_b * ig.len() * k3;
            // Its own buffer (window base 0), padded to whole vec4s: the
            // vec4 kernel reads it as array<vec4<f32>>.
            let seg_shape = Shape5::new(1, 1, 1, 1, seg_len.div_ceil(4) * 4);
            let seg = ctx.zeros_as(seg_shape, dtype, "conv3d packed weights")?;
            let rows = if transposed { ig.clone() } else { og.clone() };
            let wsrc = w.window(ctx, rows.start * row_len, rows.len() * row_len)?;
            let wseg = seg.window_as(ctx, dtype, 0, seg.numel())?;
            debug_assert_eq!(wseg.base, 0);
            let pp = PackParams {
                o0: og.start as u32,
                o_n: og.len() as u32,
                i0: ig.start as u32,
                i_n: ig.len() as u32,
                c1: w.shape.c as u32,
                transposed: transposed as u32,
                base_src: wsrc.base,
                row0: rows.start as u32,
                total: seg_len as u32,
                base_dst: wseg.base,
                _pad: [0; 2],
            };
            ctx.dispatch(
                &label,
                &pack,
                &[Arg::Buf(&wsrc), Arg::Buf(&wseg), Arg::Uniform(bytemuck::bytes_of(&pp))],
                grid((seg_len / co_b).div_ceil(PACK_WG as usize) as u64),
            )?;
            let wb = match bias {
                Some(b) => b.window(ctx, og.start, og.len())?,
                None => wseg.clone(),
            };
            // Input channels cut into parts where the layer gives too few
            // invocations (split tiles only): f32 partial sums, one
            // buffer for every sample of the group.
            let out_len = og.len() * spatial;
            let lanes = n_cob * planes * positions;
            let (parts, per_part) = split_parts(split_lanes, lanes, ig.len(), maxw / out_len);
            let part = match &split {
                Some(_) if parts > 1 => {
                    let t =
                        ctx.empty_as(Shape5::new(1, 1, 1, 1, parts * out_len), DType::F32, "conv3d partial sums")?;
                    let wpart = t.window(ctx, 0, t.numel())?;
                    Some((t, wpart))
                }
                _ => None,
            };
            for n in 0..s.n {
                let wx = x.window_nc_as(ctx, dtype, &(n..n + 1), &(local.start..local.start + ig.len()))?;
                let wo = out.window_nc_as(ctx, dtype, &(n..n + 1), &og)?;
                let cp = ConvParams {
                    d: s.d as u32,
                    h: s.h as u32,
                    w: s.w as u32,
                    spatial: spatial as u32,
                    ci_n: ig.len() as u32,
                    co_n: og.len() as u32,
                    nxb: nxb as u32,
                    tiles: tiles as u32,
                    base_x: wx.base,
                    base_w: wseg.base,
                    base_b: wb.base,
                    base_out: wo.base,
                    accumulate: (gi > 0) as u32,
                    use_bias: bias.is_some() as u32,
                    n_cob: n_cob as u32,
                    relu: (relu && gi + 1 == groups.len()) as u32,
                    splits: parts as u32,
                    ci_per_split: per_part as u32,
                    base_part: part.as_ref().map_or(0, |(_, w)| w.base),
                    _pad0: 0,
                };
                if let (Some((conv_split, finish)), Some((_, wpart))) = (&split, &part) {
                    let uniform = Arg::Uniform(bytemuck::bytes_of(&cp));
                    ctx.dispatch(
                        &label,
                        conv_split,
                        &[Arg::Buf(&wx), Arg::Buf(&wseg), Arg::Buf(&wb), Arg::Buf(wpart), uniform],
                        grid((parts * n_cob * planes * tiles) as u64),
                    )?;
                    // The finish reads the parts at binding 0 (binding 1 unused).
                    ctx.dispatch(
                        &label,
                        finish,
                        &[
                            Arg::Buf(wpart),
                            Arg::Buf(&wseg),
                            Arg::Buf(&wb),
                            Arg::Buf(&wo),
                            Arg::Uniform(bytemuck::bytes_of(&cp)),
                        ],
                        grid(out_len.div_ceil(PACK_WG as usize) as u64),
                    )?;
                    continue;
                }
                let conv = match &conv_v4 {
                    Some(v4) if super::conv3d_unrolled::Shape::vec4_rows_fit(tile.xb, s.w, wx.base) => v4,
                    _ => &conv,
                };
                ctx.dispatch(
                    &label,
                    conv,
                    &[
                        Arg::Buf(&wx),
                        Arg::Buf(&wseg),
                        Arg::Buf(&wb),
                        Arg::Buf(&wo),
                        Arg::Uniform(bytemuck::bytes_of(&cp)),
                    ],
                    grid((n_cob * planes * tiles) as u64),
                )?;
            }
        }
    }
    Ok(out)
}

/// Gradient of the loss with respect to the weights: (C_out, C_in, k, k, k)
/// from the forward input `x` (N, C_in, D, H, W) and the output gradient `dy`
/// (N, C_out, D, H, W). Deterministic: fixed-order sums, no atomics.
pub fn backward_weight(ctx: &GpuContext, x: &GpuTensor, dy: &GpuTensor, k: usize) -> Result<GpuTensor> {
    backward_weight_with_tile(ctx, x, dy, k, WEIGHT_KERNELS.choose(ctx)?.kernel)
}

/// [`backward_weight`] with an explicit work split (a variant of
/// [`WEIGHT_KERNELS`], or any other within the shader's limits).
pub fn backward_weight_with_tile(
    ctx: &GpuContext,
    x: &GpuTensor,
    dy: &GpuTensor,
    k: usize,
    tile: WeightTile,
) -> Result<GpuTensor> {
    let op = "conv3d backward_weight";
    require(ctx, op, tile.needs())?;
    let block_ok = match tile.kernel {
        WeightKernel::Loops => (1..=8).contains(&tile.co_b),
        WeightKernel::Staged => (1..=8).contains(&tile.co_b) && tile.wg <= STAGED_MAX_WG,
        WeightKernel::Unrolled { xb } => super::conv3d_weight_unrolled::block_valid(tile.co_b, xb),
    };
    let wg_ok = ctx.workgroup_fits(tile.wg);
    if !(block_ok && wg_ok) || tile.max_chunks == 0 {
        return Err(Error::invalid(format!("{op}: work split {tile:?} outside the shader's limits")));
    }
    check_k(op, k)?;
    check_nonempty(op, "input", x.shape)?;
    check_nonempty(op, "output gradient", dy.shape)?;
    let (xs, gs) = (x.shape, dy.shape);
    if xs.n != gs.n || xs.d != gs.d || xs.h != gs.h || xs.w != gs.w {
        return Err(Error::shape(op, format!("input {xs} and output gradient {gs} differ in batch or volume size")));
    }
    let k3 = k * k * k;
    let (cin, cout, spatial, nsamp) = (xs.c, gs.c, xs.spatial(), xs.n);
    let maxw = ctx.max_window_elems().min(u32::MAX as usize / 2);
    let tile = tile.for_layer(cout);
    let co_b = tile.co_b as usize;
    if spatial > maxw {
        return Err(too_big(op, "one channel", spatial, ctx));
    }
    if cin * k3 > maxw {
        return Err(too_big(op, "the weights of one output channel", cin * k3, ctx));
    }

    // Groups: dy window (co), x window (ci), dW rows (co), and the partial
    // buffer (samples x chunks x co x ci x k³, at least one chunk).
    let mut co_g = cout.min(maxw / spatial).min(maxw / (cin * k3));
    let mut ci_g = cin.min(maxw / spatial);
    while nsamp * co_g * ci_g * k3 > maxw {
        if ci_g > 1 && ci_g >= co_g {
            ci_g = ci_g.div_ceil(2);
        } else if co_g > 1 {
            co_g = co_g.div_ceil(2);
        } else {
            return Err(too_big(op, "the weight-gradient partial sums", nsamp * k3, ctx));
        }
    }
    if co_g >= co_b {
        co_g = co_g / co_b * co_b;
    }

    // The generated CPU kernel's form that reads rows as vec4s, where the
    // layer allows it (and, per dispatch, the windows' bases).
    let mut partials_v4 = None;
    let partials = match tile.kernel {
        WeightKernel::Loops | WeightKernel::Staged => {
            let consts = [("WG", tile.wg as f64), ("CO_B", tile.co_b as f64), ("K", k as f64)];
            let entry = if tile.kernel == WeightKernel::Staged { "weight_partials_staged" } else { "weight_partials" };
            pipeline(ctx, entry, &consts)?
        }
        WeightKernel::Unrolled { xb } => {
            use super::conv3d_weight_unrolled as u;
            let shape = u::Shape { k: k as u32, co_b: tile.co_b, xb, vec4: false };
            if u::Shape::vec4_fit(xs.w, 0, 0) {
                let v4 = u::Shape { vec4: true, ..shape };
                partials_v4 = Some(ctx.pipeline_trusted(u::source(v4), u::ENTRY, &[("WG", tile.wg as f64)])?);
            }
            ctx.pipeline_trusted(u::source(shape), u::ENTRY, &[("WG", tile.wg as f64)])?
        }
    };
    let finish_consts = [("WG", PACK_WG as f64), ("K", k as f64)];
    let finish = pipeline(ctx, "weight_finish", &finish_consts)?;
    let finish4 = pipeline(ctx, "weight_finish4", &finish_consts)?;
    let dw_shape = Shape5::new(cout, cin, k, k, k);
    let dw = ctx.empty(dw_shape, op)?;
    let label = format!("{op} x {xs} dy {gs} -> {dw_shape}");

    for og in ranges(cout, co_g) {
        let n_cob = og.len().div_ceil(co_b);
        for ig in ranges(cin, ci_g) {
            let e_n = og.len() * ig.len() * k3;
            let rows = xs.d * xs.h;
            let want = spatial.div_ceil(tile.min_chunk_voxels.max(1)).clamp(1, tile.max_chunks).min(rows);
            let fit = (maxw / (nsamp * e_n)).max(1);
            let chunk_rows = rows.div_ceil(want.min(fit));
            let nchunks = rows.div_ceil(chunk_rows);
            let n_lg = tile.lanes(ig.len(), k).div_ceil(tile.wg as usize);
            let part = ctx.empty(Shape5::new(1, 1, 1, nsamp * nchunks, e_n), "conv3d weight partials")?;
            let wp = part.full_window(ctx)?;
            for n in 0..nsamp {
                let wx = x.window_nc(ctx, &(n..n + 1), &ig)?;
                let wdy = dy.window_nc(ctx, &(n..n + 1), &og)?;
                let p = WeightParams {
                    d: xs.d as u32,
                    h: xs.h as u32,
                    w: xs.w as u32,
                    spatial: spatial as u32,
                    co_n: og.len() as u32,
                    ci_n: ig.len() as u32,
                    n_cob: n_cob as u32,
                    n_lg: n_lg as u32,
                    chunk_rows: chunk_rows as u32,
                    nchunks: nchunks as u32,
                    base_x: wx.base,
                    base_dy: wdy.base,
                    base_part: wp.base + (n * nchunks * e_n) as u32,
                    _pad: [0; 3],
                };
                let partials = match &partials_v4 {
                    Some(v4) if super::conv3d_weight_unrolled::Shape::vec4_fit(xs.w, wx.base, wdy.base) => v4,
                    _ => &partials,
                };
                ctx.dispatch(
                    &label,
                    partials,
                    &[Arg::Buf(&wx), Arg::Buf(&wdy), Arg::Buf(&wp), Arg::Uniform(bytemuck::bytes_of(&p))],
                    grid((nchunks * n_cob * n_lg) as u64),
                )?;
            }
            let wdw = dw.window(ctx, og.start * cin * k3, og.len() * cin * k3)?;
            let fp = FinishParams {
                e_n: e_n as u32,
                m_n: (nsamp * nchunks) as u32,
                ci_n: ig.len() as u32,
                cin_total: cin as u32,
                i0: ig.start as u32,
                base_part: wp.base,
                base_dw: wdw.base,
                _pad: 0,
            };
            // Partials as vec4s where a group's weight row holds whole vec4s
            // (same sums in the same order).
            let (finish, per) = if (ig.len() * k3) % 4 == 0 && wp.base % 4 == 0 { (&finish4, 4) } else { (&finish, 1) };
            ctx.dispatch(
                &label,
                finish,
                &[Arg::Buf(&wp), Arg::Buf(&wdw), Arg::Uniform(bytemuck::bytes_of(&fp))],
                grid((e_n / per).div_ceil(PACK_WG as usize) as u64),
            )?;
        }
    }
    Ok(dw)
}

/// Gradient with respect to the bias: the per-channel sum of `dy`, (1, C_out, 1, 1, 1).
pub fn backward_bias(ctx: &GpuContext, dy: &GpuTensor) -> Result<GpuTensor> {
    check_nonempty("conv3d backward_bias", "output gradient", dy.shape)?;
    crate::ops::reduce::channel_sum(ctx, dy)
}

/// Plain-Rust references (f32 data, f64 accumulation). Shapes are assumed
/// valid (they panic otherwise; the GPU functions check them).
pub mod reference {
    use crate::tensor::{CpuTensor, Shape5};

    /// For tap offset `t - r` along an axis of length `n`: the output range
    /// whose input `o + t - r` lies inside `0..n`.
    fn valid(n: usize, t: usize, r: usize) -> std::ops::Range<usize> {
        let lo = r.saturating_sub(t);
        let hi = (n + r).saturating_sub(t).min(n);
        lo..hi.max(lo)
    }

    /// `acc[o] += wv * src[o + tap - r]` over the whole volume (zero padding).
    fn add_shifted(acc: &mut [f64], src: &[f32], s: Shape5, tap: (usize, usize, usize), r: usize, wv: f64) {
        let (kz, ky, kx) = tap;
        let xr = valid(s.w, kx, r);
        for z in valid(s.d, kz, r) {
            let iz = z + kz - r;
            for y in valid(s.h, ky, r) {
                let iy = y + ky - r;
                let o = (z * s.h + y) * s.w;
                let i = (iz * s.h + iy) * s.w + kx;
                for x in xr.clone() {
                    acc[o + x] += wv * src[i + x - r] as f64;
                }
            }
        }
    }

    /// `y[n, o] = b[o] + Σ_i Σ_tap w[o, i, tap] x[n, i, v + tap − k/2]`.
    pub fn forward(x: &CpuTensor, w: &CpuTensor, b: &CpuTensor) -> CpuTensor {
        let (s, k) = (x.shape, w.shape.d);
        assert_eq!(w.shape.c, s.c, "reference conv3d: channel mismatch");
        let out = Shape5::new(s.n, w.shape.n, s.d, s.h, s.w);
        let mut y = CpuTensor::zeros(out);
        let mut acc = vec![0f64; s.spatial()];
        for n in 0..s.n {
            for o in 0..out.c {
                acc.fill(b.data[o] as f64);
                for i in 0..s.c {
                    let src = x.channel(n, i);
                    for kz in 0..k {
                        for ky in 0..k {
                            for kx in 0..k {
                                let wv = w.at(o, i, kz, ky, kx) as f64;
                                add_shifted(&mut acc, src, s, (kz, ky, kx), k / 2, wv);
                            }
                        }
                    }
                }
                let start = out.idx(n, o, 0, 0, 0);
                for (d, a) in y.data[start..start + s.spatial()].iter_mut().zip(&acc) {
                    *d = *a as f32;
                }
            }
        }
        y
    }

    /// [`super::forward_fused`]: `forward(concat(xs), w, b)`, then ReLU when `relu`.
    pub fn forward_fused(xs: &[&CpuTensor], w: &CpuTensor, b: &CpuTensor, relu: bool) -> CpuTensor {
        let mut x = xs[0].clone();
        for p in &xs[1..] {
            x = crate::ops::concat::reference::forward(&x, p);
        }
        let y = forward(&x, w, b);
        if relu {
            crate::ops::activation::reference::relu_forward(&y)
        } else {
            y
        }
    }

    /// `dx[n, i, v] = Σ_o Σ_tap w[o, i, tap] dy[n, o, v − tap + k/2]`.
    pub fn backward_input(dy: &CpuTensor, w: &CpuTensor) -> CpuTensor {
        let (s, k) = (dy.shape, w.shape.d);
        assert_eq!(w.shape.n, s.c, "reference conv3d backward_input: channel mismatch");
        let out = s.with_c(w.shape.c);
        let mut dx = CpuTensor::zeros(out);
        let mut acc = vec![0f64; s.spatial()];
        for n in 0..s.n {
            for i in 0..out.c {
                acc.fill(0.0);
                for o in 0..s.c {
                    let src = dy.channel(n, o);
                    for kz in 0..k {
                        for ky in 0..k {
                            for kx in 0..k {
                                // dx[v] += w[tap] dy[v - (tap - r)] = w[tap] dy[v + flip(tap) - r]
                                let wv = w.at(o, i, kz, ky, kx) as f64;
                                add_shifted(&mut acc, src, s, (k - 1 - kz, k - 1 - ky, k - 1 - kx), k / 2, wv);
                            }
                        }
                    }
                }
                let start = out.idx(n, i, 0, 0, 0);
                for (d, a) in dx.data[start..start + s.spatial()].iter_mut().zip(&acc) {
                    *d = *a as f32;
                }
            }
        }
        dx
    }

    /// `dw[o, i, tap] = Σ_n Σ_v dy[n, o, v] x[n, i, v + tap − k/2]`.
    pub fn backward_weight(x: &CpuTensor, dy: &CpuTensor, k: usize) -> CpuTensor {
        let s = x.shape;
        let (cin, cout, r) = (s.c, dy.shape.c, k / 2);
        let mut dw = CpuTensor::zeros(Shape5::new(cout, cin, k, k, k));
        for o in 0..cout {
            for i in 0..cin {
                for kz in 0..k {
                    for ky in 0..k {
                        for kx in 0..k {
                            let mut acc = 0f64;
                            for n in 0..s.n {
                                let (g, xi) = (dy.channel(n, o), x.channel(n, i));
                                for z in valid(s.d, kz, r) {
                                    for y in valid(s.h, ky, r) {
                                        let ov = (z * s.h + y) * s.w;
                                        let iv = ((z + kz - r) * s.h + y + ky - r) * s.w + kx;
                                        for xx in valid(s.w, kx, r) {
                                            acc += g[ov + xx] as f64 * xi[iv + xx - r] as f64;
                                        }
                                    }
                                }
                            }
                            let at = dw.shape.idx(o, i, kz, ky, kx);
                            dw.data[at] = acc as f32;
                        }
                    }
                }
            }
        }
        dw
    }

    /// `db[o] = Σ_n Σ_v dy[n, o, v]`.
    pub fn backward_bias(dy: &CpuTensor) -> CpuTensor {
        crate::ops::reduce::reference::channel_sum(dy)
    }
}
