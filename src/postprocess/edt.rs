//! Euclidean distance transform of a 3-D mask with anisotropic voxels
//! (`shaders/edt.wgsl`).
//!
//! Convention (as `scipy.ndimage.distance_transform_edt` on the foreground):
//! each foreground (non-zero) voxel gets its distance in µm to the nearest
//! background voxel, background voxels get 0. Voxels outside the volume are
//! not background. With no background voxel at all every distance is
//! `f32::INFINITY` (no error).
//!
//! - [`EdtMethod::Exact`]: separable lower envelope of parabolas
//!   (Felzenszwalb & Huttenlocher 2012), one pass per axis (x, y, z), one
//!   invocation per 1-D line, squared distances in f32. Equals the f64
//!   reference to float rounding.
//! - [`EdtMethod::Jfa`]: jump flooding on nearest-background voxels (packed
//!   coordinates, at most [`JFA_MAX_DIM`] per axis) with
//!   steps N/2, …, 1 and two extra passes (2, 1) (JFA+2); approximate: see
//!   [`compare`] and the report of `edt_jfa_error_is_small` in
//!   `tests/postprocess_ops.rs`.

use super::{check_fits, launch, new_volume, upload_mask, GpuVolume, Grid};
use crate::error::Result;
use crate::gpu::{Arg, GpuContext, ShaderSource};

pub const SHADER: ShaderSource = crate::shader!("edt");
/// Workgroup size of every EDT kernel.
pub const WG: u32 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum EdtMethod {
    #[default]
    Exact,
    Jfa,
}

uniform_params! {
    struct Params {
        d: u32,
        h: u32,
        w: u32,
        n: u32,
        stride: u32,
        lines: u32,
        step: u32,
        inf_bits: u32,
        w2: f32,
        sz: f32,
        sy: f32,
        sx: f32,
    }
}

fn params(grid: &Grid) -> Params {
    let [d, h, w] = grid.dims;
    Params {
        d: d as u32,
        h: h as u32,
        w: w as u32,
        n: 0,
        stride: 1,
        lines: 0,
        step: 0,
        inf_bits: f32::INFINITY.to_bits(),
        w2: 1.0,
        sz: grid.spacing[0],
        sy: grid.spacing[1],
        sx: grid.spacing[2],
    }
}

/// EDT of a mask on the host: uploads, runs [`edt_gpu`], downloads.
pub fn edt(ctx: &GpuContext, mask: &[u8], grid: &Grid, method: EdtMethod) -> Result<Vec<f32>> {
    grid.validate("edt")?;
    grid.check_len("edt", "mask", mask.len())?;
    let m = upload_mask(ctx, mask, grid.dims, "edt mask")?;
    let out = edt_gpu(ctx, &m, grid, method)?;
    ctx.read_f32(&out.buf, 0, grid.numel())
}

/// EDT of a mask already on the GPU (u32 per voxel, non-zero = foreground);
/// returns f32 distances in µm.
pub fn edt_gpu(ctx: &GpuContext, mask: &GpuVolume, grid: &Grid, method: EdtMethod) -> Result<GpuVolume> {
    grid.validate("edt")?;
    if mask.dims != grid.dims {
        return Err(crate::Error::shape("edt", format!("mask {:?} vs grid {:?}", mask.dims, grid.dims)));
    }
    match method {
        EdtMethod::Exact => exact(ctx, mask, grid),
        EdtMethod::Jfa => jfa(ctx, mask, grid),
    }
}

fn exact(ctx: &GpuContext, mask: &GpuVolume, grid: &Grid) -> Result<GpuVolume> {
    let [d, h, w] = grid.dims;
    let n = grid.numel();
    // Scratch for the largest pass: lines * (n + 1) = numel + lines.
    let scratch = n + [d * h, d * w, h * w].into_iter().max().unwrap();
    check_fits(ctx, "edt", grid.dims, 1)?;
    if (scratch * 4) as u64 > ctx.binding_limit() {
        return Err(crate::Error::shape("edt", format!("volume {:?}: EDT scratch exceeds one binding", grid.dims)));
    }
    let a = new_volume(ctx, grid.dims, 0, "edt A")?;
    let b = new_volume(ctx, grid.dims, 0, "edt B")?;
    let vbuf = ctx.create_storage((scratch * 4) as u64, "edt sites")?;
    let zbuf = ctx.create_storage((scratch * 4) as u64, "edt bounds")?;
    let base = params(grid);
    let label = format!("edt exact {d}x{h}x{w}");
    launch(
        ctx,
        &label,
        &SHADER,
        "edt_init",
        WG,
        &[
            Arg::Whole(&mask.buf),
            Arg::Whole(&b.buf),
            Arg::Whole(&a.buf),
            Arg::Whole(&vbuf),
            Arg::Whole(&zbuf),
            Arg::Uniform(bytemuck::bytes_of(&base)),
        ],
        n,
    )?;
    // (length, stride, spacing) of the x, y, z passes; ping-pong a -> b -> a -> b.
    let passes = [(w, 1, grid.spacing[2]), (h, w, grid.spacing[1]), (d, h * w, grid.spacing[0])];
    let (mut src, mut dst) = (&a, &b);
    for (len, stride, sp) in passes {
        let p = Params { n: len as u32, stride: stride as u32, lines: (n / len) as u32, w2: sp * sp, ..base };
        launch(
            ctx,
            &label,
            &SHADER,
            "edt_pass",
            WG,
            &[
                Arg::Whole(&mask.buf),
                Arg::Whole(&src.buf),
                Arg::Whole(&dst.buf),
                Arg::Whole(&vbuf),
                Arg::Whole(&zbuf),
                Arg::Uniform(bytemuck::bytes_of(&p)),
            ],
            n / len,
        )?;
        std::mem::swap(&mut src, &mut dst);
    }
    // After three passes the result is in `src` (= b).
    launch(
        ctx,
        &label,
        &SHADER,
        "edt_finish",
        WG,
        &[
            Arg::Whole(&mask.buf),
            Arg::Whole(&dst.buf),
            Arg::Whole(&src.buf),
            Arg::Whole(&vbuf),
            Arg::Whole(&zbuf),
            Arg::Uniform(bytemuck::bytes_of(&base)),
        ],
        n,
    )?;
    Ok(src.clone())
}

/// JFA steps: N/2, …, 1 (N = largest dimension rounded up to a power of two), then 2, 1.
pub fn jfa_steps(dims: [usize; 3]) -> Vec<u32> {
    let m = dims.iter().copied().max().unwrap_or(1).next_power_of_two() as u32;
    let mut v = Vec::new();
    let mut k = (m / 2).max(1);
    while k >= 1 {
        v.push(k);
        k /= 2;
    }
    v.extend([2, 1]);
    v
}

/// Largest dimension JFA supports (seeds pack z, y, x in 10 bits each).
pub const JFA_MAX_DIM: usize = 1024;

fn jfa(ctx: &GpuContext, mask: &GpuVolume, grid: &Grid) -> Result<GpuVolume> {
    let [d, h, w] = grid.dims;
    let n = grid.numel();
    if grid.dims.iter().any(|&k| k > JFA_MAX_DIM) {
        return Err(crate::Error::shape(
            "edt jfa",
            format!(
                "volume {:?}: jump flooding supports at most {JFA_MAX_DIM} voxels per axis; use the exact EDT",
                grid.dims
            ),
        ));
    }
    check_fits(ctx, "edt jfa", grid.dims, 1)?;
    let s0 = new_volume(ctx, grid.dims, 0, "jfa seeds A")?;
    let s1 = new_volume(ctx, grid.dims, 0, "jfa seeds B")?;
    let out = new_volume(ctx, grid.dims, 0, "jfa distance")?;
    let base = params(grid);
    let label = format!("edt jfa {d}x{h}x{w}");
    let args = |p: &Params, sin: &GpuVolume, sout: &GpuVolume, entry: &str| -> Result<()> {
        launch(
            ctx,
            &label,
            &SHADER,
            entry,
            WG,
            &[
                Arg::Whole(&mask.buf),
                Arg::Whole(&out.buf),
                Arg::Whole(&out.buf),
                Arg::Whole(&out.buf),
                Arg::Whole(&out.buf),
                Arg::Uniform(bytemuck::bytes_of(p)),
                Arg::Whole(&sin.buf),
                Arg::Whole(&sout.buf),
            ],
            n,
        )
    };
    args(&base, &s1, &s0, "jfa_init")?;
    let (mut a, mut b) = (&s0, &s1);
    for step in jfa_steps(grid.dims) {
        args(&Params { step, ..base }, a, b, "jfa_step")?;
        std::mem::swap(&mut a, &mut b);
    }
    args(&base, a, b, "jfa_finish")?;
    Ok(out)
}

/// How far an approximate EDT is from the exact one.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct EdtError {
    pub voxels: usize,
    /// Voxels whose distance differs by more than `tol` (relative).
    pub wrong: usize,
    pub frac_wrong: f64,
    /// Largest absolute error in µm.
    pub max_abs: f64,
    /// Largest error relative to the exact distance.
    pub max_rel: f64,
}

/// Compares `approx` with `exact` (both in µm); a voxel is wrong when
/// `|a - e| > tol * max(e, 1e-6)`. Infinite values must match exactly.
pub fn compare(approx: &[f32], exact: &[f32], tol: f64) -> EdtError {
    let mut e = EdtError { voxels: exact.len(), ..Default::default() };
    for (&a, &x) in approx.iter().zip(exact) {
        let (a, x) = (a as f64, x as f64);
        if a.is_infinite() || x.is_infinite() || a.is_nan() {
            if a != x {
                e.wrong += 1;
                e.max_abs = f64::INFINITY;
                e.max_rel = f64::INFINITY;
            }
            continue;
        }
        let d = (a - x).abs();
        if d > tol * x.max(1e-6) {
            e.wrong += 1;
        }
        e.max_abs = e.max_abs.max(d);
        if x > 0.0 {
            e.max_rel = e.max_rel.max(d / x);
        }
    }
    e.frac_wrong = e.wrong as f64 / e.voxels.max(1) as f64;
    e
}

/// Plain-Rust references.
pub mod reference {
    use super::Grid;

    /// 1-D squared distance transform with weight `w2`: out(q) = min_p w2 (q-p)^2 + f(p);
    /// infinite sites are skipped.
    fn fh_line(f: &[f64], w2: f64, out: &mut [f64], v: &mut Vec<usize>, z: &mut Vec<f64>) {
        v.clear();
        z.clear();
        for (q, &fq) in f.iter().enumerate() {
            if !fq.is_finite() {
                continue;
            }
            let qf = q as f64;
            while let Some(&p) = v.last() {
                let pf = p as f64;
                let s = ((fq - f[p]) / (w2 * (qf - pf)) + (qf + pf)) * 0.5;
                if s <= *z.last().unwrap() {
                    v.pop();
                    z.pop();
                } else {
                    v.push(q);
                    z.push(s);
                    break;
                }
            }
            if v.is_empty() {
                v.push(q);
                z.push(f64::NEG_INFINITY);
            }
        }
        if v.is_empty() {
            out.fill(f64::INFINITY);
            return;
        }
        let mut j = 0;
        for (q, o) in out.iter_mut().enumerate() {
            let qf = q as f64;
            while j + 1 < v.len() && z[j + 1] < qf {
                j += 1;
            }
            let d = qf - v[j] as f64;
            *o = w2 * d * d + f[v[j]];
        }
    }

    /// Exact EDT in µm by the separable method in f64.
    pub fn edt(mask: &[u8], grid: &Grid) -> Vec<f32> {
        let [d, h, w] = grid.dims;
        let mut f: Vec<f64> = mask.iter().map(|&m| if m != 0 { f64::INFINITY } else { 0.0 }).collect();
        let (mut v, mut z) = (Vec::new(), Vec::new());
        let passes = [(w, 1usize, grid.spacing[2]), (h, w, grid.spacing[1]), (d, h * w, grid.spacing[0])];
        for (len, stride, sp) in passes {
            let w2 = sp as f64 * sp as f64;
            let lines = f.len() / len;
            let mut line = vec![0f64; len];
            let mut out = vec![0f64; len];
            for l in 0..lines {
                let base = (l / stride) * (stride * len) + l % stride;
                for (q, x) in line.iter_mut().enumerate() {
                    *x = f[base + q * stride];
                }
                fh_line(&line, w2, &mut out, &mut v, &mut z);
                for (q, &x) in out.iter().enumerate() {
                    f[base + q * stride] = x;
                }
            }
        }
        f.iter().map(|&x| x.sqrt() as f32).collect()
    }

    /// Brute force over all background voxels (tiny volumes only): checks [`edt`].
    pub fn edt_brute(mask: &[u8], grid: &Grid) -> Vec<f32> {
        let [d, h, w] = grid.dims;
        let sp = grid.spacing.map(|s| s as f64);
        let bg: Vec<[usize; 3]> =
            (0..mask.len()).filter(|&i| mask[i] == 0).map(|i| [i / (h * w), (i / w) % h, i % w]).collect();
        (0..d * h * w)
            .map(|i| {
                if mask[i] == 0 {
                    return 0.0;
                }
                let c = [i / (h * w), (i / w) % h, i % w];
                bg.iter()
                    .map(|b| (0..3).map(|k| ((c[k] as f64 - b[k] as f64) * sp[k]).powi(2)).sum::<f64>())
                    .fold(f64::INFINITY, f64::min)
                    .sqrt() as f32
            })
            .collect()
    }
}
