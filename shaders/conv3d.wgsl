// 3-D convolution, stride 1, zero padding K/2 ("same"), odd K <= 7.
//
// Entry points:
// - `pack_weights`: copies one (output-channel group, input-channel group) of
//   PyTorch-layout weights (C_out, C_in, K, K, K) into the blocked layout
//   [co_block][ci][tap][CO_B] the conv kernel reads (zero-padded to a
//   multiple of CO_B output channels). With `transposed = 1` it builds the
//   weights of the input-gradient convolution instead: channels swapped and
//   taps flipped, so backward_input runs the same conv kernel.
// - `conv_forward`: register-blocked direct convolution. One invocation
//   computes CO_B output channels x XB consecutive x-positions; a workgroup
//   covers one output-channel block and one z-plane (both uniform across the
//   workgroup, so weight loads and z bounds are uniform), invocations walk
//   (y, x-block) positions of the plane. Input-channel groups (split path)
//   accumulate into the output when `accumulate = 1`.
// - `weight_partials`: dW partial sums without atomics. A workgroup owns one
//   (voxel chunk, co block, ci, kz, ky); each invocation sums a contiguous run
//   of voxels into CO_B x K registers (the K taps along x), then the workgroup
//   adds its lanes in fixed order. `weight_finish` sums the partials of every
//   sample and chunk in fixed order: bit-identical from run to run.

override WG: u32 = 64u;
override CO_B: u32 = 8u;
override XB: u32 = 8u;
override K: u32 = 3u;

const MAX_CO: u32 = 8u;
const MAX_XB: u32 = 8u;
const MAX_K: u32 = 7u;
const MAX_ROW: u32 = 14u;     // MAX_XB + MAX_K - 1
const RED_SIZE: u32 = 3584u;  // >= WG * CO_B * K for weight_partials

// ---------------------------------------------------------------- packing

struct PackParams {
    o0: u32,          // first output channel (of the conv being packed for)
    o_n: u32,         // output channels in the group
    i0: u32,          // first input channel
    i_n: u32,         // input channels in the group
    c1: u32,          // dim 1 (C_in) of the original weight tensor
    transposed: u32,  // 1: input-gradient weights (swap channels, flip taps)
    base_src: u32,    // window offset of the first row read (row0)
    row0: u32,        // first dim-0 row of the original weights in the window
    total: u32,       // elements of the packed segment
    base_dst: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> pk_src: array<f32>;
@group(0) @binding(1) var<storage, read_write> pk_dst: array<f32>;
@group(0) @binding(2) var<uniform> pk: PackParams;

@compute @workgroup_size(WG)
fn pack_weights(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = (wid.x + wid.y * nwg.x) * WG + lid;
    if (e >= pk.total) { return; }
    let k3 = K * K * K;
    let oo = e % CO_B;
    let t = (e / CO_B) % k3;
    let il = (e / (CO_B * k3)) % pk.i_n;
    let ob = e / (CO_B * k3 * pk.i_n);
    let ol = ob * CO_B + oo;
    var v = 0.0;
    if (ol < pk.o_n) {
        let o = pk.o0 + ol;
        let i = pk.i0 + il;
        var src: u32;
        if (pk.transposed == 0u) {
            src = pk.base_src + ((o - pk.row0) * pk.c1 + i) * k3 + t;
        } else {
            src = pk.base_src + ((i - pk.row0) * pk.c1 + o) * k3 + (k3 - 1u - t);
        }
        v = pk_src[src];
    }
    pk_dst[pk.base_dst + e] = v;
}

// ---------------------------------------------------------------- forward

struct ConvParams {
    d: u32,
    h: u32,
    w: u32,
    spatial: u32,
    ci_n: u32,        // input channels in this group
    co_n: u32,        // output channels in this group
    nxb: u32,         // x-blocks per row: ceil(w / XB)
    tiles: u32,       // workgroups per z-plane: ceil(h * nxb / WG)
    base_x: u32,
    base_w: u32,
    base_b: u32,      // window offset of the group's first bias value
    base_out: u32,
    accumulate: u32,  // 1: add to the output (not the first input-channel group)
    use_bias: u32,
    n_cob: u32,       // output-channel blocks: ceil(co_n / CO_B)
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> cx: array<f32>;
@group(0) @binding(1) var<storage, read> cw: array<f32>;
@group(0) @binding(2) var<storage, read> cb: array<f32>;
@group(0) @binding(3) var<storage, read_write> cout: array<f32>;
@group(0) @binding(4) var<uniform> cp: ConvParams;

@compute @workgroup_size(WG)
fn conv_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    let per_cob = cp.d * cp.tiles;
    if (g >= cp.n_cob * per_cob) { return; }
    let cob = g / per_cob;
    let rem = g % per_cob;
    let z = rem / cp.tiles;
    let p = (rem % cp.tiles) * WG + lid;
    if (p >= cp.h * cp.nxb) { return; }
    let y = p / cp.nxb;
    let x0 = (p % cp.nxb) * XB;
    let r = i32(K / 2u);
    let k3 = K * K * K;
    let wi = i32(cp.w);

    var acc: array<f32, 64>;  // MAX_CO * MAX_XB
    for (var i = 0u; i < CO_B * XB; i = i + 1u) {
        acc[i] = 0.0;
    }
    var row: array<f32, MAX_ROW>;
    for (var ci = 0u; ci < cp.ci_n; ci = ci + 1u) {
        let xc = cp.base_x + ci * cp.spatial;
        let wc = cp.base_w + (cob * cp.ci_n + ci) * k3 * CO_B;
        for (var kz = 0u; kz < K; kz = kz + 1u) {
            let iz = i32(z + kz) - r;
            if (iz < 0 || iz >= i32(cp.d)) { continue; }
            for (var ky = 0u; ky < K; ky = ky + 1u) {
                let iy = i32(y + ky) - r;
                if (iy < 0 || iy >= i32(cp.h)) { continue; }
                let rb = xc + (u32(iz) * cp.h + u32(iy)) * cp.w;
                for (var j = 0u; j < XB + K - 1u; j = j + 1u) {
                    let ix = i32(x0 + j) - r;
                    let inside = ix >= 0 && ix < wi;
                    row[j] = select(0.0, cx[rb + u32(clamp(ix, 0, wi - 1))], inside);
                }
                let wr = wc + (kz * K + ky) * K * CO_B;
                for (var kx = 0u; kx < K; kx = kx + 1u) {
                    for (var o = 0u; o < CO_B; o = o + 1u) {
                        let wv = cw[wr + kx * CO_B + o];
                        for (var xi = 0u; xi < XB; xi = xi + 1u) {
                            acc[o * XB + xi] = fma(wv, row[xi + kx], acc[o * XB + xi]);
                        }
                    }
                }
            }
        }
    }
    let ob = (z * cp.h + y) * cp.w;
    for (var o = 0u; o < CO_B; o = o + 1u) {
        let co = cob * CO_B + o;
        if (co >= cp.co_n) { break; }
        var bias = 0.0;
        if (cp.use_bias != 0u) {
            bias = cb[cp.base_b + co];
        }
        let oc = cp.base_out + co * cp.spatial + ob;
        for (var xi = 0u; xi < XB; xi = xi + 1u) {
            let x = x0 + xi;
            if (x < cp.w) {
                var v = acc[o * XB + xi];
                if (cp.accumulate != 0u) {
                    v = v + cout[oc + x];
                } else {
                    v = v + bias;
                }
                cout[oc + x] = v;
            }
        }
    }
}

// ---------------------------------------------------------------- weight gradient

struct WeightParams {
    d: u32,
    h: u32,
    w: u32,
    spatial: u32,
    co_n: u32,        // output channels (of dy) in this group
    ci_n: u32,        // input channels (of x) in this group
    n_cob: u32,       // ceil(co_n / CO_B)
    chunk: u32,       // voxels per chunk (a multiple of WG)
    nchunks: u32,
    base_x: u32,
    base_dy: u32,
    base_part: u32,   // partial index of (this sample, chunk 0, co 0, ci 0, tap 0)
}

@group(0) @binding(0) var<storage, read> gx: array<f32>;
@group(0) @binding(1) var<storage, read> gdy: array<f32>;
@group(0) @binding(2) var<storage, read_write> gpart: array<f32>;
@group(0) @binding(3) var<uniform> gp: WeightParams;

var<workgroup> red: array<f32, RED_SIZE>;

@compute @workgroup_size(WG)
fn weight_partials(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    // Uniform across the workgroup: every invocation returns or none does.
    if (g >= gp.nchunks * gp.n_cob * gp.ci_n * K * K) { return; }
    let ky = g % K;
    let kz = (g / K) % K;
    let ci = (g / (K * K)) % gp.ci_n;
    let cob = (g / (K * K * gp.ci_n)) % gp.n_cob;
    let chunk = g / (K * K * gp.ci_n * gp.n_cob);
    let r = i32(K / 2u);
    let wi = i32(gp.w);
    let nv = CO_B * K;

    var acc: array<f32, 56>;  // MAX_CO * MAX_K
    for (var i = 0u; i < nv; i = i + 1u) {
        acc[i] = 0.0;
    }
    let vpt = gp.chunk / WG;
    let start = chunk * gp.chunk + lid * vpt;
    let end = min(start + vpt, gp.spatial);
    if (start < end) {
        var x = start % gp.w;
        var t = start / gp.w;
        var y = t % gp.h;
        var z = t / gp.h;
        let xc = gp.base_x + ci * gp.spatial;
        var dyo: array<u32, MAX_CO>;
        for (var o = 0u; o < CO_B; o = o + 1u) {
            dyo[o] = gp.base_dy + min(cob * CO_B + o, gp.co_n - 1u) * gp.spatial;
        }
        var xr: array<f32, MAX_K>;
        for (var v = start; v < end; v = v + 1u) {
            let iz = i32(z + kz) - r;
            let iy = i32(y + ky) - r;
            if (iz >= 0 && iz < i32(gp.d) && iy >= 0 && iy < i32(gp.h)) {
                let rb = xc + (u32(iz) * gp.h + u32(iy)) * gp.w;
                for (var kx = 0u; kx < K; kx = kx + 1u) {
                    let ix = i32(x + kx) - r;
                    xr[kx] = select(0.0, gx[rb + u32(clamp(ix, 0, wi - 1))], ix >= 0 && ix < wi);
                }
                for (var o = 0u; o < CO_B; o = o + 1u) {
                    let gv = gdy[dyo[o] + v];
                    for (var kx = 0u; kx < K; kx = kx + 1u) {
                        acc[o * K + kx] = fma(gv, xr[kx], acc[o * K + kx]);
                    }
                }
            }
            x = x + 1u;
            if (x == gp.w) {
                x = 0u;
                y = y + 1u;
                if (y == gp.h) {
                    y = 0u;
                    z = z + 1u;
                }
            }
        }
    }
    for (var i = 0u; i < nv; i = i + 1u) {
        red[lid * nv + i] = acc[i];
    }
    workgroupBarrier();
    if (lid < nv) {
        var s = 0.0;
        for (var l = 0u; l < WG; l = l + 1u) {
            s = s + red[l * nv + lid];
        }
        let o = lid / K;
        let kx = lid % K;
        let co = cob * CO_B + o;
        if (co < gp.co_n) {
            let k3 = K * K * K;
            let tap = (kz * K + ky) * K + kx;
            gpart[gp.base_part + ((chunk * gp.co_n + co) * gp.ci_n + ci) * k3 + tap] = s;
        }
    }
}

struct FinishParams {
    e_n: u32,         // co_n * ci_n * K^3 values of this group
    m_n: u32,         // samples * chunks partials per value
    ci_n: u32,
    cin_total: u32,   // C_in of the whole weight tensor
    i0: u32,          // first input channel of the group
    base_part: u32,
    base_dw: u32,     // window offset of the group's first output channel row
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> fpart: array<f32>;
@group(0) @binding(1) var<storage, read_write> fdw: array<f32>;
@group(0) @binding(2) var<uniform> fp: FinishParams;

@compute @workgroup_size(WG)
fn weight_finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = (wid.x + wid.y * nwg.x) * WG + lid;
    if (e >= fp.e_n) { return; }
    var s = 0.0;
    for (var m = 0u; m < fp.m_n; m = m + 1u) {
        s = s + fpart[fp.base_part + m * fp.e_n + e];
    }
    let k3 = K * K * K;
    let tap = e % k3;
    let ci = (e / k3) % fp.ci_n;
    let co = e / (k3 * fp.ci_n);
    fdw[fp.base_dw + (co * fp.cin_total + fp.i0 + ci) * k3 + tap] = s;
}
