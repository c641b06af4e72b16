//! Transposed 3-D convolution, kernel 2, stride 2, with bias: PyTorch's
//! `ConvTranspose3d(c_in, c_out, kernel_size=2, stride=2)` (`shaders/conv_transpose3d.wgsl`).
//!
//! Shapes: input `x` (N, C_in, D, H, W); weights `w` (C_in, C_out, 2, 2, 2)
//! (PyTorch's layout); bias (1, C_out, 1, 1, 1); output (N, C_out, 2D, 2H, 2W).
//! Every output voxel depends on exactly one input voxel, so the op is a
//! per-voxel (C_in → 8·C_out) matrix product.
//!
//! Large tensors: when input or output is larger than one storage binding the
//! work is split per sample and into channel groups that fit; the sum over
//! reduced-channel groups accumulates into the output in a fixed order. The
//! weights (C_in·C_out·8 values) must fit one binding.
//!
//! The weight gradient is deterministic: per-chunk partial sums, then a
//! fixed-order sum of the partials, no float atomics.
//!
//! Kernel variants ([`KERNELS`], `--gpu-kernel conv_transpose3d=NAME`): on
//! CPU adapters with subgroups of 8+ lanes the forward pass, the input
//! gradient and the weight gradient's partial sums run straight-line
//! kernels generated per block ([`super::conv_transpose3d_unrolled`]:
//! weights, or `dy` for the weight gradient, loaded once per subgroup and
//! broadcast); elsewhere the shader's loop kernels. Both finish the weight
//! gradient with the shader's `weight_finish`.

// One-element vectors of ranges are meant: "one group covering everything".
#![allow(clippy::single_range_in_vec_init)]

use std::ops::Range;

use super::conv_transpose3d_unrolled::{self as unrolled, Pass};
use super::variants::{require, Kernels, Need, Variant};
use crate::error::{Error, Result};
use crate::gpu::{grid, split_units, Arg, GpuContext, GpuTensor, Pipeline, ShaderSource, Window};
use crate::tensor::Shape5;

pub const SHADER: ShaderSource = crate::shader!("conv_transpose3d");

/// Workgroup size of every kernel of this op.
pub const WG: u32 = 64;
/// Output channels per invocation in `forward` (must match the shader's `CO_B`).
pub const CO_B: usize = 4;
/// Input voxels per invocation in `forward` (shader `VB`).
pub const VB: usize = 4;
/// Input channels per invocation in `backward_input` (shader `CI_B`).
pub const CI_B: usize = 8;
/// Input voxels per invocation in `backward_input` (shader `VB_I`).
pub const VB_I: usize = 4;
/// Input channels per invocation in `weight_partials` (shader `CI_BW`).
pub const CI_BW: usize = 8;
/// Input voxels (at least) summed by one invocation of `weight_partials`.
pub const CHUNK_VOXELS: usize = 512;

/// A generated kernel's block: `wg` lanes a workgroup, each writing `ch_b`
/// channels at `xb` consecutive input voxels and summing `red_b` channels
/// a step ([`super::conv_transpose3d_unrolled::Shape`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub wg: u32,
    pub ch_b: u32,
    pub xb: u32,
    pub red_b: u32,
}

/// Which kernels compute the forward pass, the input gradient and the
/// weight gradient's partial sums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// `forward` and `backward_input` of `shaders/conv_transpose3d.wgsl`.
    Loops,
    /// The straight-line kernels generated for CPU adapters, one block per
    /// pass.
    Unrolled { forward: Block, backward_input: Block, weight: WeightBlock },
}

/// The generated weight gradient's block: `wg` lanes a workgroup (a
/// multiple of 8: units of 8 lanes) and the kernel's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightBlock {
    pub wg: u32,
    pub shape: unrolled::WeightShape,
}

impl Kernel {
    fn needs(self) -> &'static [Need] {
        match self {
            Kernel::Loops => &[],
            Kernel::Unrolled { .. } => &[Need::Subgroups8],
        }
    }
}

/// The op's kernels as variants, preferred first. The generated blocks
/// were the fastest of 5 each at the NSN's decoder layers (32 and 64
/// channels, 32³ → 64³) on lavapipe, in two noisy rounds
/// (`tests/ops_conv_transpose3d.rs`, `blocks`; `benches/RESULTS.md`).
pub static KERNELS: Kernels<Kernel> = Kernels {
    op: "conv_transpose3d",
    variants: &[
        Variant {
            name: "cpu-unrolled",
            needs: &[Need::CpuAdapter, Need::Subgroups8],
            about: "generated straight-line WGSL for CPU adapters: forward 8 output channels x 8 input voxels an \
                    invocation, 2 input channels a step; input gradient 32 input channels x 8 voxels, 1 output \
                    channel a step (weights loaded once per subgroup and broadcast); weight gradient 4 input x 4 \
                    output channels x 8 taps a lane, dy loaded once per subgroup",
            kernel: Kernel::Unrolled {
                forward: Block { wg: 32, ch_b: 8, xb: 8, red_b: 2 },
                backward_input: Block { wg: 32, ch_b: 32, xb: 8, red_b: 1 },
                weight: WeightBlock { wg: 32, shape: unrolled::WeightShape { ci_b: 4, co_b: 4, xb: 2 } },
            },
        },
        Variant {
            name: "f32",
            needs: &[],
            about: "f32 loops, any adapter: forward 4 output channels x 4 voxels, input gradient 8 input channels \
                    x 4 voxels an invocation, 64 a workgroup",
            kernel: Kernel::Loops,
        },
    ],
};

uniform_params! {
    #[derive(Default)]
    struct Params {
        samples: u32,
        d: u32,
        h: u32,
        w: u32,
        c_red: u32,
        c_out: u32,
        ci0: u32,
        co0: u32,
        c_out_total: u32,
        src_base: u32,
        src_stride: u32,
        dst_base: u32,
        dst_stride: u32,
        accumulate: u32,
        src2_base: u32,
        src2_stride: u32,
        rows_per_chunk: u32,
        nchunks: u32,
        m_total: u32,
        m0: u32,
        count: u32,
        _pad: [u32; 3],
    }
}

/// Output shape of the transposed convolution of `x` with weights `w`.
pub fn output_shape(x: Shape5, w: Shape5) -> Result<Shape5> {
    let op = "conv_transpose3d";
    if (w.d, w.h, w.w) != (2, 2, 2) {
        return Err(Error::shape(op, format!("weights {w} must be (c_in, c_out, 2, 2, 2)")));
    }
    if w.n != x.c {
        return Err(Error::shape(op, format!("input {x} has {} channels but weights {w} expect {}", x.c, w.n)));
    }
    if x.numel() == 0 || w.c == 0 {
        return Err(Error::shape(op, format!("empty input {x} or weights {w}")));
    }
    Ok(Shape5::new(x.n, w.c, 2 * x.d, 2 * x.h, 2 * x.w))
}

/// Floating-point operations of the forward pass (2 per multiply-add).
pub fn flops(x: Shape5, c_out: usize) -> f64 {
    2.0 * x.numel() as f64 * 8.0 * c_out as f64
}

/// How a dispatch sequence covers the tensors: sample ranges, and channel
/// groups of the reduced (`red`) and written (`out`) operands.
struct Plan {
    samples: Vec<Range<usize>>,
    red: Vec<Range<usize>>,
    out: Vec<Range<usize>>,
}

/// One dispatch for everything when both operands fit a binding; otherwise
/// per sample, with channel groups whose `unit` elements each fit.
fn plan(ctx: &GpuContext, n: usize, red: (usize, usize), out: (usize, usize), op: &str) -> Result<Plan> {
    let maxw = ctx.max_window_elems();
    if n * red.0 * red.1 <= maxw && n * out.0 * out.1 <= maxw {
        return Ok(Plan { samples: vec![0..n], red: vec![0..red.0], out: vec![0..out.0] });
    }
    Ok(Plan {
        samples: (0..n).map(|s| s..s + 1).collect(),
        red: split_units(red.0, red.1, maxw, op)?,
        out: split_units(out.0, out.1, maxw, op)?,
    })
}

fn check_weights(ctx: &GpuContext, w: &GpuTensor, op: &str) -> Result<()> {
    if w.bytes() > ctx.binding_limit() {
        return Err(Error::shape(
            op,
            format!(
                "weights {} ({} bytes) exceed one storage binding ({} bytes)",
                w.shape,
                w.bytes(),
                ctx.binding_limit()
            ),
        ));
    }
    Ok(())
}

/// The pipeline of `entry` of `shaders/conv_transpose3d.wgsl`.
fn shader_pipeline(ctx: &GpuContext, entry: &str) -> Result<std::sync::Arc<Pipeline>> {
    ctx.pipeline(&SHADER, entry, &[("WG", WG as f64)])
}

/// Records `pipeline` (the shader's or a generated kernel: same bindings).
#[allow(clippy::too_many_arguments)]
fn launch(
    ctx: &GpuContext,
    label: &str,
    pipeline: &Pipeline,
    args: [Option<&Window>; 3],
    w: Option<&GpuTensor>,
    b: Option<&GpuTensor>,
    p: &Params,
    workgroups: u64,
) -> Result<()> {
    // Unused bindings get any buffer; the dispatcher skips them.
    let any: &Window = args.iter().flatten().copied().next().expect("a storage argument");
    let buf = |i: usize| Arg::Buf(args[i].unwrap_or(any));
    let wbuf = w.map(|t| &*t.buf).unwrap_or(&any.buf);
    let bbuf = b.map(|t| &*t.buf).unwrap_or(&any.buf);
    ctx.dispatch(
        label,
        pipeline,
        &[buf(0), Arg::Whole(wbuf), Arg::Whole(bbuf), buf(1), Arg::Uniform(bytemuck::bytes_of(p)), buf(2)],
        grid(workgroups),
    )
}

/// Records the forward pass (`src` x, `dst` y) or the input gradient (`src`
/// dy, `dst` dx) over the windows of `pl`: for each block of samples and of
/// `dst`'s channels, one launch per block of `src`'s (reduced) channels, the
/// first writing and the others accumulating. The invocations cover the
/// voxels of the coarse side (x, or dx), `ch_b` written channels and `xb`
/// voxels each.
#[allow(clippy::too_many_arguments)]
fn record(
    ctx: &GpuContext,
    label: &str,
    pass: Pass,
    (pipeline, blk): (&Pipeline, Block),
    pl: &Plan,
    src: &GpuTensor,
    dst: &GpuTensor,
    w: &GpuTensor,
    b: Option<&GpuTensor>,
) -> Result<()> {
    let (ss, ds) = (src.shape, dst.shape);
    let (coarse, fine_c) = match pass {
        Pass::Forward => (ss, ds.c),
        Pass::BackwardInput => (ds, ss.c),
    };
    for s in &pl.samples {
        for out in &pl.out {
            let wdst = dst.window_nc(ctx, s, out)?;
            for (k, red) in pl.red.iter().enumerate() {
                let wsrc = src.window_nc(ctx, s, red)?;
                // The weights are indexed (input channel, output channel)
                // whichever way the data flows.
                let (ci, co) = match pass {
                    Pass::Forward => (red, out),
                    Pass::BackwardInput => (out, red),
                };
                let p = Params {
                    samples: s.len() as u32,
                    d: coarse.d as u32,
                    h: coarse.h as u32,
                    w: coarse.w as u32,
                    c_red: red.len() as u32,
                    c_out: out.len() as u32,
                    ci0: ci.start as u32,
                    co0: co.start as u32,
                    c_out_total: fine_c as u32,
                    src_base: wsrc.base,
                    src_stride: (ss.c * ss.spatial()) as u32,
                    dst_base: wdst.base,
                    dst_stride: (ds.c * ds.spatial()) as u32,
                    accumulate: (k > 0) as u32,
                    ..Default::default()
                };
                let groups = s.len()
                    * out.len().div_ceil(blk.ch_b as usize)
                    * coarse.spatial().div_ceil(blk.wg as usize * blk.xb as usize);
                launch(ctx, label, pipeline, [Some(&wsrc), Some(&wdst), None], Some(w), b, &p, groups as u64)?;
            }
        }
    }
    Ok(())
}

/// The pipeline for `pass` under `kernel`, with the channels and voxels
/// one invocation writes and its workgroup size (for the grid).
fn pass_kernel(ctx: &GpuContext, kernel: Kernel, pass: Pass, op: &str) -> Result<(std::sync::Arc<Pipeline>, Block)> {
    require(ctx, op, kernel.needs())?;
    match kernel {
        Kernel::Loops => {
            let (entry, ch_b, xb) = match pass {
                Pass::Forward => ("forward", CO_B, VB),
                Pass::BackwardInput => ("backward_input", CI_B, VB_I),
            };
            let block = Block { wg: WG, ch_b: ch_b as u32, xb: xb as u32, red_b: 1 };
            Ok((shader_pipeline(ctx, entry)?, block))
        }
        Kernel::Unrolled { forward, backward_input, .. } => {
            let block = if pass == Pass::Forward { forward } else { backward_input };
            let shape = unrolled::Shape { pass, ch_b: block.ch_b, xb: block.xb, red_b: block.red_b };
            let wg_ok = block.wg >= 8 && ctx.workgroup_fits(block.wg);
            if !shape.valid() || !wg_ok {
                return Err(Error::invalid(format!(
                    "{op}: block {block:?} is not supported (ch_b 1..=32, xb 1..=16, red_b 1..=8, wg 8 up to the \
                     adapter's workgroup limit)"
                )));
            }
            // Every index the generated kernel forms is clamped into its
            // window or guarded, as in the shader: built without naga's
            // runtime checks (unless the context asks for them).
            let pipeline = ctx.pipeline_trusted(unrolled::source(shape), pass.entry(), &[("WG", block.wg as f64)])?;
            Ok((pipeline, block))
        }
    }
}

/// `y = conv_transpose3d(x, w) + b`, with the kernel [`KERNELS`] chooses.
pub fn forward(ctx: &GpuContext, x: &GpuTensor, w: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
    forward_with(ctx, x, w, b, KERNELS.choose(ctx)?.kernel)
}

/// [`forward`] with the given kernel (a variant of [`KERNELS`], or another block).
pub fn forward_with(
    ctx: &GpuContext,
    x: &GpuTensor,
    w: &GpuTensor,
    b: &GpuTensor,
    kernel: Kernel,
) -> Result<GpuTensor> {
    let op = "conv_transpose3d forward";
    let ys = output_shape(x.shape, w.shape)?;
    if b.shape != Shape5::new(1, ys.c, 1, 1, 1) {
        return Err(Error::shape(op, format!("bias {} must be (1, {}, 1, 1, 1)", b.shape, ys.c)));
    }
    check_weights(ctx, w, op)?;
    let xs = x.shape;
    let (pipeline, blk) = pass_kernel(ctx, kernel, Pass::Forward, op)?;
    let y = ctx.empty(ys, "conv_transpose3d y")?;
    let pl = plan(ctx, xs.n, (xs.c, xs.spatial()), (ys.c, ys.spatial()), op)?;
    let label = format!("{op} x{xs} w{} -> {ys}", w.shape);
    record(ctx, &label, Pass::Forward, (&pipeline, blk), &pl, x, &y, w, Some(b))?;
    Ok(y)
}

fn check_dy(op: &str, dy: Shape5) -> Result<Shape5> {
    if dy.d % 2 != 0 || dy.h % 2 != 0 || dy.w % 2 != 0 || dy.numel() == 0 {
        return Err(Error::shape(op, format!("gradient {dy} must have even, non-zero spatial sides (2x the input)")));
    }
    Ok(Shape5::new(dy.n, dy.c, dy.d / 2, dy.h / 2, dy.w / 2))
}

/// Gradient with respect to the input: (N, C_in, D, H, W) from `dy` (N,
/// C_out, 2D, 2H, 2W), with the kernel [`KERNELS`] chooses.
pub fn backward_input(ctx: &GpuContext, dy: &GpuTensor, w: &GpuTensor) -> Result<GpuTensor> {
    backward_input_with(ctx, dy, w, KERNELS.choose(ctx)?.kernel)
}

/// [`backward_input`] with the given kernel.
pub fn backward_input_with(ctx: &GpuContext, dy: &GpuTensor, w: &GpuTensor, kernel: Kernel) -> Result<GpuTensor> {
    let op = "conv_transpose3d backward_input";
    let half = check_dy(op, dy.shape)?;
    if (w.shape.d, w.shape.h, w.shape.w) != (2, 2, 2) || w.shape.c != dy.shape.c {
        return Err(Error::shape(
            op,
            format!("weights {} must be (c_in, {}, 2, 2, 2) for gradient {}", w.shape, dy.shape.c, dy.shape),
        ));
    }
    check_weights(ctx, w, op)?;
    let ds = dy.shape;
    let xs = half.with_c(w.shape.n);
    let (pipeline, blk) = pass_kernel(ctx, kernel, Pass::BackwardInput, op)?;
    let dx = ctx.empty(xs, "conv_transpose3d dx")?;
    let pl = plan(ctx, xs.n, (ds.c, ds.spatial()), (xs.c, xs.spatial()), op)?;
    let label = format!("{op} dy{ds} w{} -> {xs}", w.shape);
    record(ctx, &label, Pass::BackwardInput, (&pipeline, blk), &pl, dy, &dx, w, None)?;
    Ok(dx)
}

/// Gradient with respect to the weights: (C_in, C_out, 2, 2, 2), summed over
/// the batch, with the kernel [`KERNELS`] chooses. Deterministic
/// (fixed-order sums).
pub fn backward_weight(ctx: &GpuContext, x: &GpuTensor, dy: &GpuTensor) -> Result<GpuTensor> {
    backward_weight_with(ctx, x, dy, KERNELS.choose(ctx)?.kernel)
}

/// [`backward_weight`] with the given kernel.
pub fn backward_weight_with(ctx: &GpuContext, x: &GpuTensor, dy: &GpuTensor, kernel: Kernel) -> Result<GpuTensor> {
    let op = "conv_transpose3d backward_weight";
    require(ctx, op, kernel.needs())?;
    // The partial-sum kernel, and its workgroups for `rows` (samples x
    // chunks) of `ci` input x `co` output channels.
    type Groups = Box<dyn Fn(usize, usize, usize) -> usize>;
    let (partials, groups_for): (std::sync::Arc<Pipeline>, Groups) = match kernel {
        Kernel::Loops => (
            shader_pipeline(ctx, "weight_partials")?,
            // One lane per (row, output channel, block of CI_BW input channels).
            Box::new(|rows, ci, co| (rows * co * ci.div_ceil(CI_BW)).div_ceil(WG as usize)),
        ),
        Kernel::Unrolled { weight: WeightBlock { wg, shape }, .. } => {
            let wg_ok = wg >= 8 && wg % 8 == 0 && ctx.workgroup_fits(wg);
            if !shape.valid() || !wg_ok {
                return Err(Error::invalid(format!(
                    "{op}: weight block {shape:?} with {wg} lanes is not supported (ci_b 1..=16, co_b 1..=8, \
                     xb 1..=8, wg a multiple of 8 up to the adapter's workgroup limit)"
                )));
            }
            // Each 8 lanes are one unit that broadcasts among itself: with
            // subgroups wider than 8 lanes one workgroup of 8 is one
            // (partly filled) subgroup, so no subgroup holds two units.
            let wg = if ctx.info.subgroup_max_size > 8 { 8 } else { wg };
            let src = unrolled::weight_source(shape);
            let (co_b, ci_unit, units_per_group) =
                (shape.co_b as usize, shape.ci_per_subgroup() as usize, wg as usize / 8);
            (
                ctx.pipeline_trusted(src, unrolled::WEIGHT_ENTRY, &[("WG", wg as f64)])?,
                Box::new(move |rows, ci, co| {
                    (rows * co.div_ceil(co_b) * ci.div_ceil(ci_unit)).div_ceil(units_per_group)
                }),
            )
        }
    };
    let half = check_dy(op, dy.shape)?;
    let (xs, ds) = (x.shape, dy.shape);
    if half.with_c(xs.c) != xs {
        return Err(Error::shape(op, format!("gradient {ds} must be (n, c_out, 2d, 2h, 2w) for input {xs}")));
    }
    let (cin, cout) = (xs.c, ds.c);
    let maxw = ctx.max_window_elems();
    // Chunks of whole input rows, about CHUNK_VOXELS voxels (more with many
    // input channels, to keep the partials no larger than the input), and few
    // enough that the partials of one input channel fit one binding.
    let rows = xs.d * xs.h;
    let target = CHUNK_VOXELS.max(cin);
    let mut rpc = target.div_ceil(xs.w).clamp(1, rows);
    let mut nchunks = rows.div_ceil(rpc);
    let per_ci = |nchunks: usize| cout * 8 * xs.n * nchunks;
    if per_ci(nchunks) > maxw {
        nchunks = (maxw / (cout * 8 * xs.n)).max(1);
        rpc = rows.div_ceil(nchunks);
        nchunks = rows.div_ceil(rpc);
    }
    let m_total = xs.n * nchunks;
    let part = ctx.empty(Shape5::new(cin, cout * 8, 1, 1, m_total), "conv_transpose3d dw partials")?;
    let dw = ctx.empty(Shape5::new(cin, cout, 2, 2, 2), "conv_transpose3d dw")?;

    let unit_ci = xs.spatial().max(cout * 8 * m_total);
    let all_fit = x.numel() <= maxw && dy.numel() <= maxw && part.numel() <= maxw;
    let (samples, ci_groups, co_groups): (Vec<Range<usize>>, _, _) = if all_fit {
        (vec![0..xs.n], vec![0..cin], vec![0..cout])
    } else {
        (
            (0..xs.n).map(|s| s..s + 1).collect(),
            split_units(cin, unit_ci, maxw, op)?,
            split_units(cout, ds.spatial(), maxw, op)?,
        )
    };
    let label = format!("{op} x{xs} dy{ds}");
    for s in &samples {
        for ci in &ci_groups {
            let wx = x.window_nc(ctx, s, ci)?;
            let wp = part.window(ctx, ci.start * cout * 8 * m_total, ci.len() * cout * 8 * m_total)?;
            for co in &co_groups {
                let wdy = dy.window_nc(ctx, s, co)?;
                let p = Params {
                    samples: s.len() as u32,
                    d: xs.d as u32,
                    h: xs.h as u32,
                    w: xs.w as u32,
                    c_red: ci.len() as u32,
                    c_out: co.len() as u32,
                    ci0: ci.start as u32,
                    co0: co.start as u32,
                    c_out_total: cout as u32,
                    src_base: wx.base,
                    src_stride: (cin * xs.spatial()) as u32,
                    dst_base: wp.base,
                    src2_base: wdy.base,
                    src2_stride: (cout * ds.spatial()) as u32,
                    rows_per_chunk: rpc as u32,
                    nchunks: nchunks as u32,
                    m_total: m_total as u32,
                    m0: (s.start * nchunks) as u32,
                    ..Default::default()
                };
                let groups = groups_for(s.len() * nchunks, ci.len(), co.len()) as u64;
                launch(ctx, &label, &partials, [Some(&wx), Some(&wp), Some(&wdy)], None, None, &p, groups)?;
            }
        }
    }
    for ci in &ci_groups {
        let count = ci.len() * cout * 8;
        let wp = part.window(ctx, ci.start * cout * 8 * m_total, count * m_total)?;
        let wdw = dw.window(ctx, ci.start * cout * 8, count)?;
        let p = Params {
            src_base: wp.base,
            dst_base: wdw.base,
            m_total: m_total as u32,
            count: count as u32,
            ..Default::default()
        };
        let pipeline = shader_pipeline(ctx, "weight_finish")?;
        let groups = count.div_ceil(WG as usize) as u64;
        launch(ctx, &label, &pipeline, [Some(&wp), Some(&wdw), None], None, None, &p, groups)?;
    }
    Ok(dw)
}

/// Gradient with respect to the bias: per-channel sum of `dy`, (1, C_out, 1, 1, 1).
pub fn backward_bias(ctx: &GpuContext, dy: &GpuTensor) -> Result<GpuTensor> {
    crate::ops::reduce::channel_sum(ctx, dy)
}

/// Plain-Rust reference (f64 accumulation). Panics on inconsistent shapes:
/// it is a test oracle, not an entry point for user data.
pub mod reference {
    use crate::tensor::{CpuTensor, Shape5};

    pub fn forward(x: &CpuTensor, w: &CpuTensor, b: &CpuTensor) -> CpuTensor {
        let ys = super::output_shape(x.shape, w.shape).expect("conv_transpose3d reference shapes");
        let xs = x.shape;
        assert_eq!(b.data.len(), ys.c);
        let mut y = CpuTensor::zeros(ys);
        for n in 0..xs.n {
            for co in 0..ys.c {
                for z in 0..ys.d {
                    for yy in 0..ys.h {
                        for xx in 0..ys.w {
                            let mut acc = b.data[co] as f64;
                            for ci in 0..xs.c {
                                acc += x.at(n, ci, z / 2, yy / 2, xx / 2) as f64
                                    * w.at(ci, co, z % 2, yy % 2, xx % 2) as f64;
                            }
                            y.data[ys.idx(n, co, z, yy, xx)] = acc as f32;
                        }
                    }
                }
            }
        }
        y
    }

    pub fn backward_input(dy: &CpuTensor, w: &CpuTensor) -> CpuTensor {
        let ds = dy.shape;
        assert_eq!(w.shape.c, ds.c);
        let xs = Shape5::new(ds.n, w.shape.n, ds.d / 2, ds.h / 2, ds.w / 2);
        let mut dx = CpuTensor::zeros(xs);
        for n in 0..xs.n {
            for ci in 0..xs.c {
                for z in 0..xs.d {
                    for y in 0..xs.h {
                        for x in 0..xs.w {
                            let mut acc = 0f64;
                            for co in 0..ds.c {
                                for (a, b, c) in taps() {
                                    acc += dy.at(n, co, 2 * z + a, 2 * y + b, 2 * x + c) as f64
                                        * w.at(ci, co, a, b, c) as f64;
                                }
                            }
                            dx.data[xs.idx(n, ci, z, y, x)] = acc as f32;
                        }
                    }
                }
            }
        }
        dx
    }

    pub fn backward_weight(x: &CpuTensor, dy: &CpuTensor) -> CpuTensor {
        let (xs, ds) = (x.shape, dy.shape);
        assert_eq!((ds.n, ds.d, ds.h, ds.w), (xs.n, 2 * xs.d, 2 * xs.h, 2 * xs.w));
        let ws = Shape5::new(xs.c, ds.c, 2, 2, 2);
        let mut dw = CpuTensor::zeros(ws);
        for ci in 0..xs.c {
            for co in 0..ds.c {
                for (a, b, c) in taps() {
                    let mut acc = 0f64;
                    for n in 0..xs.n {
                        for z in 0..xs.d {
                            for y in 0..xs.h {
                                for xx in 0..xs.w {
                                    acc += x.at(n, ci, z, y, xx) as f64
                                        * dy.at(n, co, 2 * z + a, 2 * y + b, 2 * xx + c) as f64;
                                }
                            }
                        }
                    }
                    dw.data[ws.idx(ci, co, a, b, c)] = acc as f32;
                }
            }
        }
        dw
    }

    pub fn backward_bias(dy: &CpuTensor) -> CpuTensor {
        crate::ops::reduce::reference::channel_sum(dy)
    }

    fn taps() -> impl Iterator<Item = (usize, usize, usize)> {
        (0..8).map(|t| (t >> 2, (t >> 1) & 1, t & 1))
    }
}
