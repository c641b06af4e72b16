//! Softmax over the channel axis, per voxel (`shaders/softmax.wgsl`), with the
//! maximum subtracted (online max/sum), so logits of any magnitude are safe.
//! Backward from the forward output: `dx = y · (dy − Σ_c y·dy)`.
//!
//! Size: one dispatch when the tensor fits one storage binding, else one per
//! sample; a sample larger than one binding is processed in channel groups
//! with per-voxel running statistics kept in two scratch buffers (one
//! channel of one sample must fit a binding).

// One-element vectors of ranges are meant: "one group covering everything".
#![allow(clippy::single_range_in_vec_init)]

use std::ops::Range;

use crate::error::{Error, Result};
use crate::gpu::{grid, split_units, Arg, GpuContext, GpuTensor, ShaderSource, Window};
use crate::tensor::Shape5;

pub const SHADER: ShaderSource = crate::shader!("softmax");
/// Workgroup size of every kernel.
pub const WG: u32 = 256;

uniform_params! {
    #[derive(Default)]
    struct Params {
        voxels: u32,
        samples: u32,
        channels: u32,
        first: u32,
        a_base: u32,
        b_base: u32,
        out_base: u32,
        stride: u32,
        m_base: u32,
        s_base: u32,
        _pad: [u32; 2],
    }
}

enum Plan {
    /// Fused kernel over these sample ranges (all channels in one window).
    Fused(Vec<Range<usize>>),
    /// Per sample, these channel groups, with per-voxel statistics.
    Groups(Vec<Range<usize>>),
}

fn plan(ctx: &GpuContext, s: Shape5, op: &str) -> Result<Plan> {
    let maxw = ctx.max_window_elems();
    if s.numel() <= maxw {
        Ok(Plan::Fused(vec![0..s.n]))
    } else if s.c * s.spatial() <= maxw {
        Ok(Plan::Fused((0..s.n).map(|n| n..n + 1).collect()))
    } else {
        Ok(Plan::Groups(split_units(s.c, s.spatial(), maxw, op)?))
    }
}

/// Runs forward (`dy = None`) or backward over all of `a`, writing `out`.
fn run(ctx: &GpuContext, op: &str, a: &GpuTensor, dy: Option<&GpuTensor>, out: &GpuTensor) -> Result<()> {
    let s = a.shape;
    let fwd = dy.is_none();
    let b = dy.unwrap_or(a);
    let label = format!("{op} {s}");
    let consts = [("WG", WG as f64)];
    let go = |entry: &str, wa: &Window, wb: &Window, wo: &Window, stats: Option<(&Window, &Window)>, p: &Params| {
        let pipeline = ctx.pipeline(&SHADER, entry, &consts)?;
        let (sm, ss) = stats.unwrap_or((wo, wo));
        let n = if stats.is_some() { p.voxels as u64 } else { p.samples as u64 * p.voxels as u64 };
        ctx.dispatch(
            &label,
            &pipeline,
            &[
                Arg::Buf(wa),
                Arg::Buf(wb),
                Arg::Buf(wo),
                Arg::Buf(sm),
                Arg::Buf(ss),
                Arg::Uniform(bytemuck::bytes_of(p)),
            ],
            grid(n.div_ceil(WG as u64)),
        )
    };
    let base = Params {
        voxels: s.spatial() as u32,
        channels: s.c as u32,
        stride: (s.c * s.spatial()) as u32,
        ..Default::default()
    };
    match plan(ctx, s, op)? {
        Plan::Fused(samples) => {
            let all = 0..s.c;
            for n in &samples {
                let (wa, wb, wo) =
                    (a.window_nc(ctx, n, &all)?, b.window_nc(ctx, n, &all)?, out.window_nc(ctx, n, &all)?);
                let p = Params { samples: n.len() as u32, a_base: wa.base, b_base: wb.base, out_base: wo.base, ..base };
                go(if fwd { "fused_forward" } else { "fused_backward" }, &wa, &wb, &wo, None, &p)?;
            }
        }
        Plan::Groups(groups) => {
            let stat = Shape5::new(1, 1, 1, 1, s.spatial());
            let (tm, ts) = (ctx.empty(stat, "softmax running max")?, ctx.empty(stat, "softmax running sum")?);
            let (wm, ws) = (tm.full_window(ctx)?, ts.full_window(ctx)?);
            for n in 0..s.n {
                let n = n..n + 1;
                for pass in 0..2 {
                    for (k, c) in groups.iter().enumerate() {
                        let (wa, wb, wo) =
                            (a.window_nc(ctx, &n, c)?, b.window_nc(ctx, &n, c)?, out.window_nc(ctx, &n, c)?);
                        let p = Params {
                            samples: 1,
                            channels: c.len() as u32,
                            first: (k == 0) as u32,
                            a_base: wa.base,
                            b_base: wb.base,
                            out_base: wo.base,
                            m_base: wm.base,
                            s_base: ws.base,
                            ..base
                        };
                        let entry = match (fwd, pass) {
                            (true, 0) => "stats_forward",
                            (true, _) => "write_forward",
                            (false, 0) => "dot_backward",
                            (false, _) => "write_backward",
                        };
                        go(entry, &wa, &wb, &wo, Some((&wm, &ws)), &p)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Softmax over channels at every voxel.
pub fn forward(ctx: &GpuContext, x: &GpuTensor) -> Result<GpuTensor> {
    if x.numel() == 0 {
        return Err(Error::shape("softmax forward", format!("empty input {}", x.shape)));
    }
    let y = ctx.empty(x.shape, "softmax y")?;
    run(ctx, "softmax forward", x, None, &y)?;
    Ok(y)
}

/// Gradient of the softmax from its output `y` and the upstream gradient `dy`.
pub fn backward(ctx: &GpuContext, y: &GpuTensor, dy: &GpuTensor) -> Result<GpuTensor> {
    if y.shape != dy.shape || y.numel() == 0 {
        return Err(Error::shape(
            "softmax backward",
            format!("output {} and gradient {} must match", y.shape, dy.shape),
        ));
    }
    let dx = ctx.empty(y.shape, "softmax dx")?;
    run(ctx, "softmax backward", y, Some(dy), &dx)?;
    Ok(dx)
}

/// Plain-Rust reference (f64).
pub mod reference {
    use crate::tensor::CpuTensor;

    pub fn forward(x: &CpuTensor) -> CpuTensor {
        let s = x.shape;
        let mut y = CpuTensor::zeros(s);
        for n in 0..s.n {
            for v in 0..s.spatial() {
                let at = |c: usize| (n * s.c + c) * s.spatial() + v;
                let m = (0..s.c).map(|c| x.data[at(c)] as f64).fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = (0..s.c).map(|c| (x.data[at(c)] as f64 - m).exp()).sum();
                for c in 0..s.c {
                    y.data[at(c)] = ((x.data[at(c)] as f64 - m).exp() / sum) as f32;
                }
            }
        }
        y
    }

    pub fn backward(y: &CpuTensor, dy: &CpuTensor) -> CpuTensor {
        let s = y.shape;
        assert_eq!(s, dy.shape);
        let mut dx = CpuTensor::zeros(s);
        for n in 0..s.n {
            for v in 0..s.spatial() {
                let at = |c: usize| (n * s.c + c) * s.spatial() + v;
                let dot: f64 = (0..s.c).map(|c| y.data[at(c)] as f64 * dy.data[at(c)] as f64).sum();
                for c in 0..s.c {
                    dx.data[at(c)] = (y.data[at(c)] as f64 * (dy.data[at(c)] as f64 - dot)) as f32;
                }
            }
        }
        dx
    }
}
