//! The conv3d forward kernel for CPU adapters (lavapipe): the same
//! convolution and contract as `conv_forward` in `shaders/conv3d.wgsl`
//! (same parameters, bindings, packed weights, channel groups and fused
//! epilogue), written out as straight-line WGSL for one (kernel size, tile)
//! by [`source`], because what is fast on a CPU driver is not what is fast
//! on a GPU:
//!
//! - lavapipe runs 8 invocations as the lanes of one AVX register, and
//!   (Mesa 25.0) a storage-buffer load whose offset is not a compile-time
//!   constant becomes 8 per-lane loads, each with a lane-mask test, a
//!   bounds check and branches, even when every lane reads the same
//!   address (measured: a vec4 costs about as much as 150 multiply-adds of
//!   8 lanes). So each invocation gathers the rows of input it needs once
//!   per (input channel, kz) and uses every gathered value `co_b x k x yb`
//!   times; and the weights, the same for every lane, are loaded once per
//!   subgroup where the adapter has subgroups of 8 or more lanes
//!   ([`Shape::subgroup_weights`], variant `cpu-unrolled`): lane `i` loads
//!   the `i`-th vec4 of each run of 8, and `subgroupBroadcast` hands each
//!   to all lanes (an element extract and a splat), 8x fewer loads.
//!   Where rows hold a multiple of 4 voxels ([`Shape::vec4_rows`]), each
//!   row of input is gathered as aligned vec4s: `xb + k - 1` values in
//!   3–4 loads instead of as many scalar ones, the same values.
//! - Mesa unrolls loops only up to a small budget and keeps arrays that
//!   loops index in memory. Here every loop inside a (input channel, kz)
//!   step is written out, with the accumulators, rows and weights as named
//!   values, so LLVM gets one basic block of independent multiply-add
//!   chains to schedule and spill as it sees fit.
//!
//! Lanes still walk consecutive (y-block, x-block) positions of one z-plane
//! and output-channel block, as in `conv_forward`, so the dispatch is the
//! same. On GPUs this form would spill its hundreds of values to local
//! memory: it is a variant for CPU adapters only.

use std::fmt::Write as _;

use crate::gpu::ShaderSource;

/// Entry point of the generated module.
pub const ENTRY: &str = "conv_unrolled";

/// One generated kernel's shape: kernel size `k` (odd), `co_b` output
/// channels (a multiple of 4) x `yb` rows x `xb` x-positions per
/// invocation, whether activations are f16, and whether the weights are
/// loaded once per subgroup and broadcast (needs subgroups of at least 8
/// lanes: `Need::Subgroups8` of [`super::variants`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    pub k: u32,
    pub co_b: u32,
    pub xb: u32,
    pub yb: u32,
    pub f16: bool,
    pub subgroup_weights: bool,
    /// Rows of input read as aligned vec4s ([`Shape::vec4_rows_fit`]).
    pub vec4_rows: bool,
}

impl Shape {
    /// Whether the generator supports this shape.
    pub fn valid(&self) -> bool {
        self.k % 2 == 1
            && self.k <= 7
            && block_valid(self.co_b, self.xb, self.yb)
            && (!self.vec4_rows || self.xb % 4 == 0)
    }

    /// Whether the kernel may read its rows of input as aligned vec4s: rows
    /// of a multiple of 4 voxels (so every vec4 of a row lies inside or
    /// outside it), x-blocks of a multiple of 4, and an input window whose
    /// base (`ConvParams::base_x`) is a multiple of 4 elements. Then each
    /// row of `xb + k - 1` values is 3–4 vec4 loads instead of as many
    /// scalar ones.
    pub fn vec4_rows_fit(xb: u32, w: usize, base_x: u32) -> bool {
        xb % 4 == 0 && w % 4 == 0 && base_x % 4 == 0
    }
}

/// Whether the generator supports blocks of `co_b` output channels x `yb`
/// rows x `xb` x-positions (weights are read as vec4s).
pub fn block_valid(co_b: u32, xb: u32, yb: u32) -> bool {
    co_b > 0 && co_b % 4 == 0 && co_b <= 32 && (1..=16).contains(&xb) && (1..=8).contains(&yb)
}

/// The aligned vec4s that hold x-positions `x0 - r ..= x0 + xb - 1 + r` of
/// a row, for `x0` a multiple of 4 (`r` ≤ 4): `(lead, n)`, the first is
/// vec4 `x0 / 4 - lead` and there are `n` (the generated forward and
/// weight-gradient kernels' rows read as vec4s).
pub(crate) fn vec4_span(r: u32, xb: u32) -> (u32, u32) {
    let lead = r.div_ceil(4);
    (lead, lead + (xb - 1 + r) / 4 + 1)
}

/// The generated module for `shape` (built once per shape and kept).
pub fn source(shape: Shape) -> &'static ShaderSource {
    assert!(shape.valid(), "conv3d_unrolled: unsupported shape {shape:?}");
    let name = format!(
        "conv3d_unrolled_k{}_co{}_y{}_x{}{}{}{}",
        shape.k,
        shape.co_b,
        shape.yb,
        shape.xb,
        if shape.f16 { "_f16" } else { "" },
        if shape.subgroup_weights { "_sgw" } else { "" },
        if shape.vec4_rows { "_v4" } else { "" }
    );
    ShaderSource::generated(name, || generate(shape))
}

/// The WGSL text of the kernel for `shape`.
pub fn generate(s: Shape) -> String {
    let Shape { k, co_b, xb, yb, f16, subgroup_weights, vec4_rows } = s;
    let r = k / 2;
    let rows = yb + k - 1; // input rows per kz
    let cols = xb + k - 1; // input columns per row
    let q_n = co_b / 4; // vec4s of weights per tap
    let mut w = String::new();
    let act = if f16 { "f16" } else { "f32" };
    if f16 {
        w.push_str("enable f16;\n");
    }
    let _ = writeln!(
        w,
        "// Generated by src/ops/conv3d_unrolled.rs: k {k}, {co_b} output channels x {yb} rows x {xb} \
         x-positions per invocation, {act} activations{}{}.",
        if subgroup_weights { ", weights loaded once per subgroup" } else { "" },
        if vec4_rows { ", rows of input read as aligned vec4s" } else { "" }
    );
    w.push_str(super::conv3d::SHADER.struct_decl("ConvParams"));
    let _ = write!(
        w,
        r#"

@group(0) @binding(0) var<storage, read> {cx}: array<{cx_ty}>;
@group(0) @binding(1) var<storage, read> cw4: array<vec4<{act}>>;
@group(0) @binding(2) var<storage, read> cb: array<f32>;
@group(0) @binding(3) var<storage, read_write> cout: array<{act}>;
@group(0) @binding(4) var<uniform> cp: ConvParams;

override WG: u32 = 32u;

@compute @workgroup_size(WG)
fn {ENTRY}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32{sid}) {{
    let g = wid.x + wid.y * nwg.x;
    // cp.tiles: workgroups per output-channel block, covering the
    // (z, y-block, x-block) positions of every plane in order, so a small
    // plane (8 x 8: 4 positions) does not leave most lanes of a workgroup
    // idle; a workgroup may span planes.
    if (g >= cp.n_cob * cp.tiles) {{ return; }}
    let cob = g / cp.tiles;
    let nyb = (cp.h + {ybm1}u) / {yb}u;
    let per_plane = nyb * cp.nxb;
    let total = cp.d * per_plane;
    // Lanes past the volume compute on clamped positions and do not store:
    // control flow stays uniform, so every lane is active where the
    // weights are broadcast from lanes 0-7.
    let p0 = (g % cp.tiles) * WG;
    let p = p0 + lid;
    let live = p < total;
    let pc = min(p, total - 1u);
    let z = pc / per_plane;
    let pp = pc % per_plane;
    // The workgroup's first and last planes (uniform): a kz that misses
    // every lane's plane is skipped; one that misses some is masked.
    let z_lo = i32(min(p0, total - 1u) / per_plane);
    let z_hi = i32(min(p0 + WG - 1u, total - 1u) / per_plane);
    let y0 = i32((pp / cp.nxb) * {yb}u);
    let x0 = i32((pp % cp.nxb) * {xb}u);
    let hi = i32(cp.h);
    let wi = i32(cp.w);
    let di = i32(cp.d);
"#,
        ybm1 = yb - 1,
        cx = if vec4_rows { "cx4" } else { "cx" },
        cx_ty = if vec4_rows { format!("vec4<{act}>") } else { act.to_string() },
        sid = if subgroup_weights { ", @builtin(subgroup_invocation_id) sid: u32" } else { "" },
    );
    // Columns: clamped index and inside-mask, once per invocation. With
    // vec4 rows, columns x0 - r .. x0 + xb + r - 1 lie in the vec4s `lead`
    // before x0's to `n_q - lead - 1` after it (x0 is a multiple of 4), each
    // wholly inside or outside the row.
    let (lead, n_q) = vec4_span(r, xb);
    if vec4_rows {
        for j in 0..n_q {
            let _ = writeln!(w, "    let iq{j} = x0 / 4 + {};", j as i32 - lead as i32);
            let _ = writeln!(w, "    let c{j} = u32(clamp(iq{j}, 0, wi / 4 - 1));");
            let _ = writeln!(w, "    let m{j} = iq{j} >= 0 && iq{j} < wi / 4;");
        }
    } else {
        for j in 0..cols {
            let _ = writeln!(w, "    let ix{j} = x0 + {};", j as i32 - r as i32);
            let _ = writeln!(w, "    let c{j} = u32(clamp(ix{j}, 0, wi - 1));");
            let _ = writeln!(w, "    let m{j} = ix{j} >= 0 && ix{j} < wi;");
        }
    }
    for o in 0..co_b {
        for y in 0..yb {
            for x in 0..xb {
                let _ = writeln!(w, "    var a{o}_{y}_{x} = 0.0;");
            }
        }
    }
    let _ = write!(
        w,
        r#"    for (var ci = 0u; ci < cp.ci_n; ci = ci + 1u) {{
        let xc = cp.base_x + ci * cp.spatial;
        // vec4 index: the packed segment is its own buffer (base_w 0) and
        // co_b is a multiple of 4.
        let wc = (cp.base_w + (cob * cp.ci_n + ci) * {wstride}u) / 4u;
        for (var kz = 0u; kz < {k}u; kz = kz + 1u) {{
            if (z_hi + i32(kz) - {r} < 0 || z_lo + i32(kz) - {r} >= di) {{ continue; }}
            let iz = i32(z + kz) - {r};
            let zm = iz >= 0 && iz < di;
            let zb = xc + u32(clamp(iz, 0, di - 1)) * cp.h * cp.w;
            let wz = wc + kz * {wkz}u;
"#,
        wstride = k * k * k * co_b,
        wkz = k * k * q_n,
    );
    // Rows of input: gathered once per (ci, kz).
    for i in 0..rows {
        let _ = writeln!(w, "            let iy{i} = y0 + {};", i as i32 - r as i32);
        let _ = writeln!(w, "            let ym{i} = zm && iy{i} >= 0 && iy{i} < hi;");
        let _ = writeln!(w, "            let rb{i} = zb + u32(clamp(iy{i}, 0, hi - 1)) * cp.w;");
        if vec4_rows {
            for j in 0..n_q {
                let _ = writeln!(
                    w,
                    "            let q{i}_{j} = select(vec4<f32>(0.0), vec4<f32>(cx4[rb{i} / 4u + c{j}]), ym{i} && m{j});"
                );
            }
            for j in 0..cols {
                let at = j + 4 * lead - r;
                let _ = writeln!(
                    w,
                    "            let v{i}_{j} = q{i}_{}.{};",
                    at / 4,
                    ["x", "y", "z", "w"][(at % 4) as usize]
                );
            }
            continue;
        }
        for j in 0..cols {
            let _ = writeln!(w, "            let v{i}_{j} = select(0.0, f32(cx[rb{i} + c{j}]), ym{i} && m{j});");
        }
    }
    // Weights of this kz: the same for every lane. With subgroup_weights
    // lane i loads vec4 i of each run of 8 (the last run clamped to this
    // kz's weights) and every lane takes them from there.
    let n_w = k * k * q_n;
    for t in 0..k * k {
        for q in 0..q_n {
            let i = t * q_n + q;
            if !subgroup_weights {
                let _ = writeln!(w, "            let w{t}_{q} = vec4<f32>(cw4[wz + {i}u]);");
                continue;
            }
            if i % 8 == 0 {
                let _ =
                    writeln!(w, "            let wl{} = vec4<f32>(cw4[wz + min({i}u + sid, {}u)]);", i / 8, n_w - 1);
            }
            let _ = writeln!(w, "            let w{t}_{q} = subgroupBroadcast(wl{}, {}u);", i / 8, i % 8);
        }
    }
    // One chain of k² multiply-adds per accumulator.
    for o in 0..co_b {
        let (q, c) = (o / 4, ["x", "y", "z", "w"][(o % 4) as usize]);
        for y in 0..yb {
            for x in 0..xb {
                let mut e = format!("a{o}_{y}_{x}");
                for ky in 0..k {
                    for kx in 0..k {
                        let t = ky * k + kx;
                        let _ = write!(e, " + w{t}_{q}.{c} * v{}_{}", y + ky, x + kx);
                    }
                }
                let _ = writeln!(w, "            a{o}_{y}_{x} = {e};");
            }
        }
    }
    w.push_str("        }\n    }\n    if (!live) { return; }\n");
    // Epilogue: bias, or the partial sum of earlier input-channel groups;
    // ReLU on the last group when fused.
    for o in 0..co_b {
        let _ = write!(
            w,
            r#"    {{
        let co = cob * {co_b}u + {o}u;
        if (co < cp.co_n) {{
            var bias = 0.0;
            if (cp.use_bias != 0u) {{ bias = cb[cp.base_b + co]; }}
"#
        );
        for y in 0..yb {
            let _ = writeln!(w, "            if (y0 + {y} < hi) {{");
            let _ = writeln!(
                w,
                "                let ob = cp.base_out + co * cp.spatial + (z * cp.h + u32(y0 + {y})) * cp.w;"
            );
            for x in 0..xb {
                let _ = write!(
                    w,
                    r#"                if (x0 + {x} < wi) {{
                    let i = ob + u32(x0 + {x});
                    var v = a{o}_{y}_{x};
                    if (cp.accumulate != 0u) {{ v = v + f32(cout[i]); }} else {{ v = v + bias; }}
                    if (cp.relu != 0u) {{ v = max(v, 0.0); }}
                    cout[i] = {act}(v);
                }}
"#
                );
            }
            w.push_str("            }\n");
        }
        w.push_str("        }\n    }\n");
    }
    w.push_str("}\n");
    w
}
