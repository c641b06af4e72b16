//! The op table: every op case stated once, for the tests and for `bench`.
//!
//! A case is one op in one direction (`conv3d fwd`, `conv3d bwd-input`, …)
//! at one variant (channels, kernel size, loss weights, register tile, input
//! kind). It states how to make its random inputs at a batch and spatial
//! extent ([`Dims`]; never zeros or constants), its GPU version, its CPU
//! reference (the op module's `reference`, f64 accumulation), the relative
//! error it must stay within, the small odd shapes the tests run it at
//! (uncapped and under a capped storage binding, [`Check`]), and whether
//! `bench` times it at the layer shapes of the networks ([`Bench`]).
//!
//! `tests/ops_table.rs` runs every case at its checks with NaN-poisoned
//! outputs; `qcanet-gpu bench` runs the [`Bench`] cases at cube sides and
//! reports each one's error against the same tolerance. Adding an op or a
//! kernel variant is a shader, its op module and an entry here.
//!
//! [`grad_cases`] holds each reference backward to central differences of
//! its reference forward (a [`GradCase`]: inputs, scalar loss, reference
//! gradients, step and tolerance), which `tests/ops_table.rs` runs too.

use std::fmt;
use std::time::Instant;

use super::batchnorm::{self, BnConfig, BnSaved};
use super::optim::{reference::CpuOptimizer, AdamConfig, Optimizer, OptimizerConfig, SgdConfig};
use super::variants::Need;
use super::{
    activation, cast, concat, conv3d, conv_transpose3d, conv_transpose3d_unrolled, elementwise, loss, pool, reduce,
    softmax,
};
use crate::error::Result;
use crate::gpu::{DType, GpuContext, GpuTensor};
use crate::tensor::{rel_err, CpuTensor, Shape5};

/// Batch size and spatial extent of a run; a case picks its own channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dims {
    pub n: usize,
    pub d: usize,
    pub h: usize,
    pub w: usize,
}

impl Dims {
    pub const fn new(n: usize, d: usize, h: usize, w: usize) -> Self {
        Dims { n, d, h, w }
    }
    /// One sample of `s`³ voxels (the benchmark shapes).
    pub const fn cube(s: usize) -> Self {
        Dims { n: 1, d: s, h: s, w: s }
    }
    /// The tensor shape with `c` channels.
    pub const fn with_c(self, c: usize) -> Shape5 {
        Shape5::new(self.n, c, self.d, self.h, self.w)
    }
    /// Every side halved (at least 1): the input of a stride-2 upsampling.
    pub fn half(self) -> Dims {
        Dims { n: self.n, d: (self.d / 2).max(1), h: (self.h / 2).max(1), w: (self.w / 2).max(1) }
    }
    pub const fn spatial(self) -> usize {
        self.d * self.h * self.w
    }
}

impl fmt::Display for Dims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.n != 1 {
            write!(f, "{}x", self.n)?;
        }
        if self.d == self.h && self.h == self.w {
            write!(f, "{}^3", self.d)
        } else {
            write!(f, "{}x{}x{}", self.d, self.h, self.w)
        }
    }
}

/// What a case's work counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Unit {
    /// Floating-point operations: rate in GFLOP/s.
    Flop,
    /// Bytes read and written: rate in GB/s.
    Byte,
}

/// Whether `bench` times a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bench {
    /// Tests only (small variants, kernel variants).
    No,
    /// Every benchmark run.
    Yes,
    /// Only with `--full` (the widest layers).
    Full,
}

/// One test run of a case: an extent, and optionally a cap on the bytes one
/// storage binding may cover, small enough that the case's tensors are bound
/// as windows (the split path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Check {
    pub dims: Dims,
    pub max_binding: Option<u64>,
}

/// An uncapped check at `n` samples of `d`×`h`×`w`.
pub const fn at(n: usize, d: usize, h: usize, w: usize) -> Check {
    Check { dims: Dims::new(n, d, h, w), max_binding: None }
}

/// A check at `n` samples of `d`×`h`×`w` with storage bindings capped at `bytes`.
pub const fn capped(bytes: u64, n: usize, d: usize, h: usize, w: usize) -> Check {
    Check { dims: Dims::new(n, d, h, w), max_binding: Some(bytes) }
}

pub type InputsFn = Box<dyn Fn(Dims) -> Vec<CpuTensor>>;
pub type GpuFn = Box<dyn Fn(&GpuContext, &[GpuTensor]) -> Result<Vec<GpuTensor>>>;
pub type CpuFn = Box<dyn Fn(&[CpuTensor]) -> Vec<CpuTensor>>;
/// A scalar loss of reference forwards, for finite differences ([`GradCase`]).
pub type LossFn = Box<dyn Fn(&[CpuTensor]) -> f64>;

/// One op, direction and variant.
pub struct OpCase {
    /// Op and direction, e.g. `conv3d bwd-input`.
    pub op: &'static str,
    /// Channels, kernel, settings, e.g. `16->16 k3`.
    pub variant: String,
    pub unit: Unit,
    /// Largest `‖gpu − ref‖ / ‖ref‖` allowed for each output (0: exact).
    pub tol: f64,
    /// Shape description at an extent.
    pub shape: Box<dyn Fn(Dims) -> String>,
    /// Work (flops or bytes) at an extent.
    pub work: Box<dyn Fn(Dims) -> f64>,
    /// Random inputs at an extent (reproducible).
    pub inputs: InputsFn,
    /// The GPU version; it must not change its inputs.
    pub gpu: GpuFn,
    /// The CPU reference, output for output.
    pub cpu: CpuFn,
    /// Smallest cube side at which `bench` runs it.
    pub min_side: usize,
    /// Where the tests run it.
    pub checks: Vec<Check>,
    pub bench: Bench,
    /// Adapter capabilities the GPU version needs (f16 kernels): where one
    /// is missing, the tests and `bench` report the case as not run.
    pub needs: Vec<Need>,
}

/// The outcome of running a case on both devices at one extent.
#[derive(Clone, Debug)]
pub struct Compared {
    /// Relative error of each output.
    pub errors: Vec<f64>,
    /// Shape mismatches, no or all-zero reference outputs, runs that differ.
    pub problems: Vec<String>,
    /// Seconds the CPU reference took.
    pub cpu_s: f64,
    /// Bytes of the largest input or output tensor.
    pub largest_bytes: u64,
}

impl Compared {
    /// The largest error (NaN if any is NaN).
    pub fn max_error(&self) -> f64 {
        self.errors.iter().fold(0.0, |m, &e| if e.is_nan() || m.is_nan() { f64::NAN } else { m.max(e) })
    }
    /// Within `tol` on every output (NaN fails) and no problem.
    pub fn passes(&self, tol: f64) -> bool {
        self.problems.is_empty() && self.errors.iter().all(|&e| e <= tol)
    }
}

impl OpCase {
    /// `op variant`, as tables and filters show it.
    pub fn name(&self) -> String {
        format!("{} {}", self.op, self.variant)
    }

    /// Runs the case at `dims` on `ctx` and on the CPU and compares outputs.
    /// With `twice` the GPU runs a second time and must give bit-identical
    /// outputs.
    pub fn compare(&self, ctx: &GpuContext, dims: Dims, twice: bool) -> Result<Compared> {
        let inputs = (self.inputs)(dims);
        let g: Vec<GpuTensor> = inputs.iter().map(|t| ctx.upload(t)).collect::<Result<_>>()?;
        let gpu: Vec<CpuTensor> = (self.gpu)(ctx, &g)?.iter().map(|t| ctx.download(t)).collect::<Result<_>>()?;
        let mut problems = Vec::new();
        if twice {
            let again: Vec<CpuTensor> = (self.gpu)(ctx, &g)?.iter().map(|t| ctx.download(t)).collect::<Result<_>>()?;
            for (i, (a, b)) in gpu.iter().zip(&again).enumerate() {
                if a.data.iter().zip(&b.data).any(|(x, y)| x.to_bits() != y.to_bits()) {
                    problems.push(format!("output {i} differs between two runs"));
                }
            }
        }
        let t0 = Instant::now();
        let cpu = (self.cpu)(&inputs);
        let cpu_s = t0.elapsed().as_secs_f64();
        if cpu.is_empty() {
            problems.push("the reference gave no outputs, the check would prove nothing".to_string());
        }
        if gpu.len() != cpu.len() {
            problems.push(format!("{} GPU outputs, {} reference outputs", gpu.len(), cpu.len()));
        }
        let mut errors = Vec::new();
        for (i, (a, b)) in gpu.iter().zip(&cpu).enumerate() {
            if a.shape != b.shape {
                problems.push(format!("output {i}: shape {} vs reference {}", a.shape, b.shape));
                errors.push(f64::NAN);
                continue;
            }
            if b.data.iter().all(|&v| v == 0.0) {
                problems.push(format!("output {i}: reference is all zeros, the check would prove nothing"));
            }
            errors.push(rel_err(&a.data, &b.data));
        }
        let largest_bytes = inputs.iter().chain(&cpu).map(|t| t.shape.f32_bytes()).max().unwrap_or(0);
        Ok(Compared { errors, problems, cpu_s, largest_bytes })
    }
}

/// A case with default shape text, no work and no checks; the builders fill it in.
fn case(op: &'static str, variant: impl Into<String>, unit: Unit, tol: f64) -> OpCase {
    OpCase {
        op,
        variant: variant.into(),
        unit,
        tol,
        shape: Box::new(|d| d.to_string()),
        work: Box::new(|_| 0.0),
        inputs: Box::new(|_| Vec::new()),
        gpu: Box::new(|_, _| Ok(Vec::new())),
        cpu: Box::new(|_| Vec::new()),
        min_side: 4,
        checks: Vec::new(),
        bench: Bench::No,
        needs: Vec::new(),
    }
}

impl OpCase {
    fn shape(mut self, f: impl Fn(Dims) -> String + 'static) -> Self {
        self.shape = Box::new(f);
        self
    }
    fn work(mut self, f: impl Fn(Dims) -> f64 + 'static) -> Self {
        self.work = Box::new(f);
        self
    }
    fn inputs(mut self, f: impl Fn(Dims) -> Vec<CpuTensor> + 'static) -> Self {
        self.inputs = Box::new(f);
        self
    }
    fn gpu(mut self, f: impl Fn(&GpuContext, &[GpuTensor]) -> Result<Vec<GpuTensor>> + 'static) -> Self {
        self.gpu = Box::new(f);
        self
    }
    fn cpu(mut self, f: impl Fn(&[CpuTensor]) -> Vec<CpuTensor> + 'static) -> Self {
        self.cpu = Box::new(f);
        self
    }
    fn checks(mut self, c: &[Check]) -> Self {
        self.checks = c.to_vec();
        self
    }
    fn bench(mut self, b: Bench) -> Self {
        self.bench = b;
        self
    }
    fn needs(mut self, n: &[Need]) -> Self {
        self.needs = n.to_vec();
        self
    }
    /// The first capability the case needs that `ctx` lacks.
    pub fn unmet_need(&self, ctx: &GpuContext) -> Option<Need> {
        self.needs.iter().copied().find(|n| !n.met(ctx))
    }
}

/// Uniform values in [-1, 1).
fn rnd(shape: Shape5, seed: u64) -> CpuTensor {
    CpuTensor::random(shape, seed, -1.0, 1.0)
}

/// A loss value as a one-element tensor.
fn scalar(v: f64) -> CpuTensor {
    CpuTensor::from_vec(Shape5::new(1, 1, 1, 1, 1), vec![v as f32])
}

/// Random values with ties: about a third drawn from {-0.5, 0, 0.25, 0.5}, so
/// many 2×2×2 windows have several equal maxima.
pub fn with_ties(shape: Shape5, seed: u64) -> CpuTensor {
    let mut t = rnd(shape, seed);
    let levels = [-0.5f32, 0.0, 0.25, 0.5];
    for (i, v) in t.data.iter_mut().enumerate() {
        let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(seed) >> 40;
        if h % 3 == 0 {
            *v = levels[(h / 3 % 4) as usize];
        }
    }
    t
}

/// Random values whose planes z = 0 and 1 of every channel are all 0.5: the
/// first row of windows is flat, so the first tap must win.
pub fn flat_windows(shape: Shape5, seed: u64) -> CpuTensor {
    let mut t = rnd(shape, seed);
    let plane = 2 * shape.h * shape.w;
    t.data.iter_mut().enumerate().for_each(|(i, v)| {
        if i % shape.spatial() < plane {
            *v = 0.5
        }
    });
    t
}

/// Class indices 0..k as f32, reproducible; every class present.
pub fn classes(shape: Shape5, k: usize, seed: u64) -> CpuTensor {
    let mut t = CpuTensor::random(shape, seed, 0.0, k as f32);
    t.data.iter_mut().for_each(|v| *v = v.floor().min(k as f32 - 1.0));
    for c in 0..k.min(t.data.len()) {
        t.data[c] = c as f32;
    }
    t
}

/// 0/1 targets, about 30 % ones.
pub fn binary(shape: Shape5, seed: u64) -> CpuTensor {
    let mut t = CpuTensor::random(shape, seed, 0.0, 1.0);
    t.data.iter_mut().for_each(|v| *v = if *v < 0.3 { 1.0 } else { 0.0 });
    t
}

/// f32 sums of up to a few thousand products against f64.
const TOL_SUM: f64 = 1e-5;
/// The cooperative-matrix conv: inputs and weights rounded to f16, f32 sums.
const TOL_COOP: f64 = 5e-3;
/// Element-wise maps (one rounding or a libm exp).
const TOL_MAP: f64 = 1e-6;

/// conv3d k×k×k, c_in → c_out: forward, the input, weight and bias gradients.
/// A layer of a network is named after it (`NSN 16->16`), others by channels
/// and kernel (`3->5 k1`).
fn conv3d_cases(
    v: &mut Vec<OpCase>,
    net: Option<&str>,
    k: usize,
    ci: usize,
    co: usize,
    bench: Bench,
    checks: &[Check],
) {
    let var = match net {
        Some(net) => format!("{net} {ci}->{co}"),
        None => format!("{ci}->{co} k{k}"),
    };
    let ws = Shape5::new(co, ci, k, k, k);
    let b = Shape5::new(1, co, 1, 1, 1);
    let shape = move |d: Dims| format!("{ci}->{co} k{k} {d}");
    let work = move |d: Dims| conv3d::flops(d.with_c(ci), co, k);
    let c = |op| case(op, var.clone(), Unit::Flop, TOL_SUM).shape(shape).work(work).checks(checks).bench(bench);
    v.push(
        c("conv3d fwd")
            .inputs(move |d| vec![rnd(d.with_c(ci), 1), rnd(ws, 2), rnd(b, 3)])
            .gpu(|ctx, t| Ok(vec![conv3d::forward(ctx, &t[0], &t[1], &t[2])?]))
            .cpu(|t| vec![conv3d::reference::forward(&t[0], &t[1], &t[2])]),
    );
    v.push(
        c("conv3d bwd-input")
            .inputs(move |d| vec![rnd(d.with_c(co), 4), rnd(ws, 2)])
            .gpu(|ctx, t| Ok(vec![conv3d::backward_input(ctx, &t[0], &t[1])?]))
            .cpu(|t| vec![conv3d::reference::backward_input(&t[0], &t[1])]),
    );
    v.push(
        c("conv3d bwd-weight")
            .inputs(move |d| vec![rnd(d.with_c(ci), 1), rnd(d.with_c(co), 4)])
            .gpu(move |ctx, t| Ok(vec![conv3d::backward_weight(ctx, &t[0], &t[1], k)?]))
            .cpu(move |t| vec![conv3d::reference::backward_weight(&t[0], &t[1], k)]),
    );
    if bench == Bench::No {
        // The bias gradient is a channel sum: benchmarked as channel_sum.
        v.push(
            case("conv3d bwd-bias", var, Unit::Byte, TOL_SUM)
                .work(move |d| 4.0 * d.with_c(co).numel() as f64)
                .inputs(move |d| vec![rnd(d.with_c(co), 4)])
                .gpu(|ctx, t| Ok(vec![conv3d::backward_bias(ctx, &t[0])?]))
                .cpu(|t| vec![conv3d::reference::backward_bias(&t[0])])
                .checks(checks),
        );
    }
}

/// conv3d's weight gradient at an explicit work split (a registered
/// variant of [`conv3d::WEIGHT_KERNELS`], `label` its name in brackets):
/// odd shapes uncapped and capped, and an NSN and an NDN layer that
/// `bench` times side by side.
/// Checks at rows of a multiple of 4 voxels, where the generated conv
/// kernels read rows as vec4s: a last x-block past the row (20), split
/// under 4 KiB bindings, 8 voxels on 33 rows, 4 voxels.
const ROWS_OF_4: [Check; 4] = [at(2, 4, 7, 20), capped(4096, 2, 4, 7, 20), at(1, 3, 33, 8), at(2, 5, 9, 4)];

fn conv3d_weight_tile_cases(
    v: &mut Vec<OpCase>,
    label: &str,
    tile: conv3d::WeightTile,
    needs: &'static [Need],
    small: &[Check],
) {
    // Odd rows; rows longer than the staged kernel's 64-voxel segments (a
    // full one and a partial one); then rows of a multiple of 4 voxels (the
    // generated kernel reads them as vec4s).
    let long = at(1, 2, 3, 75);
    let odd = [&[at(2, 4, 7, 19), capped(4096, 2, 4, 7, 19), at(1, 6, 9, 37), long][..], &ROWS_OF_4].concat();
    let one_each = [odd[0], long, ROWS_OF_4[0], ROWS_OF_4[3]];
    for (layer, k, ci, co, bench, checks) in [
        (None, 3usize, 5usize, 7usize, Bench::No, &odd[..]),
        (None, 5, 3, 11, Bench::No, &one_each[..]),
        (None, 7, 2, 17, Bench::No, &one_each[..]),
        (None, 1, 6, 3, Bench::No, &one_each[..]),
        (Some("NSN"), 3, 16, 16, Bench::Yes, small),
        (Some("NDN"), 5, 12, 12, Bench::Yes, small),
    ] {
        let var = match layer {
            Some(net) => format!("{net} {ci}->{co} [{label}]"),
            None => format!("{ci}->{co} k{k} [{label}]"),
        };
        v.push(
            case("conv3d bwd-weight", var, Unit::Flop, TOL_SUM)
                .shape(move |d| format!("{ci}->{co} k{k} {d}"))
                .work(move |d| conv3d::flops(d.with_c(ci), co, k))
                .checks(checks)
                .bench(bench)
                .inputs(move |d| vec![rnd(d.with_c(ci), 1), rnd(d.with_c(co), 4)])
                .needs(needs)
                .gpu(move |ctx, t| Ok(vec![conv3d::backward_weight_with_tile(ctx, &t[0], &t[1], k, tile)?]))
                .cpu(move |t| vec![conv3d::reference::backward_weight(&t[0], &t[1], k)]),
        );
    }
}

/// conv3d forward and input gradient at an explicit register tile: a
/// registered kernel variant (`label` is its name, in brackets in the case's
/// variant) or an extra tile the shader must also handle. `layer`: a
/// network layer (`NSN 16->16`, k, channels) for benchmarking variants side
/// by side; `None`: 5 -> 7 channels, k3 (off every register blocking).
fn conv3d_tile_cases(
    v: &mut Vec<OpCase>,
    label: &str,
    tile: conv3d::Tile,
    needs: &'static [Need],
    layer: Option<(&str, usize, usize)>,
    bench: Bench,
    checks: &[Check],
) {
    // The cooperative-matrix kernel rounds inputs and weights to f16 (sums
    // in f32): about 2^-11 per product, so 5e-3 relative to the output.
    let tol = if tile.is_coop() { TOL_COOP } else { TOL_SUM };
    let (k, ci, co) = match layer {
        Some((_, k, c)) => (k, c, c),
        None => (3usize, 5usize, 7usize),
    };
    let ws = Shape5::new(co, ci, k, k, k);
    let b = Shape5::new(1, co, 1, 1, 1);
    let var = match layer {
        Some((net, _, _)) => format!("{net} {ci}->{co} [{label}]"),
        None => format!("{ci}->{co} k{k} [{label}]"),
    };
    let shape = move |d: Dims| format!("{ci}->{co} k{k} {d}");
    let work = move |d: Dims| conv3d::flops(d.with_c(ci), co, k);
    v.push(
        case("conv3d fwd", var.clone(), Unit::Flop, tol)
            .shape(shape)
            .work(work)
            .inputs(move |d| vec![rnd(d.with_c(ci), 71), rnd(ws, 72), rnd(b, 73)])
            .gpu(move |ctx, t| Ok(vec![conv3d::forward_with_tile(ctx, &t[0], &t[1], &t[2], tile)?]))
            .cpu(|t| vec![conv3d::reference::forward(&t[0], &t[1], &t[2])])
            .checks(checks)
            .bench(bench)
            .needs(needs),
    );
    v.push(
        case("conv3d bwd-input", var, Unit::Flop, tol)
            .shape(shape)
            .work(work)
            .inputs(move |d| vec![rnd(d.with_c(co), 74), rnd(ws, 72)])
            .gpu(move |ctx, t| Ok(vec![conv3d::backward_input_with_tile(ctx, &t[0], &t[1], tile)?]))
            .cpu(|t| vec![conv3d::reference::backward_input(&t[0], &t[1])])
            .checks(checks)
            .bench(bench)
            .needs(needs),
    );
}

/// The inference conv ([`conv3d::forward_fused`]): the input given as parts
/// (the decoder's skip concatenation, never built), k×k×k, bias, and ReLU
/// applied once the sum over every part is complete. Biases in [-1, 1), so
/// about half the outputs are negative and the ReLU is exercised.
///
/// With `dtype` f16 (needs shader-f16) the parts are cast to f16 on the GPU
/// (activations read and written as f16, weights packed to f16, sums in
/// f32), and the reference is the f32 reference on the parts and weights
/// rounded to f16, its output rounded to f16: the GPU differs by the order
/// of its f32 sums and by one f16 rounding of each partial sum between
/// input-channel groups (see [`conv3d`]), hence 1e-3.
///
/// `tile`: a registered variant's (its name, in brackets in the case's
/// variant), or `None` for the tile the adapter chooses. The case needs
/// what the storage type needs and what the tile's kernel needs.
#[allow(clippy::too_many_arguments)]
fn conv3d_fused_cases(
    v: &mut Vec<OpCase>,
    tile: Option<(&str, conv3d::Tile)>,
    net: Option<&str>,
    k: usize,
    parts: &[usize],
    co: usize,
    relu: bool,
    dtype: DType,
    bench: Bench,
    checks: &[Check],
) {
    let parts = parts.to_vec();
    let ci: usize = parts.iter().sum();
    let list = parts.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("+");
    let act = if relu { " relu" } else { "" };
    let half = dtype == DType::F16;
    // Tagged with the `activations` storage variant it checks.
    let ty = if half { " f16" } else { "" };
    let tag = match tile {
        Some((name, _)) => format!("[{name}{}]", if half { ", f16" } else { "" }),
        None if half => "[f16]".to_string(),
        None => "[f32]".to_string(),
    };
    let tile = tile.map(|(_, t)| t);
    let var = match net {
        Some(net) => format!("{net} {list}->{co}{act} {tag}"),
        None => format!("{list}->{co} k{k}{act} {tag}"),
    };
    let ws = Shape5::new(co, ci, k, k, k);
    let b = Shape5::new(1, co, 1, 1, 1);
    let np = parts.len();
    // f32 storage on the cooperative-matrix kernel: inputs rounded to f16
    // in the kernel (TOL_COOP); with f16 storage they already are, as the
    // reference rounds them.
    let tol = match tile {
        _ if half => 1e-3,
        Some(t) if t.is_coop() => TOL_COOP,
        _ => TOL_SUM,
    };
    let mut needs = if half { cast::NEEDS.to_vec() } else { Vec::new() };
    for n in tile.map_or(&[][..], |t| t.needs()) {
        if !needs.contains(n) {
            needs.push(*n);
        }
    }
    v.push(
        case("conv3d fused", var, Unit::Flop, tol)
            .shape(move |d: Dims| format!("{list}->{co} k{k} {d}{ty}"))
            .work(move |d: Dims| conv3d::flops(d.with_c(ci), co, k))
            .inputs(move |d| {
                let mut t: Vec<CpuTensor> =
                    parts.iter().enumerate().map(|(i, &c)| rnd(d.with_c(c), 81 + i as u64)).collect();
                t.push(rnd(ws, 88));
                t.push(rnd(b, 89));
                t
            })
            .gpu(move |ctx, t| {
                // The parts as `dtype` (f32 parts are passed as they are).
                let parts = t[..np].iter().map(|x| cast::to(ctx, x, dtype)).collect::<Result<Vec<_>>>()?;
                let xs: Vec<&GpuTensor> = parts.iter().collect();
                Ok(vec![match tile {
                    Some(tile) => conv3d::forward_fused_with_tile(ctx, &xs, &t[np], &t[np + 1], relu, tile)?,
                    None => conv3d::forward_fused(ctx, &xs, &t[np], &t[np + 1], relu)?,
                }])
            })
            .cpu(move |t| {
                let round = |x: &CpuTensor| if half { cast::reference::round_f16(x) } else { x.clone() };
                let r: Vec<CpuTensor> = t[..np + 1].iter().map(round).collect();
                let xs: Vec<&CpuTensor> = r[..np].iter().collect();
                vec![round(&conv3d::reference::forward_fused(&xs, &r[np], &t[np + 1], relu))]
            })
            .checks(checks)
            .bench(bench)
            .needs(&needs),
    );
}

/// The 2×2×2 stride-2 transposed convolution c_in → c_out, from the extent
/// halved to the extent: forward and the three gradients, with the kernel
/// the adapter chooses.
fn conv_t_cases(v: &mut Vec<OpCase>, ci: usize, co: usize, bench: Bench, checks: &[Check]) {
    conv_t_variant_cases(v, ci, co, None, bench, checks);
}

/// [`conv_t_cases`] with `variant` (a variant of
/// [`conv_transpose3d::KERNELS`]: name, kernel, needs) forced, tagged with
/// its name: forward, input and weight gradient, the passes the variants
/// differ in.
fn conv_t_variant_cases(
    v: &mut Vec<OpCase>,
    ci: usize,
    co: usize,
    variant: Option<(&'static str, conv_transpose3d::Kernel, &'static [Need])>,
    bench: Bench,
    checks: &[Check],
) {
    let base = if ci == co { format!("c{ci}") } else { format!("{ci}->{co}") };
    let var = match variant {
        Some((name, ..)) => format!("{base} [{name}]"),
        None => base,
    };
    let kernel = variant.map(|(_, k, _)| k);
    let needs = variant.map_or(&[][..], |(_, _, n)| n);
    let ws = Shape5::new(ci, co, 2, 2, 2);
    let b = Shape5::new(1, co, 1, 1, 1);
    let xs = move |d: Dims| d.half().with_c(ci);
    let ys = move |d: Dims| {
        let h = d.half();
        Shape5::new(d.n, co, 2 * h.d, 2 * h.h, 2 * h.w)
    };
    let shape = move |d: Dims| {
        let h = d.half();
        format!("{ci}->{co} {h}->{}", Dims::new(d.n, 2 * h.d, 2 * h.h, 2 * h.w))
    };
    let work = move |d: Dims| conv_transpose3d::flops(xs(d), co);
    let c = |op| {
        case(op, var.clone(), Unit::Flop, TOL_SUM).shape(shape).work(work).checks(checks).bench(bench).needs(needs)
    };
    v.push(
        c("convT fwd")
            .inputs(move |d| vec![rnd(xs(d), 1), rnd(ws, 2), rnd(b, 3)])
            .gpu(move |ctx, t| {
                Ok(vec![match kernel {
                    Some(k) => conv_transpose3d::forward_with(ctx, &t[0], &t[1], &t[2], k)?,
                    None => conv_transpose3d::forward(ctx, &t[0], &t[1], &t[2])?,
                }])
            })
            .cpu(|t| vec![conv_transpose3d::reference::forward(&t[0], &t[1], &t[2])]),
    );
    v.push(
        c("convT bwd-input")
            .inputs(move |d| vec![rnd(ys(d), 4), rnd(ws, 2)])
            .gpu(move |ctx, t| {
                Ok(vec![match kernel {
                    Some(k) => conv_transpose3d::backward_input_with(ctx, &t[0], &t[1], k)?,
                    None => conv_transpose3d::backward_input(ctx, &t[0], &t[1])?,
                }])
            })
            .cpu(|t| vec![conv_transpose3d::reference::backward_input(&t[0], &t[1])]),
    );
    v.push(
        c("convT bwd-weight")
            .inputs(move |d| vec![rnd(xs(d), 1), rnd(ys(d), 4)])
            .gpu(move |ctx, t| {
                Ok(vec![match kernel {
                    Some(k) => conv_transpose3d::backward_weight_with(ctx, &t[0], &t[1], k)?,
                    None => conv_transpose3d::backward_weight(ctx, &t[0], &t[1])?,
                }])
            })
            .cpu(|t| vec![conv_transpose3d::reference::backward_weight(&t[0], &t[1])]),
    );
    if bench == Bench::No && variant.is_none() {
        v.push(
            case("convT bwd-bias", var, Unit::Byte, TOL_SUM)
                .work(move |d| 4.0 * ys(d).numel() as f64)
                .inputs(move |d| vec![rnd(ys(d), 4)])
                .gpu(|ctx, t| Ok(vec![conv_transpose3d::backward_bias(ctx, &t[0])?]))
                .cpu(|t| vec![conv_transpose3d::reference::backward_bias(&t[0])])
                .checks(checks),
        );
    }
}

/// How a max-pool case draws its input.
#[derive(Clone, Copy)]
enum PoolInput {
    Random,
    Ties,
    Flat,
}

/// 2×2×2 max-pool over c channels: forward (with the argmax taps, as f32,
/// unless benchmarked: reading them back would be timed too), and forward
/// then backward (the input gradient lands on the argmax, so the
/// comparison is exact and also checks the argmax, ties included).
fn pool_cases(v: &mut Vec<OpCase>, c: usize, kind: PoolInput, bench: Bench, checks: &[Check]) {
    let (name, gen): (&str, fn(Shape5, u64) -> CpuTensor) = match kind {
        PoolInput::Random => ("", rnd),
        PoolInput::Ties => (" ties", with_ties),
        PoolInput::Flat => (" flat windows", flat_windows),
    };
    let var = format!("c{c}{name}");
    let shape = move |d: Dims| d.with_c(c).to_string();
    v.push(
        case("maxpool fwd", var.clone(), Unit::Byte, 0.0)
            .shape(shape)
            .work(move |d| 4.0 * 1.125 * d.with_c(c).numel() as f64)
            .inputs(move |d| vec![gen(d.with_c(c), 5)])
            .gpu(move |ctx, t| {
                let (y, idx) = pool::forward(ctx, &t[0])?;
                if bench != Bench::No {
                    return Ok(vec![y]);
                }
                let taps = ctx.read_u32(&idx.buf, 0, y.numel())?;
                Ok(vec![y, ctx.upload(&CpuTensor::from_vec(idx.out_shape, taps.iter().map(|&t| t as f32).collect()))?])
            })
            .cpu(move |t| {
                let (y, idx) = pool::reference::forward(&t[0]);
                if bench != Bench::No {
                    return vec![y];
                }
                let taps = CpuTensor::from_vec(y.shape, idx.iter().map(|&t| t as f32).collect());
                vec![y, taps]
            })
            .checks(checks)
            .bench(bench),
    );
    v.push(
        case("maxpool fwd+bwd", var, Unit::Byte, 0.0)
            .shape(shape)
            .work(move |d| 4.0 * 2.5 * d.with_c(c).numel() as f64)
            .inputs(move |d| {
                let x = gen(d.with_c(c), 5);
                let dy = rnd(pool::output_shape(x.shape).expect("pool needs sides >= 2"), 19);
                vec![x, dy]
            })
            .gpu(|ctx, t| {
                let (_, idx) = pool::forward(ctx, &t[0])?;
                Ok(vec![pool::backward(ctx, &idx, &t[1])?])
            })
            .cpu(|t| {
                let (_, idx) = pool::reference::forward(&t[0]);
                vec![pool::reference::backward(&idx, t[0].shape, &t[1])]
            })
            .checks(checks)
            .bench(bench),
    );
}

/// Channel concatenation a (ca channels) ‖ b (cb channels) and its split
/// backward: copies, so exact.
fn concat_cases(v: &mut Vec<OpCase>, ca: usize, cb: usize, bench: Bench, checks: &[Check]) {
    let var = format!("{ca}+{cb}");
    let shape = move |d: Dims| format!("{ca}+{cb} {d}");
    let work = move |d: Dims| 8.0 * d.with_c(ca + cb).numel() as f64;
    v.push(
        case("concat fwd", var.clone(), Unit::Byte, 0.0)
            .shape(shape)
            .work(work)
            .inputs(move |d| vec![rnd(d.with_c(ca), 6), rnd(d.with_c(cb), 7)])
            .gpu(|ctx, t| Ok(vec![concat::forward(ctx, &t[0], &t[1])?]))
            .cpu(|t| vec![concat::reference::forward(&t[0], &t[1])])
            .checks(checks)
            .bench(bench),
    );
    v.push(
        case("concat bwd", var, Unit::Byte, 0.0)
            .shape(shape)
            .work(work)
            .inputs(move |d| vec![rnd(d.with_c(ca + cb), 20)])
            .gpu(move |ctx, t| {
                let (a, b) = concat::backward(ctx, &t[0], ca)?;
                Ok(vec![a, b])
            })
            .cpu(move |t| {
                let (a, b) = concat::reference::backward(&t[0], ca);
                vec![a, b]
            })
            .checks(checks)
            .bench(bench),
    );
}

/// Batch norm over c channels: training forward (y, batch statistics and the
/// updated running statistics), inference forward, backward from given
/// statistics, and training forward then backward from the statistics the
/// GPU saved (as training runs it). With `cfg.relu` every case has the ReLU
/// fused in, and the backwards go through it
/// ([`batchnorm::backward_through_relu`], from the forward's output).
/// `bench` applies to the two training cases.
fn batchnorm_cases(v: &mut Vec<OpCase>, c: usize, cfg: BnConfig, bench: Bench, checks: &[Check]) {
    let plain = BnConfig { relu: false, ..cfg };
    let mut var = if plain == BnConfig::default() {
        format!("c{c}")
    } else {
        format!("c{c} eps {:e} momentum {}", cfg.eps, cfg.momentum)
    };
    if cfg.relu {
        var += " relu";
    }
    let p = Shape5::new(1, c, 1, 1, 1);
    // x, gamma, beta, running mean, running var, dy.
    let inputs = move |d: Dims| {
        vec![
            CpuTensor::random(d.with_c(c), 10, -2.0, 3.0),
            CpuTensor::random(p, 11, 0.5, 1.5),
            rnd(p, 12),
            rnd(p, 13),
            CpuTensor::random(p, 14, 0.5, 2.0),
            rnd(d.with_c(c), 15),
        ]
    };
    let shape = move |d: Dims| d.with_c(c).to_string();
    let bytes = move |k: f64| move |d: Dims| k * d.with_c(c).numel() as f64;
    v.push(
        case("batchnorm fwd-train", var.clone(), Unit::Byte, TOL_SUM)
            .shape(shape)
            .work(bytes(12.0))
            .inputs(move |d| inputs(d)[..5].to_vec())
            .gpu(move |ctx, t| {
                // The running statistics are updated in place: work on copies.
                let (rm, rv) = (ctx.copy(&t[3])?, ctx.copy(&t[4])?);
                let (y, saved) = batchnorm::forward_train(ctx, &t[0], &t[1], &t[2], &rm, &rv, &cfg)?;
                Ok(vec![y, saved.mean, saved.invstd, rm, rv])
            })
            .cpu(move |t| {
                let (y, m, is, rm, rv) = batchnorm::reference::forward_train(&t[0], &t[1], &t[2], &t[3], &t[4], &cfg);
                vec![y, m, is, rm, rv]
            })
            .checks(checks)
            .bench(bench),
    );
    v.push(
        case("batchnorm fwd-infer", var.clone(), Unit::Byte, TOL_SUM)
            .shape(shape)
            .work(bytes(8.0))
            .inputs(move |d| inputs(d)[..5].to_vec())
            .gpu(move |ctx, t| Ok(vec![batchnorm::forward_infer(ctx, &t[0], &t[1], &t[2], &t[3], &t[4], &cfg)?]))
            .cpu(move |t| vec![batchnorm::reference::forward_infer(&t[0], &t[1], &t[2], &t[3], &t[4], &cfg)])
            .checks(checks),
    );
    v.push(
        case("batchnorm bwd", var.clone(), Unit::Byte, TOL_SUM)
            .shape(shape)
            .work(bytes(16.0))
            .inputs(move |d| {
                // x, gamma, dy, and the reference's batch statistics as a
                // plain (1, C, 1, 1, 1) saved mean (no low-order parts), and
                // its output (the ReLU's mask where fused).
                let t = inputs(d);
                let (y, m, is, _, _) = batchnorm::reference::forward_train(&t[0], &t[1], &t[2], &t[3], &t[4], &cfg);
                vec![t[0].clone(), t[1].clone(), t[5].clone(), m, is, y]
            })
            .gpu(move |ctx, t| {
                let saved = BnSaved { mean: t[3].clone(), invstd: t[4].clone(), frozen: false };
                bn_backward_gpu(ctx, cfg.relu, &t[0], &t[1], &saved, &t[5], &t[2])
            })
            .cpu(move |t| {
                let (dx, dg, db) = batchnorm::reference::backward_saved(
                    &t[0],
                    &t[1],
                    &t[3],
                    &t[4],
                    false,
                    cfg.relu.then_some(&t[5]),
                    &t[2],
                );
                vec![dx, dg, db]
            })
            .checks(checks),
    );
    v.push(
        case("batchnorm fwd+bwd", var.clone(), Unit::Byte, TOL_SUM)
            .shape(shape)
            .work(bytes(28.0))
            .inputs(inputs)
            .gpu(move |ctx, t| {
                let (rm, rv) = (ctx.copy(&t[3])?, ctx.copy(&t[4])?);
                let (y, saved) = batchnorm::forward_train(ctx, &t[0], &t[1], &t[2], &rm, &rv, &cfg)?;
                bn_backward_gpu(ctx, cfg.relu, &t[0], &t[1], &saved, &y, &t[5])
            })
            .cpu(move |t| {
                let (y, m, is, _, _) = batchnorm::reference::forward_train(&t[0], &t[1], &t[2], &t[3], &t[4], &cfg);
                let (dx, dg, db) =
                    batchnorm::reference::backward_saved(&t[0], &t[1], &m, &is, false, cfg.relu.then_some(&y), &t[5]);
                vec![dx, dg, db]
            })
            .checks(checks)
            .bench(bench),
    );
    // Frozen (fine-tuning): the running statistics as constants.
    let frozen_ref = move |t: &[CpuTensor]| {
        let y = batchnorm::reference::forward_infer(&t[0], &t[1], &t[2], &t[3], &t[4], &cfg);
        let (m, is) = batchnorm::reference::frozen_stats(&t[3], &t[4], cfg.eps);
        (y, m, is)
    };
    v.push(
        case("batchnorm fwd-frozen", var.clone(), Unit::Byte, TOL_SUM)
            .shape(shape)
            .work(bytes(8.0))
            .inputs(move |d| inputs(d)[..5].to_vec())
            .gpu(move |ctx, t| {
                let (y, saved) = batchnorm::forward_frozen(ctx, &t[0], &t[1], &t[2], &t[3], &t[4], &cfg)?;
                if !saved.frozen {
                    return Err(crate::error::Error::invalid("forward_frozen saved batch statistics"));
                }
                Ok(vec![y, saved.mean, saved.invstd])
            })
            .cpu(move |t| {
                let (y, m, is) = frozen_ref(t);
                vec![y, m, is]
            })
            .checks(checks),
    );
    v.push(
        case("batchnorm fwd+bwd frozen", var, Unit::Byte, TOL_SUM)
            .shape(shape)
            .work(bytes(20.0))
            .inputs(inputs)
            .gpu(move |ctx, t| {
                let (y, saved) = batchnorm::forward_frozen(ctx, &t[0], &t[1], &t[2], &t[3], &t[4], &cfg)?;
                bn_backward_gpu(ctx, cfg.relu, &t[0], &t[1], &saved, &y, &t[5])
            })
            .cpu(move |t| {
                let (y, m, is) = frozen_ref(t);
                let (dx, dg, db) =
                    batchnorm::reference::backward_saved(&t[0], &t[1], &m, &is, true, cfg.relu.then_some(&y), &t[5]);
                vec![dx, dg, db]
            })
            .checks(checks),
    );
}

/// The GPU backward of a batch norm from its saved statistics, through the
/// fused ReLU (output `y`) where `relu`: `[dx, dgamma, dbeta]`.
fn bn_backward_gpu(
    ctx: &GpuContext,
    relu: bool,
    x: &GpuTensor,
    gamma: &GpuTensor,
    saved: &BnSaved,
    y: &GpuTensor,
    dy: &GpuTensor,
) -> Result<Vec<GpuTensor>> {
    let (dx, dg, db) = if relu {
        batchnorm::backward_through_relu(ctx, x, gamma, saved, y, dy)?
    } else {
        batchnorm::backward(ctx, x, gamma, saved, dy)?
    };
    Ok(vec![dx, dg, db])
}

/// An element-wise case over c channels: `inputs` at an extent, `bytes` moved per element.
fn map_case(op: &'static str, c: usize, bytes: f64, bench: Bench, checks: &[Check]) -> OpCase {
    case(op, format!("c{c}"), Unit::Byte, TOL_MAP)
        .shape(move |d| d.with_c(c).to_string())
        .work(move |d| bytes * d.with_c(c).numel() as f64)
        .checks(checks)
        .bench(bench)
}

/// ReLU and sigmoid forward and backward, and `add`, over c channels, inputs
/// in [-range, range). With `bench` empty every one is a test case; else only
/// the ops it names, benchmarked as it says.
fn activation_cases(out: &mut Vec<OpCase>, c: usize, range: f32, bench: &[(&str, Bench)], checks: &[Check]) {
    let b = |op: &str| bench.iter().find(|(o, _)| *o == op).map_or(Bench::No, |&(_, b)| b);
    let mut v = Vec::new();
    let x = move |d: Dims| CpuTensor::random(d.with_c(c), 16, -range, range);
    let dy = move |d: Dims| rnd(d.with_c(c), 17);
    v.push(
        map_case("relu fwd", c, 8.0, b("relu fwd"), checks)
            .inputs(move |d| vec![x(d)])
            .gpu(|ctx, t| Ok(vec![activation::relu_forward(ctx, &t[0])?]))
            .cpu(|t| vec![activation::reference::relu_forward(&t[0])]),
    );
    v.push(
        map_case("relu bwd", c, 12.0, b("relu bwd"), checks)
            .inputs(move |d| vec![x(d), dy(d)])
            .gpu(|ctx, t| Ok(vec![activation::relu_backward(ctx, &t[0], &t[1])?]))
            .cpu(|t| vec![activation::reference::relu_backward(&t[0], &t[1])]),
    );
    v.push(
        map_case("sigmoid fwd", c, 8.0, b("sigmoid fwd"), checks)
            .inputs(move |d| vec![x(d)])
            .gpu(|ctx, t| Ok(vec![activation::sigmoid_forward(ctx, &t[0])?]))
            .cpu(|t| vec![activation::reference::sigmoid_forward(&t[0])]),
    );
    v.push(
        map_case("sigmoid bwd", c, 12.0, b("sigmoid bwd"), checks)
            .inputs(move |d| vec![activation::reference::sigmoid_forward(&x(d)), dy(d)])
            .gpu(|ctx, t| Ok(vec![activation::sigmoid_backward(ctx, &t[0], &t[1])?]))
            .cpu(|t| vec![activation::reference::sigmoid_backward(&t[0], &t[1])]),
    );
    v.push(
        map_case("add", c, 12.0, b("add"), checks)
            .inputs(move |d| vec![x(d), dy(d)])
            .gpu(|ctx, t| Ok(vec![elementwise::add(ctx, &t[0], &t[1])?]))
            .cpu(|t| vec![elementwise::reference::add(&t[0], &t[1])]),
    );
    out.extend(v.into_iter().filter(|k| bench.is_empty() || k.bench != Bench::No));
}

/// Per-channel sums over c channels.
fn channel_sum_case(v: &mut Vec<OpCase>, c: usize, bench: Bench, checks: &[Check]) {
    v.push(
        case("channel_sum", format!("c{c}"), Unit::Byte, TOL_SUM)
            .shape(move |d| d.with_c(c).to_string())
            .work(move |d| 4.0 * d.with_c(c).numel() as f64)
            .inputs(move |d| vec![rnd(d.with_c(c), 2)])
            .gpu(|ctx, t| Ok(vec![reduce::channel_sum(ctx, &t[0])?]))
            .cpu(|t| vec![reduce::reference::channel_sum(&t[0])])
            .checks(checks)
            .bench(bench),
    );
}

/// Channel softmax over c channels with logits in [-range, range): forward,
/// and backward from the reference's probabilities.
fn softmax_cases(v: &mut Vec<OpCase>, c: usize, range: f32, bench: Bench, checks: &[Check]) {
    let var = if range == 4.0 { format!("c{c}") } else { format!("c{c} logits +-{range}") };
    let x = move |d: Dims| CpuTensor::random(d.with_c(c), 8, -range, range);
    let shape = move |d: Dims| d.with_c(c).to_string();
    v.push(
        case("softmax fwd", var.clone(), Unit::Byte, TOL_SUM)
            .shape(shape)
            .work(move |d| 8.0 * d.with_c(c).numel() as f64)
            .inputs(move |d| vec![x(d)])
            .gpu(|ctx, t| Ok(vec![softmax::forward(ctx, &t[0])?]))
            .cpu(|t| vec![softmax::reference::forward(&t[0])])
            .checks(checks)
            .bench(bench),
    );
    v.push(
        case("softmax bwd", var, Unit::Byte, TOL_SUM)
            .shape(shape)
            .work(move |d| 12.0 * d.with_c(c).numel() as f64)
            .inputs(move |d| vec![softmax::reference::forward(&x(d)), rnd(d.with_c(c), 9)])
            .gpu(|ctx, t| Ok(vec![softmax::backward(ctx, &t[0], &t[1])?]))
            .cpu(|t| vec![softmax::reference::backward(&t[0], &t[1])])
            .checks(checks)
            .bench(bench),
    );
}

/// Softmax cross-entropy over K = weights.len() classes: loss and gradient;
/// with `voxel_weights`, a two-channel target whose second channel is a
/// random weight map ([`weighted_classes`]).
fn cross_entropy_case(v: &mut Vec<OpCase>, weights: &[f32], voxel_weights: bool, bench: Bench, checks: &[Check]) {
    let k = weights.len();
    let w = weights.to_vec();
    let w2 = w.clone();
    let mut what = format!("c{k} w {}", weights.iter().map(|w| w.to_string()).collect::<Vec<_>>().join("/"));
    if voxel_weights {
        what.push_str(" + voxel weights");
    }
    v.push(
        case("softmax cross-entropy", what, Unit::Byte, TOL_SUM)
            .shape(move |d| d.with_c(k).to_string())
            .work(move |d| 4.0 * (2 * k + 1 + voxel_weights as usize) as f64 * d.with_c(1).numel() as f64)
            .inputs(move |d| {
                let t = if voxel_weights { weighted_classes(d.with_c(k), k, 21) } else { classes(d.with_c(1), k, 21) };
                vec![CpuTensor::random(d.with_c(k), 22, -3.0, 3.0), t]
            })
            .gpu(move |ctx, t| {
                let (l, g) = loss::softmax_cross_entropy(ctx, &t[0], &t[1], &w)?;
                Ok(vec![l, g])
            })
            .cpu(move |t| {
                let (l, g) = loss::reference::softmax_cross_entropy(&t[0], &t[1], &w2).expect("valid targets");
                vec![scalar(l), g]
            })
            .checks(checks)
            .bench(bench),
    );
}

/// A two-channel cross-entropy target for shape `d` (N, C, D, H, W): per
/// sample, K-class indices ([`classes`]), then voxel weights in [0, 12)
/// with about one in ten exactly 0 (as a separation weight map ranges from
/// 1 to 1 + w0, and ignored voxels weigh 0).
pub fn weighted_classes(d: Shape5, k: usize, seed: u64) -> CpuTensor {
    let c = classes(d.with_c(1), k, seed);
    let r = CpuTensor::random(d.with_c(1), seed + 1000, -1.2, 12.0);
    let sp = d.spatial();
    let mut data = Vec::with_capacity(2 * c.data.len());
    for n in 0..d.n {
        data.extend_from_slice(&c.data[n * sp..(n + 1) * sp]);
        data.extend(r.data[n * sp..(n + 1) * sp].iter().map(|&w| w.max(0.0)));
    }
    CpuTensor::from_vec(d.with_c(2), data)
}

/// BCE with logits (one channel, logits in [-6, 6) with three saturated
/// ones) and positive weight `pw`: loss and gradient; the targets 0/1, or
/// with `soft` anywhere in [0, 1] (the centre map, `train::centres`).
fn bce_case(v: &mut Vec<OpCase>, pw: f32, soft: bool, bench: Bench, checks: &[Check]) {
    let kind = if soft { ", soft targets" } else { "" };
    v.push(
        case("bce with logits", format!("pos weight {pw}{kind}"), Unit::Byte, TOL_SUM)
            .work(|d| 12.0 * d.with_c(1).numel() as f64)
            .inputs(move |d| {
                let mut z = CpuTensor::random(d.with_c(1), 24, -6.0, 6.0);
                // Saturated logits: the stable form must not overflow.
                for (i, s) in [60.0, -60.0, 100.0].into_iter().enumerate().take(z.data.len()) {
                    z.data[i] = s;
                }
                let t = if soft { CpuTensor::random(d.with_c(1), 25, 0.0, 1.0) } else { binary(d.with_c(1), 25) };
                vec![z, t]
            })
            .gpu(move |ctx, t| {
                let (l, g) = loss::bce_with_logits(ctx, &t[0], &t[1], pw)?;
                Ok(vec![l, g])
            })
            .cpu(move |t| {
                let (l, g) = loss::reference::bce_with_logits(&t[0], &t[1], pw);
                vec![scalar(l), g]
            })
            .checks(checks)
            .bench(bench),
    );
}

/// Soft Dice of channel `ch` of c probability channels with smoothing `smooth`.
fn dice_case(v: &mut Vec<OpCase>, c: usize, ch: usize, smooth: f32, bench: Bench, checks: &[Check]) {
    v.push(
        case("soft dice", format!("c{c} ch{ch} smooth {smooth}"), Unit::Byte, TOL_SUM)
            .shape(move |d| d.with_c(c).to_string())
            .work(move |d| 4.0 * (2 * c + 1) as f64 * d.with_c(1).numel() as f64)
            .inputs(move |d| vec![CpuTensor::random(d.with_c(c), 23, 0.0, 1.0), binary(d.with_c(1), 26)])
            .gpu(move |ctx, t| {
                let (l, g) = loss::soft_dice(ctx, &t[0], &t[1], ch, smooth)?;
                Ok(vec![l, g])
            })
            .cpu(move |t| {
                let (l, g) = loss::reference::soft_dice(&t[0], &t[1], ch, smooth);
                vec![scalar(l), g]
            })
            .checks(checks)
            .bench(bench),
    );
}

/// Two optimizer steps over one parameter tensor of c channels, from a fresh
/// state: the parameters and the state after them.
fn optimizer_case(
    v: &mut Vec<OpCase>,
    name: &'static str,
    c: usize,
    cfg: OptimizerConfig,
    bench: Bench,
    checks: &[Check],
) {
    let cfg2 = cfg.clone();
    let per_value = cfg.state_names().len() as f64 * 8.0 + 12.0;
    v.push(
        case(name, format!("c{c}"), Unit::Byte, TOL_SUM)
            .shape(move |d| format!("{} params", d.with_c(c).numel()))
            .work(move |d| 2.0 * per_value * d.with_c(c).numel() as f64)
            .inputs(move |d| vec![rnd(d.with_c(c), 30), rnd(d.with_c(c), 31), rnd(d.with_c(c), 32)])
            .gpu(move |ctx, t| {
                let p = ctx.copy(&t[0])?;
                let mut opt = Optimizer::new(ctx, cfg.clone(), &[&p])?;
                opt.step(ctx, &[&p], &[&t[1]])?;
                opt.step(ctx, &[&p], &[&t[2]])?;
                let mut out = vec![p.clone()];
                out.extend(opt.state().into_iter().map(|(_, s)| s.clone()));
                Ok(out)
            })
            .cpu(move |t| {
                let mut p = vec![t[0].clone()];
                let mut opt = CpuOptimizer::new(cfg2.clone(), &[&t[0]]);
                opt.step(&mut p, &t[1..2]);
                opt.step(&mut p, &t[2..3]);
                let mut out = p;
                out.extend(opt.state(&[t[0].shape]).into_iter().map(|(_, s)| s));
                out
            })
            .checks(checks)
            .bench(bench),
    );
}

/// One update of a running average of c channels of weights towards other
/// random weights, with the current weights' share `w`.
fn average_case(v: &mut Vec<OpCase>, c: usize, w: f32, bench: Bench, checks: &[Check]) {
    v.push(
        case("weight average", format!("c{c} share {w}"), Unit::Byte, TOL_SUM)
            .shape(move |d| format!("{} params", d.with_c(c).numel()))
            .work(move |d| 12.0 * d.with_c(c).numel() as f64)
            .inputs(move |d| vec![rnd(d.with_c(c), 33), rnd(d.with_c(c), 34)])
            .gpu(move |ctx, t| {
                let a = ctx.copy(&t[0])?;
                super::optim::average(ctx, &[&a], &[&t[1]], w)?;
                Ok(vec![a])
            })
            .cpu(move |t| {
                let mut a = vec![t[0].clone()];
                super::optim::reference::average(&mut a, &t[1..2], w).expect("same shapes");
                a
            })
            .checks(checks)
            .bench(bench),
    );
}

/// Conversion to f16 and back (f16 storage for f16 kernels). `scale`
/// spreads the random values (up to f16's large range, ±6e4). f32 → f16 may
/// round either way (WGSL), so within one f16 rounding (2^-11 relative per
/// value); f16 → f32 is exact (the input made f16 on the host, rounded as
/// the reference rounds).
fn cast_cases(v: &mut Vec<OpCase>, scale: f32, bench: Bench, checks: &[Check]) {
    let var = format!("|x| < {scale}");
    let inputs = move |d: Dims| vec![CpuTensor::random(d.with_c(3), 91, -scale, scale)];
    let work = |d: Dims| 6.0 * d.with_c(3).numel() as f64;
    v.push(
        case("cast to-f16", var.clone(), Unit::Byte, 1e-3)
            .work(work)
            .inputs(inputs)
            .gpu(|ctx, t| Ok(vec![cast::to(ctx, &t[0], DType::F16)?]))
            .cpu(|t| vec![cast::reference::round_f16(&t[0])])
            .checks(checks)
            .bench(bench)
            .needs(cast::NEEDS),
    );
    v.push(
        case("cast to-f32", var, Unit::Byte, 0.0)
            .work(work)
            .inputs(inputs)
            .gpu(|ctx, t| {
                let h = ctx.upload_as(&ctx.download(&t[0])?, DType::F16)?;
                Ok(vec![cast::to(ctx, &h, DType::F32)?])
            })
            .cpu(|t| vec![cast::reference::round_f16(&t[0])])
            .checks(checks)
            .bench(bench)
            .needs(cast::NEEDS),
    );
}

/// Every case: the small variants the tests need (odd shapes, channel counts
/// off the register blocking, ties, large logits, split paths) and the layer
/// shapes of the NSN (3×3×3, 16–64 channels) and the NDN (5×5×5, 12–192
/// channels) that `bench` times, each also checked at a small extent.
pub fn table() -> Vec<OpCase> {
    use Bench::{Full, No, Yes};
    use DType::{F16, F32};
    let mut v = Vec::new();
    // A small extent for checking the benchmark variants.
    let small = &[at(1, 3, 4, 5)];

    // conv3d: k = 1, 3, 5 on odd sides; channels that are not multiples of
    // the register blocking; a volume smaller than the kernel; the split path
    // (5 channels of 7x9x11 exceed 4-8 KiB bindings, input groups accumulate;
    // 19 output channels read the transposed weights through row windows).
    conv3d_cases(&mut v, None, 1, 3, 5, No, &[at(2, 7, 9, 11)]);
    conv3d_cases(&mut v, None, 3, 3, 5, No, &[at(2, 7, 9, 11)]);
    conv3d_cases(&mut v, None, 5, 3, 5, No, &[at(2, 7, 9, 11)]);
    conv3d_cases(&mut v, None, 3, 13, 11, No, &[at(1, 5, 6, 13)]);
    conv3d_cases(&mut v, None, 5, 9, 17, No, &[at(2, 3, 5, 7)]);
    conv3d_cases(&mut v, None, 5, 2, 3, No, &[at(1, 1, 2, 9)]);
    conv3d_cases(&mut v, None, 3, 5, 4, No, &[capped(4096, 2, 7, 9, 11), capped(8192, 2, 7, 9, 11)]);
    conv3d_cases(&mut v, None, 1, 5, 4, No, &[capped(8192, 2, 7, 9, 11)]);
    conv3d_cases(&mut v, None, 5, 5, 4, No, &[capped(8192, 2, 7, 9, 11)]);
    conv3d_cases(&mut v, None, 3, 3, 19, No, &[capped(8192, 1, 3, 4, 5), capped(4096, 1, 3, 4, 5)]);
    // One shader source, several register tiles (override constants):
    // every registered kernel variant (conv3d::KERNELS; the cases above run
    // whichever the adapter chooses), and tiles off the usual blockings. The
    // variants also at an NSN and an NDN layer, which `bench` times side
    // by side (the preferred one included, so all are timed in one run).
    for var in conv3d::KERNELS.variants {
        // 33 rows: the unrolled kernel's tall-plane rows (conv3d::TALL_ROWS).
        // Rows of 4 voxels or fewer: 4 x-positions (conv3d::NARROW_ROW).
        // Rows of a multiple of 4 voxels: the unrolled kernel reads them as
        // vec4s.
        let odd = [at(2, 4, 7, 19), capped(4096, 2, 4, 7, 19), at(1, 6, 9, 37), at(1, 3, 33, 9), at(2, 5, 17, 3)];
        let checks = [&odd[..], &ROWS_OF_4].concat();
        // Each variant's kernel wherever it can run: its tile's needs, not
        // the variant's preferences (the GPU-only split runs on lavapipe
        // too).
        let needs = var.kernel.needs();
        conv3d_tile_cases(&mut v, var.name, var.kernel, needs, None, No, &checks);
        for layer in [("NSN", 3, 16), ("NDN", 5, 12)] {
            conv3d_tile_cases(&mut v, var.name, var.kernel, needs, Some(layer), Yes, small);
        }
        // More channels than one 16-wide block (two input chunks, two
        // output blocks, both partial).
        conv3d_tile_cases(&mut v, var.name, var.kernel, needs, Some(("20 channels", 3, 20)), No, small);
        // The inference conv with f16 storage at this tile (the f16 form
        // of its shader or generated kernel): two parts and the ReLU,
        // uncapped and capped. Two checks only: on lavapipe every shape
        // compiles kernels of its own, from a cold cache in CI (k 1 and 5
        // at every tile took ops_table past 17 minutes cold).
        let t = Some((var.name, var.kernel));
        conv3d_fused_cases(&mut v, t, None, 3, &[6, 3], 9, true, F16, No, &[at(2, 5, 7, 13), capped(4096, 2, 5, 7, 9)]);
    }
    // Split tiles (input channels summed in parts by separate workgroups,
    // then a fixed-order finish): the inference conv's concatenation parts
    // and ReLU (which must wait for the finish), the split path (channel
    // groups that accumulate, each split; f16 storage with f32 partial sums
    // is every tile's, above); a deep level as the networks have it.
    for var in conv3d::KERNELS
        .variants
        .iter()
        .filter(|v| matches!(v.kernel.kernel, conv3d::Kernel::Loops { split_lanes } if split_lanes > 0))
    {
        let t = Some((var.name, var.kernel));
        for k in [1, 3, 5] {
            conv3d_fused_cases(&mut v, t, None, k, &[6, 3], 9, true, F32, No, &[at(2, 5, 7, 13)]);
        }
        conv3d_fused_cases(&mut v, t, None, 3, &[7, 5], 3, true, F32, No, &[capped(8192, 2, 5, 7, 9)]);
        conv3d_tile_cases(
            &mut v,
            var.name,
            var.kernel,
            var.kernel.needs(),
            Some(("NDN deep", 5, 40)),
            No,
            &[at(1, 4, 4, 4)],
        );
    }
    // Each variant's kernel wherever it can run (its tile's needs, not the
    // variant's preferences: the GPU split is checked on lavapipe too).
    for var in conv3d::WEIGHT_KERNELS.variants {
        conv3d_weight_tile_cases(&mut v, var.name, var.kernel, var.kernel.needs(), small);
    }
    // The generated weight kernel at its other step (8 voxels) and block
    // (8 output channels, one load per lane and voxel), small chunks.
    let tile = conv3d::WeightTile {
        wg: 8,
        co_b: 8,
        max_chunks: 16,
        min_chunk_voxels: 64,
        kernel: conv3d::WeightKernel::Unrolled { xb: 8 },
    };
    conv3d_weight_tile_cases(&mut v, "unrolled co8 x8", tile, &[Need::Subgroups8], small);
    for (wg, co_b, xb) in [(128, 3, 5), (16, 3, 8), (64, 5, 4)] {
        let label = format!("wg{wg} co{co_b} x{xb}");
        conv3d_tile_cases(&mut v, &label, conv3d::Tile::loops(wg, co_b, xb), &[], None, No, &[at(2, 4, 7, 19)]);
    }
    for c in [16, 32, 64] {
        conv3d_cases(&mut v, Some("NSN"), 3, c, c, Yes, small);
    }
    for (c, b) in [(12, Yes), (24, Yes), (48, Yes), (96, Full), (192, Full)] {
        conv3d_cases(&mut v, Some("NDN"), 5, c, c, b, small);
    }

    // The inference conv: one part (conv + ReLU) and two parts (the skip
    // concatenation) with channel counts off the register blocking, ReLU on
    // and off; the split path (with 4-8 KiB bindings each part is split into
    // groups of 2-4 channels that accumulate into the output, and the ReLU
    // must wait for the last group: partial sums are often negative where
    // the full sum is not).
    for k in [1, 3, 5] {
        for relu in [false, true] {
            conv3d_fused_cases(&mut v, None, None, k, &[5], 11, relu, F32, No, &[at(2, 7, 9, 11)]);
            conv3d_fused_cases(&mut v, None, None, k, &[6, 3], 9, relu, F32, No, &[at(2, 5, 7, 13), at(2, 5, 7, 12)]);
        }
    }
    conv3d_fused_cases(
        &mut v,
        None,
        None,
        3,
        &[7, 5],
        10,
        true,
        F32,
        No,
        &[capped(4096, 2, 5, 7, 13), capped(8192, 2, 5, 7, 13)],
    );
    conv3d_fused_cases(&mut v, None, None, 5, &[7, 5], 10, true, F32, No, &[capped(8192, 2, 5, 7, 13)]);
    conv3d_fused_cases(&mut v, None, Some("NSN"), 3, &[32, 16], 16, true, F32, Yes, small);
    // The same with f16 storage (needs shader-f16): k 1/3/5, one and two
    // parts, ReLU on and off, the split path, and the NSN decoder layer for
    // `bench` beside its f32 row.
    for k in [1, 3, 5] {
        conv3d_fused_cases(&mut v, None, None, k, &[5], 11, k != 3, F16, No, &[at(2, 7, 9, 11)]);
        conv3d_fused_cases(&mut v, None, None, k, &[6, 3], 9, k == 3, F16, No, &[at(2, 5, 7, 13), at(2, 5, 7, 12)]);
    }
    conv3d_fused_cases(&mut v, None, None, 3, &[7, 5], 10, true, F16, No, &[capped(4096, 2, 5, 7, 13)]);
    conv3d_fused_cases(&mut v, None, Some("NSN"), 3, &[32, 16], 16, true, F16, Yes, small);

    // Transposed convolution: channel tails of the register blocks, several
    // weight-gradient chunks, a single input voxel; the split path (2 KiB:
    // one output channel fits, one input sample does not).
    conv_t_cases(&mut v, 3, 5, No, &[at(2, 8, 10, 6), at(2, 18, 20, 22)]);
    conv_t_cases(&mut v, 19, 17, No, &[at(1, 4, 6, 6)]);
    conv_t_cases(&mut v, 4, 3, No, &[at(2, 2, 2, 2)]);
    conv_t_cases(&mut v, 11, 3, No, &[capped(2048, 2, 6, 8, 10)]);
    for c in [64, 128] {
        conv_t_cases(&mut v, c, c, Yes, &[at(1, 4, 6, 8)]);
    }
    // Every registered variant, forward and gradients: odd extents
    // (voxels off every block), channel counts off the written and reduced
    // blocks, a single voxel, the split path (reduced-channel groups
    // accumulating), and the NSN's decoder layers, which `bench` times side
    // by side.
    for var in conv_transpose3d::KERNELS.variants {
        let k = Some((var.name, var.kernel, var.needs));
        conv_t_variant_cases(&mut v, 19, 17, k, No, &[at(1, 6, 10, 14), at(2, 4, 6, 6)]);
        conv_t_variant_cases(&mut v, 3, 37, k, No, &[at(2, 2, 2, 2), at(1, 10, 6, 22)]);
        conv_t_variant_cases(&mut v, 11, 3, k, No, &[capped(2048, 2, 6, 8, 10)]);
        conv_t_variant_cases(&mut v, 40, 3, k, No, &[capped(4096, 1, 6, 10, 14)]);
        for c in [32, 64] {
            conv_t_variant_cases(&mut v, c, c, k, Yes, small);
        }
    }
    // The generated kernels at odd blocks (3 channels x 5 voxels, 3 a
    // step; weight gradient 3 x 5 channels, 3 voxels a step) in
    // workgroups of 8 lanes, as the weight gradient runs where subgroups
    // are wider than 8.
    let odd = conv_transpose3d::Kernel::Unrolled {
        forward: conv_transpose3d::Block { wg: 8, ch_b: 3, xb: 5, red_b: 3 },
        backward_input: conv_transpose3d::Block { wg: 8, ch_b: 5, xb: 3, red_b: 2 },
        weight: conv_transpose3d::WeightBlock {
            wg: 8,
            shape: conv_transpose3d_unrolled::WeightShape { ci_b: 3, co_b: 5, xb: 3 },
        },
    };
    let k = Some(("unrolled odd blocks wg8", odd, &[Need::Subgroups8][..]));
    conv_t_variant_cases(&mut v, 19, 17, k, No, &[at(1, 6, 10, 14), at(2, 4, 6, 6)]);
    conv_t_variant_cases(&mut v, 11, 3, k, No, &[capped(2048, 2, 6, 8, 10)]);

    // Max-pool: odd sides (floor), ties, flat windows, even and smallest
    // sides; the split path (1 KiB: two 4x5x6 volumes per binding).
    pool_cases(&mut v, 3, PoolInput::Random, No, &[at(2, 7, 9, 11)]);
    pool_cases(&mut v, 3, PoolInput::Ties, No, &[at(2, 7, 9, 11)]);
    pool_cases(&mut v, 2, PoolInput::Flat, No, &[at(1, 4, 4, 4)]);
    pool_cases(&mut v, 5, PoolInput::Random, No, &[at(1, 2, 6, 4)]);
    pool_cases(&mut v, 1, PoolInput::Random, No, &[at(3, 2, 3, 2)]);
    pool_cases(&mut v, 5, PoolInput::Ties, No, &[capped(1024, 2, 4, 5, 6)]);
    pool_cases(&mut v, 32, PoolInput::Random, Yes, small);

    // Concatenation (copies: exact), also under a 1 KiB cap.
    concat_cases(&mut v, 3, 5, No, &[at(2, 7, 9, 11)]);
    concat_cases(&mut v, 2, 3, No, &[capped(1024, 2, 7, 9, 11)]);
    concat_cases(&mut v, 64, 32, Yes, small);

    // Batch norm: odd shapes, many chunks per channel, other eps and
    // momentum; the split path (4 KiB: channel groups of 7x9x11, runs of
    // chunks inside a 17x19x23 channel). Channels of a multiple of 4 voxels
    // run on vec4 views (3x5x4; split, 17x19x24); more voxels than a CPU
    // adapter's chunk (32,768), on vec4 views (17x45x44) and not (19x41x43).
    let bn_split = &[
        at(2, 7, 9, 11),
        capped(4096, 2, 7, 9, 11),
        capped(4096, 2, 17, 19, 23),
        at(2, 3, 5, 4),
        capped(4096, 2, 17, 19, 24),
    ];
    batchnorm_cases(&mut v, 3, BnConfig::default(), No, bn_split);
    batchnorm_cases(&mut v, 5, BnConfig::default(), No, &[at(1, 3, 5, 7)]);
    batchnorm_cases(&mut v, 2, BnConfig::default(), No, &[at(3, 17, 19, 23), at(1, 17, 45, 44), at(1, 19, 41, 43)]);
    batchnorm_cases(&mut v, 3, BnConfig { eps: 1e-3, momentum: 0.3, relu: false }, No, &[at(2, 7, 9, 11)]);
    batchnorm_cases(&mut v, 32, BnConfig::default(), Yes, small);
    // With the ReLU fused in (as training runs it): odd shapes and the
    // split path, on scalar and vec4 views.
    let fused = BnConfig { relu: true, ..BnConfig::default() };
    batchnorm_cases(&mut v, 3, fused, No, bn_split);
    batchnorm_cases(&mut v, 32, fused, Yes, small);

    // Element-wise maps: odd shapes, and 1 KiB bindings (a 7x9x11 channel
    // is split anywhere).
    activation_cases(&mut v, 3, 4.0, &[], &[at(2, 7, 9, 11), capped(1024, 2, 7, 9, 11)]);
    activation_cases(&mut v, 32, 4.0, &[("relu bwd", Yes)], small);
    activation_cases(&mut v, 1, 4.0, &[("sigmoid fwd", Yes)], small);
    activation_cases(&mut v, 16, 4.0, &[("relu fwd", Yes)], small);
    activation_cases(&mut v, 64, 4.0, &[("relu fwd", Yes)], small);

    // Per-channel sums: odd shapes, many chunks, one voxel; channel groups
    // under a 4 KiB cap; on vec4 views (channels of a multiple of 4 voxels,
    // also capped); more voxels than a CPU adapter's chunk (32,768), on
    // vec4 views (17x45x44) and not (19x41x43).
    let vec4 = [at(2, 3, 5, 4), capped(4096, 2, 7, 9, 12), at(1, 17, 45, 44), at(1, 19, 41, 43)];
    channel_sum_case(&mut v, 3, No, &[&[at(2, 7, 9, 11)][..], &vec4].concat());
    channel_sum_case(&mut v, 5, No, &[at(3, 17, 19, 23), capped(4096, 2, 7, 9, 11)]);
    channel_sum_case(&mut v, 2, No, &[at(1, 1, 1, 1)]);
    for c in [16, 64] {
        channel_sum_case(&mut v, c, Yes, small);
    }

    // Softmax: 5 and 2 channels, logits of ±1e4 (a naive exp overflows); 4 KiB
    // bindings: channel groups with running statistics (5 channels of
    // 7x9x11), and whole samples per window (7 channels of 3x4x5).
    softmax_cases(&mut v, 5, 4.0, No, &[at(2, 7, 9, 11)]);
    softmax_cases(&mut v, 2, 4.0, Yes, &[at(2, 7, 9, 11)]);
    softmax_cases(&mut v, 5, 1e4, No, &[at(2, 7, 9, 11)]);
    softmax_cases(&mut v, 5, 50.0, No, &[capped(4096, 2, 7, 9, 11)]);
    softmax_cases(&mut v, 7, 5.0, No, &[capped(4096, 3, 3, 4, 5)]);

    // Losses: 2, 3 and 5 classes (one of weight 0), many partial sums
    // (2x33x35x37), saturated BCE logits, Dice of each channel; 4 KiB
    // bindings (cross-entropy windows hold whole samples; BCE and Dice split
    // anywhere).
    cross_entropy_case(&mut v, &[0.2, 1.0, 2.5], false, No, &[at(2, 7, 9, 11)]);
    cross_entropy_case(&mut v, &[0.3, 4.0], false, No, &[at(3, 17, 19, 23), at(2, 33, 35, 37)]);
    cross_entropy_case(&mut v, &[1.0, 0.5, 2.0, 0.0, 3.0], false, No, &[at(1, 3, 5, 7)]);
    cross_entropy_case(&mut v, &[0.7, 1.9], false, No, &[capped(4096, 3, 5, 6, 7)]);
    cross_entropy_case(&mut v, &[1.0, 4.0], false, Yes, small);
    // Voxel weights (a two-channel target): windows of whole samples whose
    // target is twice a sample's voxels.
    cross_entropy_case(&mut v, &[0.3, 4.0], true, No, &[at(3, 17, 19, 23), at(2, 33, 35, 37)]);
    cross_entropy_case(&mut v, &[1.0, 0.5, 2.0], true, No, &[at(1, 3, 5, 7), capped(4096, 3, 5, 6, 7)]);
    bce_case(&mut v, 3.0, false, No, &[at(2, 7, 9, 11), at(2, 33, 35, 37), capped(4096, 2, 17, 19, 23)]);
    bce_case(&mut v, 0.5, false, No, &[at(3, 17, 19, 23)]);
    bce_case(&mut v, 1.0, true, No, &[at(2, 7, 9, 11), at(3, 17, 19, 23)]);
    bce_case(&mut v, 2.5, true, No, &[capped(4096, 2, 17, 19, 23)]);
    dice_case(&mut v, 3, 1, 1.0, No, &[at(2, 7, 9, 11)]);
    dice_case(&mut v, 2, 0, 1e-5, No, &[at(3, 17, 19, 23)]);
    dice_case(&mut v, 1, 0, 1.0, No, &[at(2, 7, 9, 11)]);
    dice_case(&mut v, 2, 1, 1.0, Yes, &[at(2, 33, 35, 37), capped(4096, 2, 17, 19, 23)]);

    // f32 <-> f16 conversion (needs shader-f16): odd element counts (an f16
    // tensor ends mid-word), values up to f16's range; 1 KiB bindings.
    cast_cases(&mut v, 1.0, No, &[at(2, 7, 9, 11), capped(1024, 2, 7, 9, 11)]);
    cast_cases(&mut v, 6e4, No, &[at(1, 3, 5, 7)]);
    cast_cases(&mut v, 4.0, Yes, small);

    // Optimizers: two steps, weight decay on; 1 KiB bindings.
    let adam = OptimizerConfig::Adam(AdamConfig { lr: 0.05, weight_decay: 0.01, ..AdamConfig::default() });
    let sgd = OptimizerConfig::Sgd(SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 0.01 });
    let opt_checks = &[at(2, 7, 9, 11), capped(1024, 2, 7, 9, 11)];
    optimizer_case(&mut v, "adam step", 3, adam.clone(), No, opt_checks);
    optimizer_case(&mut v, "sgd step", 3, sgd, No, opt_checks);
    optimizer_case(&mut v, "adam step", 1, adam, Yes, small);
    // The running average of the weights (odd counts: the vec4 body and
    // the tail; 1 KiB bindings: many windows).
    average_case(&mut v, 3, 0.3, No, opt_checks);
    average_case(&mut v, 1, 0.01, Yes, small);
    v
}

/// The cases `bench` times (`full` adds the widest layers).
pub fn bench_cases(full: bool) -> Vec<OpCase> {
    table().into_iter().filter(|c| c.bench == Bench::Yes || (full && c.bench == Bench::Full)).collect()
}

/// A finite-difference check of a reference backward: a scalar `loss` of
/// the op's reference forward at fixed small inputs (usually `Σ y ⊙ g` for a
/// fixed random `g`), and the reference gradient of each argument it
/// differentiates. The GPU backwards are held to these references by the
/// op cases above; these hold the references to the forward they differentiate.
pub struct GradCase {
    /// Op and the arguments checked, e.g. `conv3d k5`.
    pub op: String,
    /// The arguments of `loss` (reproducible).
    pub inputs: Vec<CpuTensor>,
    /// The loss in f64 at given arguments.
    pub loss: LossFn,
    /// `(argument index, name, reference gradient)` at `inputs`.
    pub grads: Vec<(usize, &'static str, CpuTensor)>,
    /// Central-difference step and the largest relative error allowed.
    pub step: f32,
    pub tol: f64,
}

/// The loss `L = Σ f(args) ⊙ g` in f64 (`g` a fixed random tensor), whose
/// gradient is the op's backward applied to `g`.
fn against(g: CpuTensor, f: impl Fn(&[CpuTensor]) -> CpuTensor + 'static) -> LossFn {
    Box::new(move |args| f(args).data.iter().zip(&g.data).map(|(&a, &b)| a as f64 * b as f64).sum())
}

/// Every op's reference backward against central differences of its
/// reference forward (`tests/ops_table.rs` runs them with one helper).
pub fn grad_cases() -> Vec<GradCase> {
    let mut v = Vec::new();
    // conv3d: linear in x, w and b (L = Σ y ⊙ g; step 1e-2 is exact up to rounding).
    for (k, seed) in [(3usize, 200u64), (1, 210), (5, 220)] {
        let (x, w, b) = (
            rnd(Shape5::new(1, 2, 3, 4, 5), seed),
            rnd(Shape5::new(3, 2, k, k, k), seed + 1),
            rnd(Shape5::new(1, 3, 1, 1, 1), seed + 2),
        );
        let g = rnd(Shape5::new(1, 3, 3, 4, 5), seed + 3);
        let grads = vec![
            (0, "x", conv3d::reference::backward_input(&g, &w)),
            (1, "w", conv3d::reference::backward_weight(&x, &g, k)),
            (2, "b", conv3d::reference::backward_bias(&g)),
        ];
        v.push(GradCase {
            op: format!("conv3d k{k}"),
            inputs: vec![x, w, b],
            loss: against(g, |t| conv3d::reference::forward(&t[0], &t[1], &t[2])),
            grads,
            step: 1e-2,
            tol: 1e-4,
        });
    }
    // Transposed conv (k 2, stride 2): linear too.
    {
        let xs = Shape5::new(2, 2, 1, 2, 3);
        let (x, w, b) = (rnd(xs, 60), rnd(Shape5::new(2, 3, 2, 2, 2), 61), rnd(Shape5::new(1, 3, 1, 1, 1), 62));
        let g = rnd(conv_transpose3d::output_shape(xs, w.shape).expect("valid shapes"), 63);
        let grads = vec![
            (0, "x", conv_transpose3d::reference::backward_input(&g, &w)),
            (1, "w", conv_transpose3d::reference::backward_weight(&x, &g)),
            (2, "b", conv_transpose3d::reference::backward_bias(&g)),
        ];
        v.push(GradCase {
            op: "convT".into(),
            inputs: vec![x, w, b],
            loss: against(g, |t| conv_transpose3d::reference::forward(&t[0], &t[1], &t[2])),
            grads,
            step: 1e-2,
            tol: 1e-4,
        });
    }
    // Batch norm in training mode (batch statistics): nonlinear in x and
    // gamma; truncation O(h²) and rounding ~1e-7/h.
    {
        let s = Shape5::new(2, 2, 2, 3, 2);
        let cs = Shape5::new(1, 2, 1, 1, 1);
        let x = CpuTensor::random(s, 70, -2.0, 3.0);
        let (gamma, beta) = (CpuTensor::random(cs, 71, 0.5, 1.5), rnd(cs, 72));
        let (rm, rv) = (rnd(cs, 73), CpuTensor::random(cs, 74, 0.5, 2.0));
        let r = rnd(s, 75);
        let cfg = BnConfig::default();
        let (_, mean, invstd, _, _) = batchnorm::reference::forward_train(&x, &gamma, &beta, &rm, &rv, &cfg);
        let (dx, dg, db) = batchnorm::reference::backward(&x, &gamma, &mean, &invstd, &r);
        v.push(GradCase {
            op: "batchnorm train".into(),
            inputs: vec![x, gamma, beta],
            loss: against(r, move |t| {
                batchnorm::reference::forward_train(&t[0], &t[1], &t[2], &rm, &rv, &BnConfig::default()).0
            }),
            grads: vec![(0, "x", dx), (1, "gamma", dg), (2, "beta", db)],
            step: 1e-3,
            tol: 2e-3,
        });
    }
    // Batch norm with the ReLU fused in: the same loss through max(y, 0),
    // at a seed whose outputs all stay at least 0.05 from the kink (the
    // central difference is then exact for the ReLU).
    {
        let s = Shape5::new(2, 2, 2, 3, 2);
        let cs = Shape5::new(1, 2, 1, 1, 1);
        let cfg = BnConfig { relu: true, ..BnConfig::default() };
        let plain = BnConfig::default();
        let (rm, rv) = (rnd(cs, 83), CpuTensor::random(cs, 84, 0.5, 2.0));
        let (x, gamma, beta) = (80u64..)
            .step_by(10)
            .map(|seed| {
                (CpuTensor::random(s, seed, -2.0, 3.0), CpuTensor::random(cs, seed + 1, 0.5, 1.5), rnd(cs, seed + 2))
            })
            .find(|(x, g, b)| {
                let y = batchnorm::reference::forward_train(x, g, b, &rm, &rv, &plain).0;
                y.data.iter().all(|v| v.abs() > 0.05) && y.data.iter().any(|&v| v < 0.0)
            })
            .unwrap();
        let r = rnd(s, 85);
        let (y, mean, invstd, _, _) = batchnorm::reference::forward_train(&x, &gamma, &beta, &rm, &rv, &cfg);
        let (dx, dg, db) = batchnorm::reference::backward_through_relu(&x, &gamma, &mean, &invstd, &y, &r);
        v.push(GradCase {
            op: "batchnorm train + relu".into(),
            inputs: vec![x, gamma, beta],
            loss: against(r, move |t| batchnorm::reference::forward_train(&t[0], &t[1], &t[2], &rm, &rv, &cfg).0),
            grads: vec![(0, "x", dx), (1, "gamma", dg), (2, "beta", db)],
            step: 1e-3,
            tol: 2e-3,
        });
    }
    // Frozen batch norm (running statistics as constants), with and without
    // the fused ReLU: affine in x, gamma and beta before the ReLU; outputs
    // kept 0.05 from the kink as above.
    for relu in [false, true] {
        let s = Shape5::new(2, 2, 2, 3, 2);
        let cs = Shape5::new(1, 2, 1, 1, 1);
        let cfg = BnConfig { relu, ..BnConfig::default() };
        let plain = BnConfig::default();
        let (rm, rv) = (rnd(cs, 93), CpuTensor::random(cs, 94, 0.5, 2.0));
        let (x, gamma, beta) = (90u64..)
            .step_by(10)
            .map(|seed| {
                (CpuTensor::random(s, seed, -2.0, 3.0), CpuTensor::random(cs, seed + 1, 0.5, 1.5), rnd(cs, seed + 2))
            })
            .find(|(x, g, b)| {
                let y = batchnorm::reference::forward_infer(x, g, b, &rm, &rv, &plain);
                y.data.iter().all(|v| v.abs() > 0.05) && y.data.iter().any(|&v| v < 0.0)
            })
            .unwrap();
        let r = rnd(s, 95);
        let y = batchnorm::reference::forward_infer(&x, &gamma, &beta, &rm, &rv, &cfg);
        let (mean, invstd) = batchnorm::reference::frozen_stats(&rm, &rv, cfg.eps);
        let (dx, dg, db) =
            batchnorm::reference::backward_saved(&x, &gamma, &mean, &invstd, true, relu.then_some(&y), &r);
        v.push(GradCase {
            op: if relu { "batchnorm frozen + relu" } else { "batchnorm frozen" }.into(),
            inputs: vec![x, gamma, beta],
            loss: against(r, move |t| batchnorm::reference::forward_infer(&t[0], &t[1], &t[2], &rm, &rv, &cfg)),
            grads: vec![(0, "x", dx), (1, "gamma", dg), (2, "beta", db)],
            step: 1e-3,
            tol: 2e-3,
        });
    }
    // Max pooling: distinct values (no ties, gaps above twice the step), so the max is differentiable.
    {
        let xs = Shape5::new(1, 2, 3, 4, 5);
        let mut x = rnd(xs, 8);
        x.data.iter_mut().enumerate().for_each(|(i, v)| *v += i as f32 * 1e-3);
        let (y, idx) = pool::reference::forward(&x);
        let g = rnd(y.shape, 9);
        let grad = pool::reference::backward(&idx, xs, &g);
        v.push(GradCase {
            op: "maxpool".into(),
            inputs: vec![x],
            loss: against(g, |t| pool::reference::forward(&t[0]).0),
            grads: vec![(0, "x", grad)],
            step: 1e-4,
            tol: 1e-3,
        });
    }
    // Channel concatenation: linear in both parts (two samples, so the
    // backward's split must follow the batch stride of each part).
    {
        let (a, b) = (rnd(Shape5::new(2, 2, 3, 4, 5), 30), rnd(Shape5::new(2, 3, 3, 4, 5), 31));
        let g = rnd(Shape5::new(2, 5, 3, 4, 5), 32);
        let (da, db) = concat::reference::backward(&g, 2);
        v.push(GradCase {
            op: "concat".into(),
            inputs: vec![a, b],
            loss: against(g, |t| concat::reference::forward(&t[0], &t[1])),
            grads: vec![(0, "a", da), (1, "b", db)],
            step: 1e-2,
            tol: 1e-4,
        });
    }
    // Softmax over channels, and the sigmoid and ReLU maps (ReLU's inputs
    // kept at least 0.05 from its kink, beyond the step).
    {
        let xs = Shape5::new(2, 4, 1, 2, 3);
        let x = CpuTensor::random(xs, 37, -2.0, 2.0);
        let g = rnd(xs, 38);
        let grad = softmax::reference::backward(&softmax::reference::forward(&x), &g);
        v.push(GradCase {
            op: "softmax".into(),
            inputs: vec![x],
            loss: against(g, |t| softmax::reference::forward(&t[0])),
            grads: vec![(0, "x", grad)],
            step: 1e-2,
            tol: 1e-3,
        });
        let x = CpuTensor::random(xs, 39, -3.0, 3.0);
        let g = rnd(xs, 40);
        let grad = activation::reference::sigmoid_backward(&activation::reference::sigmoid_forward(&x), &g);
        v.push(GradCase {
            op: "sigmoid".into(),
            inputs: vec![x],
            loss: against(g.clone(), |t| activation::reference::sigmoid_forward(&t[0])),
            grads: vec![(0, "x", grad)],
            step: 1e-2,
            tol: 1e-3,
        });
        let mut x = rnd(xs, 41);
        x.data.iter_mut().for_each(|v| *v += 0.05f32.copysign(*v));
        let grad = activation::reference::relu_backward(&x, &g);
        v.push(GradCase {
            op: "relu".into(),
            inputs: vec![x],
            loss: against(g, |t| activation::reference::relu_forward(&t[0])),
            grads: vec![(0, "x", grad)],
            step: 1e-2,
            tol: 1e-4,
        });
    }
    // The losses, each its own scalar: weighted cross-entropy (3 classes),
    // BCE with a positive weight, soft Dice on probabilities.
    {
        let s = Shape5::new(2, 3, 2, 2, 3);
        let z = CpuTensor::random(s, 50, -2.0, 2.0);
        let t = classes(s.with_c(1), 3, 51);
        let w = [0.3f32, 1.0, 2.0];
        let (_, g) = loss::reference::softmax_cross_entropy(&z, &t, &w).expect("valid targets");
        v.push(GradCase {
            op: "softmax cross-entropy".into(),
            inputs: vec![z.clone()],
            loss: Box::new(move |a| loss::reference::softmax_cross_entropy(&a[0], &t, &w).expect("valid targets").0),
            grads: vec![(0, "logits", g)],
            step: 1e-3,
            tol: 1e-5,
        });
        let tw = weighted_classes(s, 3, 54);
        let (_, g) = loss::reference::softmax_cross_entropy(&z, &tw, &w).expect("valid targets");
        v.push(GradCase {
            op: "softmax cross-entropy, voxel weights".into(),
            inputs: vec![z],
            loss: Box::new(move |a| loss::reference::softmax_cross_entropy(&a[0], &tw, &w).expect("valid targets").0),
            grads: vec![(0, "logits", g)],
            step: 1e-3,
            tol: 1e-5,
        });
        // BCE with 0/1 targets, and soft ones anywhere in [0, 1] (the centre map).
        let t1 = binary(s.with_c(1), 53);
        let soft = CpuTensor::random(s.with_c(1), 55, 0.0, 1.0);
        for (op, t, seed) in [("bce with logits", t1.clone(), 52), ("bce with logits, soft targets", soft, 56)] {
            let z1 = CpuTensor::random(s.with_c(1), seed, -3.0, 3.0);
            let (_, g) = loss::reference::bce_with_logits(&z1, &t, 2.5);
            v.push(GradCase {
                op: op.into(),
                inputs: vec![z1],
                loss: Box::new(move |a| loss::reference::bce_with_logits(&a[0], &t, 2.5).0),
                grads: vec![(0, "logits", g)],
                step: 1e-3,
                tol: 1e-5,
            });
        }
        let p = CpuTensor::random(s, 54, 0.05, 0.95);
        let (_, g) = loss::reference::soft_dice(&p, &t1, 2, 1.0);
        v.push(GradCase {
            op: "soft dice".into(),
            inputs: vec![p],
            loss: Box::new(move |a| loss::reference::soft_dice(&a[0], &t1, 2, 1.0).0),
            grads: vec![(0, "probs", g)],
            step: 1e-3,
            tol: 1e-5,
        });
    }
    v
}
