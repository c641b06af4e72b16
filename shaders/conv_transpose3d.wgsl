// Transposed 3-D convolution with kernel 2 and stride 2 (PyTorch
// ConvTranspose3d(k=2, s=2)): every output voxel (2z+a, 2y+b, 2x+c) depends on
// exactly one input voxel (z, y, x) through tap t = a*4 + b*2 + c:
//   y[n, co, 2z+a, 2y+b, 2x+c] = bias[co] + sum_ci x[n, ci, z, y, x] * w[ci, co, t]
// Weights are laid out [ci][co][8 taps], so the 8 taps of one (ci, co) pair are
// two vec4s.
//
// Register blocking, no workgroup memory and no barriers (lavapipe runs each
// barrier as a coroutine switch):
//   forward          one input voxel x CO_B output channels x 8 taps per invocation;
//                    per input channel: 1 load of x, CO_B*2 uniform vec4 weight loads.
//   backward_input   one input voxel x CI_B input channels per invocation; per
//                    output channel: 8 loads of dy, CI_B*2 uniform vec4 weight loads.
//   weight_partials  CI_B input channels x 1 output channel x 8 taps for one
//                    chunk of input rows per invocation, written as a partial sum;
//   weight_finish    sums the partials of each weight in a fixed order
//                    (deterministic, no float atomics).
//
// Bindings (each entry point uses a subset):
//   0 src  (read)        x (forward, weight_partials), dy (backward_input), partials (weight_finish)
//   1 w4   (read)        weights as vec4 (whole tensor, base 0)
//   2 bias (read)        bias (whole tensor)
//   3 dst  (read_write)  y (forward), dx (backward_input), partials (weight_partials), dw (weight_finish)
//   4 p    (uniform)
//   5 src2 (read)        dy (weight_partials)
// `*_base` are window bases; `*_stride` the element stride between samples.

struct Params {
    samples: u32,     // samples covered by this dispatch
    d: u32,           // input-side spatial size (output side is 2x)
    h: u32,
    w: u32,
    c_red: u32,       // channels summed over in this group (forward: ci; backward_input: co); weight_partials: ci
    c_out: u32,       // channels written in this group (forward: co; backward_input: ci); weight_partials: co
    ci0: u32,         // first input channel of this dispatch (absolute, for weight indexing)
    co0: u32,         // first output channel of this dispatch (absolute)
    c_out_total: u32, // output channels of the layer (weight row length)
    src_base: u32,
    src_stride: u32,
    dst_base: u32,
    dst_stride: u32,
    accumulate: u32,  // 1: add to dst (later reduction groups); 0: overwrite (+ bias in forward)
    src2_base: u32,
    src2_stride: u32,
    rows_per_chunk: u32, // weight_partials: input rows (z, y) per chunk
    nchunks: u32,        // chunks per sample
    m_total: u32,        // partials per weight (samples of the layer x chunks)
    m0: u32,             // partial index of this dispatch's first sample, chunk 0
    count: u32,          // weight_finish: weights in this group
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

override WG: u32 = 64u;
// Register blocks (constants: they size function-scope arrays).
const CO_B: u32 = 4u;  // forward: output channels per invocation
const VB: u32 = 4u;    // forward: input voxels per invocation
const CI_B: u32 = 8u;  // backward_input: input channels per invocation
const VB_I: u32 = 4u;  // backward_input: input voxels per invocation
const CI_BW: u32 = 8u; // weight_partials: input channels per invocation

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read> w4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;
@group(0) @binding(5) var<storage, read> src2: array<f32>;

fn linear_wg(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// Index, relative to the start of one output channel, of output voxel (2z, 2y, 2x).
fn out_corner(z: u32, y: u32, x: u32) -> u32 {
    return ((2u * z) * (2u * p.h) + 2u * y) * (2u * p.w) + 2u * x;
}

// Offset of tap t = a*4 + b*2 + c from the corner (2z, 2y, 2x).
fn tap_off(t: u32) -> u32 {
    let a = t >> 2u;
    let b = (t >> 1u) & 1u;
    let c = t & 1u;
    return (a * (2u * p.h) + b) * (2u * p.w) + c;
}

// Grid: samples x ceil(c_out / CO_B) x ceil(spatial / (WG * VB)) workgroups.
// Invocation lid of voxel chunk vc handles voxels (vc * VB + k) * WG + lid, k < VB.
@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let spatial = p.d * p.h * p.w;
    let nvc = (spatial + WG * VB - 1u) / (WG * VB);
    let ncb = (p.c_out + CO_B - 1u) / CO_B;
    let g = linear_wg(wid, nwg);
    if (g >= p.samples * ncb * nvc) { return; }
    let vc = g % nvc;
    let cb = (g / nvc) % ncb;
    let s = g / (nvc * ncb);
    let v0 = vc * VB * WG + lid;
    if (v0 >= spatial) { return; }
    let co_first = cb * CO_B;

    // acc[(k * CO_B + j) * 2 + half]: voxel k, output channel j, taps 4*half .. 4*half+3.
    var acc: array<vec4<f32>, 2u * CO_B * VB>;
    for (var i = 0u; i < 2u * CO_B * VB; i = i + 1u) {
        acc[i] = vec4<f32>(0.0);
    }
    var xo: array<u32, VB>;
    for (var k = 0u; k < VB; k = k + 1u) {
        // Voxels past the end read a valid voxel; their results are not stored.
        xo[k] = p.src_base + s * p.src_stride + min(v0 + k * WG, spatial - 1u);
    }
    var wcol: array<u32, CO_B>;
    for (var j = 0u; j < CO_B; j = j + 1u) {
        // Tail block: clamp the column (its results are not stored).
        wcol[j] = p.co0 + min(co_first + j, p.c_out - 1u);
    }
    for (var ci = 0u; ci < p.c_red; ci = ci + 1u) {
        var xv: array<vec4<f32>, VB>;
        for (var k = 0u; k < VB; k = k + 1u) {
            xv[k] = vec4<f32>(src[xo[k] + ci * spatial]);
        }
        let row = (p.ci0 + ci) * p.c_out_total;
        for (var j = 0u; j < CO_B; j = j + 1u) {
            let wi = (row + wcol[j]) * 2u;
            let wl = w4[wi];
            let wh = w4[wi + 1u];
            for (var k = 0u; k < VB; k = k + 1u) {
                let a = (k * CO_B + j) * 2u;
                acc[a] = fma(xv[k], wl, acc[a]);
                acc[a + 1u] = fma(xv[k], wh, acc[a + 1u]);
            }
        }
    }

    let hw2 = 4u * p.h * p.w;
    let w2 = 2u * p.w;
    let ospatial = 8u * spatial;
    for (var k = 0u; k < VB; k = k + 1u) {
        let v = v0 + k * WG;
        if (v < spatial) {
            let x = v % p.w;
            let y = (v / p.w) % p.h;
            let z = v / (p.w * p.h);
            let corner = out_corner(z, y, x);
            for (var j = 0u; j < CO_B; j = j + 1u) {
                let co = co_first + j;
                if (co < p.c_out) {
                    let o = p.dst_base + s * p.dst_stride + co * ospatial + corner;
                    var idx = array<u32, 8>(o, o + 1u, o + w2, o + w2 + 1u, o + hw2, o + hw2 + 1u, o + hw2 + w2, o + hw2 + w2 + 1u);
                    let lo = acc[(k * CO_B + j) * 2u];
                    let hi = acc[(k * CO_B + j) * 2u + 1u];
                    var vals = array<f32, 8>(lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
                    if (p.accumulate != 0u) {
                        for (var t = 0u; t < 8u; t = t + 1u) {
                            dst[idx[t]] = dst[idx[t]] + vals[t];
                        }
                    } else {
                        let b = bias[p.co0 + co];
                        for (var t = 0u; t < 8u; t = t + 1u) {
                            dst[idx[t]] = vals[t] + b;
                        }
                    }
                }
            }
        }
    }
}

// dx[n, ci, z, y, x] = sum_co sum_t dy[n, co, 2z+a, 2y+b, 2x+c] * w[ci, co, t]
// Grid: samples x ceil(c_out / CI_B) x ceil(spatial / (WG * VB_I)) workgroups,
// where here c_out counts the input channels written and c_red the dy channels.
// Invocation lid of chunk vc handles voxels (vc * VB_I + k) * WG + lid, k < VB_I,
// so each weight load serves VB_I voxels.
@compute @workgroup_size(WG)
fn backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let spatial = p.d * p.h * p.w;
    let nvc = (spatial + WG * VB_I - 1u) / (WG * VB_I);
    let ncb = (p.c_out + CI_B - 1u) / CI_B;
    let g = linear_wg(wid, nwg);
    if (g >= p.samples * ncb * nvc) { return; }
    let vc = g % nvc;
    let cb = (g / nvc) % ncb;
    let s = g / (nvc * ncb);
    let v0 = vc * VB_I * WG + lid;
    if (v0 >= spatial) { return; }
    let ci_first = cb * CI_B;
    let hw2 = 4u * p.h * p.w;
    let w2 = 2u * p.w;
    let ospatial = 8u * spatial;

    var o0: array<u32, VB_I>;
    for (var k = 0u; k < VB_I; k = k + 1u) {
        // Voxels past the end read a valid voxel; their results are not stored.
        let v = min(v0 + k * WG, spatial - 1u);
        o0[k] = p.src_base + s * p.src_stride + out_corner(v / (p.w * p.h), (v / p.w) % p.h, v % p.w);
    }
    var wrow: array<u32, CI_B>;
    for (var j = 0u; j < CI_B; j = j + 1u) {
        wrow[j] = (p.ci0 + min(ci_first + j, p.c_out - 1u)) * p.c_out_total + p.co0;
    }
    var acc: array<f32, CI_B * VB_I>;
    for (var i = 0u; i < CI_B * VB_I; i = i + 1u) {
        acc[i] = 0.0;
    }
    for (var co = 0u; co < p.c_red; co = co + 1u) {
        var dlo: array<vec4<f32>, VB_I>;
        var dhi: array<vec4<f32>, VB_I>;
        for (var k = 0u; k < VB_I; k = k + 1u) {
            let o = o0[k] + co * ospatial;
            dlo[k] = vec4<f32>(src[o], src[o + 1u], src[o + w2], src[o + w2 + 1u]);
            dhi[k] = vec4<f32>(src[o + hw2], src[o + hw2 + 1u], src[o + hw2 + w2], src[o + hw2 + w2 + 1u]);
        }
        for (var j = 0u; j < CI_B; j = j + 1u) {
            let wi = (wrow[j] + co) * 2u;
            let wl = w4[wi];
            let wh = w4[wi + 1u];
            for (var k = 0u; k < VB_I; k = k + 1u) {
                acc[k * CI_B + j] = acc[k * CI_B + j] + dot(dlo[k], wl) + dot(dhi[k], wh);
            }
        }
    }
    for (var k = 0u; k < VB_I; k = k + 1u) {
        let v = v0 + k * WG;
        if (v < spatial) {
            for (var j = 0u; j < CI_B; j = j + 1u) {
                let ci = ci_first + j;
                if (ci < p.c_out) {
                    let i = p.dst_base + s * p.dst_stride + ci * spatial + v;
                    if (p.accumulate != 0u) {
                        dst[i] = dst[i] + acc[k * CI_B + j];
                    } else {
                        dst[i] = acc[k * CI_B + j];
                    }
                }
            }
        }
    }
}

// Partial weight gradients. One invocation: input channels
// [cib*CI_BW, cib*CI_BW + CI_BW) of this group, output channel co, one chunk of
// input rows of one sample; it writes, for each of its CI_BW*8 weights, the sum
// over its chunk to partial slot m0 + s*nchunks + chunk.
// Partial layout (window-relative): ((ci_local * c_out_total + co_abs) * 8 + t) * m_total + m.
// Invocations: samples x nchunks x c_out x ceil(c_red / CI_BW), one per lane.
@compute @workgroup_size(WG)
fn weight_partials(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ncib = (p.c_red + CI_BW - 1u) / CI_BW;
    let t = linear_wg(wid, nwg) * WG + lid;
    if (t >= p.samples * p.nchunks * p.c_out * ncib) { return; }
    let cib = t % ncib;
    let co = (t / ncib) % p.c_out;
    let chunk = (t / (ncib * p.c_out)) % p.nchunks;
    let s = t / (ncib * p.c_out * p.nchunks);
    let spatial = p.d * p.h * p.w;
    let ospatial = 8u * spatial;
    let hw2 = 4u * p.h * p.w;
    let w2 = 2u * p.w;
    let ci_first = cib * CI_BW;

    var lo: array<vec4<f32>, CI_BW>;
    var hi: array<vec4<f32>, CI_BW>;
    var xoff: array<u32, CI_BW>;
    for (var j = 0u; j < CI_BW; j = j + 1u) {
        lo[j] = vec4<f32>(0.0);
        hi[j] = vec4<f32>(0.0);
        xoff[j] = p.src_base + s * p.src_stride + min(ci_first + j, p.c_red - 1u) * spatial;
    }
    let dyoff = p.src2_base + s * p.src2_stride + co * ospatial;
    let rows = p.d * p.h;
    let r_end = min((chunk + 1u) * p.rows_per_chunk, rows);
    for (var r = chunk * p.rows_per_chunk; r < r_end; r = r + 1u) {
        let z = r / p.h;
        let y = r % p.h;
        let orow = dyoff + out_corner(z, y, 0u);
        let irow = r * p.w;
        for (var x = 0u; x < p.w; x = x + 1u) {
            let o = orow + 2u * x;
            let dlo = vec4<f32>(src2[o], src2[o + 1u], src2[o + w2], src2[o + w2 + 1u]);
            let dhi = vec4<f32>(src2[o + hw2], src2[o + hw2 + 1u], src2[o + hw2 + w2], src2[o + hw2 + w2 + 1u]);
            for (var j = 0u; j < CI_BW; j = j + 1u) {
                let xv = vec4<f32>(src[xoff[j] + irow + x]);
                lo[j] = fma(xv, dlo, lo[j]);
                hi[j] = fma(xv, dhi, hi[j]);
            }
        }
    }
    let m = p.m0 + s * p.nchunks + chunk;
    for (var j = 0u; j < CI_BW; j = j + 1u) {
        let ci = ci_first + j;
        if (ci < p.c_red) {
            let e = ((ci * p.c_out_total + p.co0 + co) * 8u) * p.m_total + m;
            var vals = array<f32, 8>(lo[j].x, lo[j].y, lo[j].z, lo[j].w, hi[j].x, hi[j].y, hi[j].z, hi[j].w);
            for (var k = 0u; k < 8u; k = k + 1u) {
                dst[p.dst_base + e + k * p.m_total] = vals[k];
            }
        }
    }
}

// dw[e] = sum over m of partials[e * m_total + m], in order; one weight per invocation.
@compute @workgroup_size(WG)
fn weight_finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = linear_wg(wid, nwg) * WG + lid;
    if (e >= p.count) { return; }
    let first = p.src_base + e * p.m_total;
    var acc = 0.0;
    for (var m = 0u; m < p.m_total; m = m + 1u) {
        acc = acc + src[first + m];
    }
    dst[p.dst_base + e] = acc;
}
