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
//   (y, x-block) positions of the plane. Input-channel groups (split path,
//   or the parts of a never-materialised channel concatenation) accumulate
//   into the output when `accumulate = 1`; with `relu = 1` the last group
//   stores max(sum + bias, 0) (conv + folded batch norm + ReLU in one pass
//   at inference).
// - `weight_partials`: dW partial sums without atomics, one per (sample,
//   chunk of rows, weight); `weight_partials_staged` the same with the input
//   rows staged in workgroup memory (GPUs); `weight_finish` sums the
//   partials of every sample and chunk in fixed order: bit-identical from
//   run to run.

// The element type of activations and packed weights (`act`): f32 here;
// ops::conv3d builds the f16-storage variant of this module by putting
// `enable f16;` in front and this alias to f16 (storage f16, arithmetic
// f32). Every load converts to f32 and every store to `act`, identities in
// the f32 module. The weight-gradient kernels and the bias stay f32.
alias act = f32;

override WG: u32 = 64u;
override CO_B: u32 = 8u;
override XB: u32 = 8u;
override K: u32 = 3u;

const MAX_CO: u32 = 8u;
const MAX_XB: u32 = 8u;
const MAX_K: u32 = 7u;
const MAX_ROW: u32 = 14u;     // MAX_XB + MAX_K - 1

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
@group(0) @binding(1) var<storage, read_write> pk_dst: array<act>;
@group(0) @binding(2) var<uniform> pk: PackParams;

// The `oo`-th packed value at `at` = (output-channel block, input channel,
// tap) (the packed layout's order, so an invocation's CO_B values are
// consecutive), or 0 past the group's channels.
fn pack_value(at: vec3<u32>, oo: u32) -> f32 {
    let ol = at.x * CO_B + oo;
    if (ol >= pk.o_n) { return 0.0; }
    let k3 = K * K * K;
    let o = pk.o0 + ol;
    let i = pk.i0 + at.y;
    if (pk.transposed == 0u) {
        return pk_src[pk.base_src + ((o - pk.row0) * pk.c1 + i) * k3 + at.z];
    }
    return pk_src[pk.base_src + ((i - pk.row0) * pk.c1 + o) * k3 + (k3 - 1u - at.z)];
}

// Invocation `q`'s (output-channel block, input channel, tap).
fn pack_site(q: u32) -> vec3<u32> {
    let k3 = K * K * K;
    return vec3<u32>(q / (k3 * pk.i_n), (q / k3) % pk.i_n, q % k3);
}

// One invocation per (output-channel block, input channel, tap): its CO_B
// consecutive packed values (one index division per CO_B values, not two
// per value: lavapipe divides lane by lane).
@compute @workgroup_size(WG)
fn pack_weights(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let q = (wid.x + wid.y * nwg.x) * WG + lid;
    if (q * CO_B >= pk.total) { return; }
    let at = pack_site(q);
    for (var oo = 0u; oo < CO_B; oo = oo + 1u) {
        pk_dst[pk.base_dst + q * CO_B + oo] = act(pack_value(at, oo));
    }
}

@group(0) @binding(1) var<storage, read_write> pk_dst4: array<vec4<act>>;

// The same where CO_B is a multiple of 4 and `base_dst` of 4 elements: the
// values stored as CO_B / 4 vec4s.
@compute @workgroup_size(WG)
fn pack_weights4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let q = (wid.x + wid.y * nwg.x) * WG + lid;
    if (q * CO_B >= pk.total) { return; }
    let at = pack_site(q);
    let d = pk.base_dst / 4u + q * (CO_B / 4u);
    for (var o4 = 0u; o4 < CO_B / 4u; o4 = o4 + 1u) {
        let oo = 4u * o4;
        let v = vec4<f32>(pack_value(at, oo), pack_value(at, oo + 1u),
                          pack_value(at, oo + 2u), pack_value(at, oo + 3u));
        pk_dst4[d + o4] = vec4<act>(v);
    }
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
    tiles: u32,       // workgroups per z-plane: ceil(h * nxb / WG) (the generated CPU kernel: per output-channel block, all planes)
    base_x: u32,
    base_w: u32,
    base_b: u32,      // window offset of the group's first bias value
    base_out: u32,
    accumulate: u32,  // 1: add to the output (not the first input-channel group)
    use_bias: u32,
    n_cob: u32,       // output-channel blocks: ceil(co_n / CO_B)
    relu: u32,        // 1: store max(v, 0) (the fused inference epilogue; only
                      // on the last input-channel group, when v is the full sum)
    splits: u32,      // conv_forward4_split: parts of the input channels summed
                      // by separate workgroups (1 elsewhere)
    ci_per_split: u32, // input channels per part (the last may have fewer)
    base_part: u32,   // window offset of the partial sums (split kernels)
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> cx: array<act>;
@group(0) @binding(1) var<storage, read> cw: array<act>;
@group(0) @binding(2) var<storage, read> cb: array<f32>;
@group(0) @binding(3) var<storage, read_write> cout: array<act>;
@group(0) @binding(4) var<uniform> cp: ConvParams;

@compute @workgroup_size(WG)
fn conv_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    let per_cob = cp.d * cp.tiles;
    if (g >= cp.n_cob * per_cob) { return; }
    let cob = g / per_cob;
    let rem = g % per_cob;
    let z = rem / cp.tiles;
    // No early return and no lane-dependent `continue` below: control flow
    // stays uniform, so llvmpipe keeps the loop counters (and hence the
    // weight addresses) uniform and loads weights once per workgroup batch
    // instead of once per lane. Lanes past the plane compute and do not store.
    let p = (rem % cp.tiles) * WG + lid;
    let live = p < cp.h * cp.nxb;
    let pc = min(p, cp.h * cp.nxb - 1u);
    let y = pc / cp.nxb;
    let x0 = (pc % cp.nxb) * XB;
    let hi = i32(cp.h);
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
                let yin = iy >= 0 && iy < hi;
                let rb = xc + (u32(iz) * cp.h + u32(clamp(iy, 0, hi - 1))) * cp.w;
                for (var j = 0u; j < XB + K - 1u; j = j + 1u) {
                    let ix = i32(x0 + j) - r;
                    let inside = yin && ix >= 0 && ix < wi;
                    row[j] = select(0.0, f32(cx[rb + u32(clamp(ix, 0, wi - 1))]), inside);
                }
                let wr = wc + (kz * K + ky) * K * CO_B;
                for (var kx = 0u; kx < K; kx = kx + 1u) {
                    for (var o = 0u; o < CO_B; o = o + 1u) {
                        let wv = f32(cw[wr + kx * CO_B + o]);
                        for (var xi = 0u; xi < XB; xi = xi + 1u) {
                            acc[o * XB + xi] = fma(wv, row[xi + kx], acc[o * XB + xi]);
                        }
                    }
                }
            }
        }
    }
    if (!live) { return; }
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
                    v = v + f32(cout[oc + x]);
                } else {
                    v = v + bias;
                }
                if (cp.relu != 0u) {
                    v = max(v, 0.0);
                }
                cout[oc + x] = act(v);
            }
        }
    }
}

// ---------------------------------------------------------------- forward, vec4 variant

// The packed weights seen as vec4 (CO_B a multiple of 4; the packed
// segment is its own buffer, so its window starts at element 0).
@group(0) @binding(1) var<storage, read> cw4: array<vec4<act>>;

fn wsc(i: u32) -> f32 {
    return f32(cw4[i / 4u][i % 4u]);
}

fn shifted(a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, s: u32) -> vec4<f32> {
    switch s {
        case 0u: { return a; }
        case 1u: { return vec4<f32>(a.yzw, b.x); }
        case 2u: { return vec4<f32>(a.zw, b.xy); }
        case 3u: { return vec4<f32>(a.w, b.xyz); }
        case 4u: { return b; }
        case 5u: { return vec4<f32>(b.yzw, c.x); }
        case 6u: { return vec4<f32>(b.zw, c.xy); }
        default: { return vec4<f32>(b.w, c.xyz); }
    }
}

fn load_x(rb: u32, ix: i32, yin: bool) -> f32 {
    let wi = i32(cp.w);
    return select(0.0, f32(cx[rb + u32(clamp(ix, 0, wi - 1))]), yin && ix >= 0 && ix < wi);
}

fn load4(rb: u32, ix: i32, yin: bool) -> vec4<f32> {
    return vec4<f32>(load_x(rb, ix, yin), load_x(rb, ix + 1, yin), load_x(rb, ix + 2, yin), load_x(rb, ix + 3, yin));
}

// The fused epilogue of one output value `v` of channel `co` (of the group)
// stored at `at`: added to what is there (a later input-channel group) or
// to the bias, then ReLU where asked.
fn store_value(co: u32, at: u32, v: f32) {
    var r = v;
    if (cp.accumulate != 0u) {
        r = r + f32(cout[at]);
    } else if (cp.use_bias != 0u) {
        r = r + cb[cp.base_b + co];
    }
    if (cp.relu != 0u) {
        r = max(r, 0.0);
    }
    cout[at] = act(r);
}

fn store4(co: u32, x0: u32, oz: u32, v: vec4<f32>) {
    if (co >= cp.co_n) { return; }
    let oc = cp.base_out + co * cp.spatial + oz;
    for (var xi = 0u; xi < 4u; xi = xi + 1u) {
        if (x0 + xi < cp.w) {
            store_value(co, oc + x0 + xi, v[xi]);
        }
    }
}

// One invocation's place in a z-plane's (y, x-block) positions: its
// output-channel block and plane (uniform across the workgroup), row, first
// x-position, and whether the position is inside the plane (lanes past it
// compute a clamped position and store nothing).
struct Site {
    cob: u32,
    z: u32,
    y: u32,
    x0: u32,
    live: bool,
}

// The site of invocation `lid` of workgroup `g` (< n_cob * d * tiles).
fn conv_site(g: u32, lid: u32) -> Site {
    let per_cob = cp.d * cp.tiles;
    let rem = g % per_cob;
    let p = (rem % cp.tiles) * WG + lid;
    let pc = min(p, cp.h * cp.nxb - 1u);
    return Site(g / per_cob, rem / cp.tiles, pc / cp.nxb, (pc % cp.nxb) * XB, p < cp.h * cp.nxb);
}

// The CO_B x XB sums of one invocation: channel o's x-positions x0..x0+3
// in `a{o}`, x0+4..x0+7 in `b{o}` (XB = 8). Variables, not arrays (llvmpipe
// keeps arrays in memory); the `CO_B > o` and `XB > 4` tests are on
// override constants and fold away.
struct Sums {
    a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>,
    a4: vec4<f32>, a5: vec4<f32>, a6: vec4<f32>, a7: vec4<f32>,
    b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>,
    b4: vec4<f32>, b5: vec4<f32>, b6: vec4<f32>, b7: vec4<f32>,
}

// The sums of site `t` over input channels ci_lo..ci_hi of the group (all
// of them in `conv_forward4`, one part in `conv_forward4_split`). The loop
// bounds are uniform across the workgroup, so weight loads are too.
fn conv_sums(t: Site, ci_lo: u32, ci_hi: u32) -> Sums {
    let hi = i32(cp.h);
    let r = i32(K / 2u);
    let k3 = K * K * K;
    var s: Sums;
    for (var ci = ci_lo; ci < ci_hi; ci = ci + 1u) {
        let xc = cp.base_x + ci * cp.spatial;
        let wc = cp.base_w + (t.cob * cp.ci_n + ci) * k3 * CO_B;
        for (var kz = 0u; kz < K; kz = kz + 1u) {
            let iz = i32(t.z + kz) - r;
            if (iz < 0 || iz >= i32(cp.d)) { continue; }
            for (var ky = 0u; ky < K; ky = ky + 1u) {
                let iy = i32(t.y + ky) - r;
                let yin = iy >= 0 && iy < hi;
                let rb = xc + (u32(iz) * cp.h + u32(clamp(iy, 0, hi - 1))) * cp.w;
                let ix0 = i32(t.x0) - r;
                let a = load4(rb, ix0, yin);
                var b = vec4<f32>(0.0);
                var c = vec4<f32>(0.0);
                var e = vec4<f32>(0.0);
                if (K > 1u || XB > 4u) { b = load4(rb, ix0 + 4, yin); }
                if (K > 5u || (XB > 4u && K > 1u)) { c = load4(rb, ix0 + 8, yin); }
                if (XB > 4u && K > 5u) { e = load4(rb, ix0 + 12, yin); }
                let wr = wc + (kz * K + ky) * K * CO_B;
                for (var kx = 0u; kx < K; kx = kx + 1u) {
                    let xv = shifted(a, b, c, kx);
                    var xw = vec4<f32>(0.0);
                    if (XB > 4u) { xw = shifted(b, c, e, kx); }
                    let wb = wr + kx * CO_B;
                    var w0 = 0.0; var w1 = 0.0; var w2 = 0.0; var w3 = 0.0;
                    var w4 = 0.0; var w5 = 0.0; var w6 = 0.0; var w7 = 0.0;
                    if (CO_B % 4u == 0u) {
                        let wa = vec4<f32>(cw4[wb / 4u]);
                        w0 = wa.x; w1 = wa.y; w2 = wa.z; w3 = wa.w;
                        if (CO_B > 4u) { let wc = vec4<f32>(cw4[wb / 4u + 1u]); w4 = wc.x; w5 = wc.y; w6 = wc.z; w7 = wc.w; }
                    } else {
                        w0 = wsc(wb);
                        if (CO_B > 1u) { w1 = wsc(wb + 1u); }
                        if (CO_B > 2u) { w2 = wsc(wb + 2u); }
                        if (CO_B > 3u) { w3 = wsc(wb + 3u); }
                        if (CO_B > 4u) { w4 = wsc(wb + 4u); }
                        if (CO_B > 5u) { w5 = wsc(wb + 5u); }
                        if (CO_B > 6u) { w6 = wsc(wb + 6u); }
                        if (CO_B > 7u) { w7 = wsc(wb + 7u); }
                    }
                    { s.a0 = fma(vec4<f32>(w0), xv, s.a0); if (XB > 4u) { s.b0 = fma(vec4<f32>(w0), xw, s.b0); } }
                    if (CO_B > 1u) { s.a1 = fma(vec4<f32>(w1), xv, s.a1); if (XB > 4u) { s.b1 = fma(vec4<f32>(w1), xw, s.b1); } }
                    if (CO_B > 2u) { s.a2 = fma(vec4<f32>(w2), xv, s.a2); if (XB > 4u) { s.b2 = fma(vec4<f32>(w2), xw, s.b2); } }
                    if (CO_B > 3u) { s.a3 = fma(vec4<f32>(w3), xv, s.a3); if (XB > 4u) { s.b3 = fma(vec4<f32>(w3), xw, s.b3); } }
                    if (CO_B > 4u) { s.a4 = fma(vec4<f32>(w4), xv, s.a4); if (XB > 4u) { s.b4 = fma(vec4<f32>(w4), xw, s.b4); } }
                    if (CO_B > 5u) { s.a5 = fma(vec4<f32>(w5), xv, s.a5); if (XB > 4u) { s.b5 = fma(vec4<f32>(w5), xw, s.b5); } }
                    if (CO_B > 6u) { s.a6 = fma(vec4<f32>(w6), xv, s.a6); if (XB > 4u) { s.b6 = fma(vec4<f32>(w6), xw, s.b6); } }
                    if (CO_B > 7u) { s.a7 = fma(vec4<f32>(w7), xv, s.a7); if (XB > 4u) { s.b7 = fma(vec4<f32>(w7), xw, s.b7); } }
                }
            }
        }
    }
    return s;
}

// Channel `co`'s XB sums `a` (x0..x0+3) and `b` (x0+4..) through the epilogue.
fn store8(co: u32, x0: u32, oz: u32, a: vec4<f32>, b: vec4<f32>) {
    store4(co, x0, oz, a);
    if (XB > 4u) { store4(co, x0 + 4u, oz, b); }
}

// Same contract as `conv_forward` for XB = 4 or 8, the sums in vec4
// variables (`Sums`).
@compute @workgroup_size(WG)
fn conv_forward4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= cp.n_cob * cp.d * cp.tiles) { return; }
    let t = conv_site(g, lid);
    let s = conv_sums(t, 0u, cp.ci_n);
    if (!t.live) { return; }
    let oz = (t.z * cp.h + t.y) * cp.w;
    let co = t.cob * CO_B;
    store8(co, t.x0, oz, s.a0, s.b0);
    if (CO_B > 1u) { store8(co + 1u, t.x0, oz, s.a1, s.b1); }
    if (CO_B > 2u) { store8(co + 2u, t.x0, oz, s.a2, s.b2); }
    if (CO_B > 3u) { store8(co + 3u, t.x0, oz, s.a3, s.b3); }
    if (CO_B > 4u) { store8(co + 4u, t.x0, oz, s.a4, s.b4); }
    if (CO_B > 5u) { store8(co + 5u, t.x0, oz, s.a5, s.b5); }
    if (CO_B > 6u) { store8(co + 6u, t.x0, oz, s.a6, s.b6); }
    if (CO_B > 7u) { store8(co + 7u, t.x0, oz, s.a7, s.b7); }
}

// ---------------------------------------------------------------- forward, input channels split

// Where a layer has too few output positions to fill a GPU (a deep level:
// an 8³ plane of 192 channels is 1,536 invocations), each invocation's
// reduction over every input channel and tap is one long serial chain.
// `conv_forward4_split` cuts the group's input channels into `splits` parts
// of `ci_per_split`, one part per workgroup (splits x the workgroups of
// `conv_forward4`), and stores each part's raw sums (no bias, no epilogue)
// as f32 at `base_part + (part * co_n + co) * spatial + voxel`;
// `conv_split_finish` then adds the parts in a fixed order and applies the
// epilogue: deterministic, no atomics, partial sums f32 whatever `act` is.
@group(0) @binding(3) var<storage, read_write> cpart: array<f32>;

fn part4(co: u32, x0: u32, pb: u32, v: vec4<f32>) {
    if (co >= cp.co_n) { return; }
    let o = pb + co * cp.spatial;
    for (var xi = 0u; xi < 4u; xi = xi + 1u) {
        if (x0 + xi < cp.w) {
            cpart[o + x0 + xi] = v[xi];
        }
    }
}

fn part8(co: u32, x0: u32, pb: u32, a: vec4<f32>, b: vec4<f32>) {
    part4(co, x0, pb, a);
    if (XB > 4u) { part4(co, x0 + 4u, pb, b); }
}

@compute @workgroup_size(WG)
fn conv_forward4_split(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    let per_part = cp.n_cob * cp.d * cp.tiles;
    if (g >= cp.splits * per_part) { return; }
    let part = g / per_part;
    let t = conv_site(g % per_part, lid);
    let lo = part * cp.ci_per_split;
    let s = conv_sums(t, lo, min(lo + cp.ci_per_split, cp.ci_n));
    if (!t.live) { return; }
    let pb = cp.base_part + part * cp.co_n * cp.spatial + (t.z * cp.h + t.y) * cp.w;
    let co = t.cob * CO_B;
    part8(co, t.x0, pb, s.a0, s.b0);
    if (CO_B > 1u) { part8(co + 1u, t.x0, pb, s.a1, s.b1); }
    if (CO_B > 2u) { part8(co + 2u, t.x0, pb, s.a2, s.b2); }
    if (CO_B > 3u) { part8(co + 3u, t.x0, pb, s.a3, s.b3); }
    if (CO_B > 4u) { part8(co + 4u, t.x0, pb, s.a4, s.b4); }
    if (CO_B > 5u) { part8(co + 5u, t.x0, pb, s.a5, s.b5); }
    if (CO_B > 6u) { part8(co + 6u, t.x0, pb, s.a6, s.b6); }
    if (CO_B > 7u) { part8(co + 7u, t.x0, pb, s.a7, s.b7); }
}

// One invocation per output value of the group (co_n x spatial): the parts'
// sums in order 0..splits, then the epilogue of `conv_forward4` (bias or
// accumulation, ReLU). Reads the partials through `fpart` (binding 0).
@compute @workgroup_size(WG)
fn conv_split_finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = (wid.x + wid.y * nwg.x) * WG + lid;
    let n = cp.co_n * cp.spatial;
    if (e >= n) { return; }
    var v = 0.0;
    for (var part = 0u; part < cp.splits; part = part + 1u) {
        v = v + fpart[cp.base_part + part * n + e];
    }
    store_value(e / cp.spatial, cp.base_out + e, v);
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
    n_lg: u32,        // lane groups: ceil(ci_n * K * K / WG)
    chunk_rows: u32,  // (z, y) rows per chunk
    nchunks: u32,
    base_x: u32,
    base_dy: u32,
    base_part: u32,   // partial index of (this sample, chunk 0, co 0, ci 0, tap 0)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> gx: array<f32>;
@group(0) @binding(1) var<storage, read> gdy: array<f32>;
@group(0) @binding(2) var<storage, read_write> gpart: array<f32>;
@group(0) @binding(3) var<uniform> gp: WeightParams;

// The CO_B x K partial sums of lane work item `t` = (ci, kz, ky) for
// chunk `chunk` and output block `cob` (both weight-gradient kernels).
fn store_partials(acc: array<f32, 56>, chunk: u32, cob: u32, t: u32) {
    let ky = t % K;
    let kz = (t / K) % K;
    let ci = t / (K * K);
    let k3 = K * K * K;
    for (var o = 0u; o < CO_B; o = o + 1u) {
        let co = cob * CO_B + o;
        if (co >= gp.co_n) { break; }
        let pb = gp.base_part + ((chunk * gp.co_n + co) * gp.ci_n + ci) * k3 + (kz * K + ky) * K;
        for (var kx = 0u; kx < K; kx = kx + 1u) {
            gpart[pb + kx] = acc[o * K + kx];
        }
    }
}

// A workgroup owns (chunk of rows, co block, lane group); each lane owns one
// (ci, kz, ky) and accumulates CO_B x K (the kx taps) over every voxel of the
// chunk in order. The voxel loop is uniform, so dy values are loaded once per
// voxel for all lanes; x comes through a sliding window of K values along x
// (one lane-dependent load per voxel). No cross-lane sums, no atomics.
@compute @workgroup_size(WG)
fn weight_partials(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= gp.nchunks * gp.n_cob * gp.n_lg) { return; }
    let lg = g % gp.n_lg;
    let cob = (g / gp.n_lg) % gp.n_cob;
    let chunk = g / (gp.n_lg * gp.n_cob);
    let nt = gp.ci_n * K * K;
    let t = lg * WG + lid;
    let live = t < nt;
    let tc = min(t, nt - 1u);
    let ky = tc % K;
    let kz = (tc / K) % K;
    let ci = tc / (K * K);
    let r = i32(K / 2u);
    let wi = i32(gp.w);
    let hi = i32(gp.h);
    let di = i32(gp.d);
    let xc = gp.base_x + ci * gp.spatial;

    var dyo: array<u32, MAX_CO>;
    for (var o = 0u; o < CO_B; o = o + 1u) {
        dyo[o] = gp.base_dy + min(cob * CO_B + o, gp.co_n - 1u) * gp.spatial;
    }
    var acc: array<f32, 56>;  // MAX_CO * MAX_K
    for (var i = 0u; i < CO_B * K; i = i + 1u) {
        acc[i] = 0.0;
    }
    var xr: array<f32, MAX_K>;
    let row0 = chunk * gp.chunk_rows;
    let row1 = min(row0 + gp.chunk_rows, gp.d * gp.h);
    for (var rw = row0; rw < row1; rw = rw + 1u) {
        let z = rw / gp.h;
        let y = rw % gp.h;
        let iz = i32(z + kz) - r;
        let iy = i32(y + ky) - r;
        let rin = iz >= 0 && iz < di && iy >= 0 && iy < hi;
        let rb = xc + (u32(clamp(iz, 0, di - 1)) * gp.h + u32(clamp(iy, 0, hi - 1))) * gp.w;
        // xr[m] = x at ix = m - 1 - r for m = 1..K-1 (xr[0] is shifted out).
        for (var m = 1u; m < K; m = m + 1u) {
            let ix = i32(m) - 1 - r;
            xr[m] = select(0.0, gx[rb + u32(clamp(ix, 0, wi - 1))], rin && ix >= 0 && ix < wi);
        }
        let vb = rw * gp.w;
        for (var x = 0u; x < gp.w; x = x + 1u) {
            for (var j = 0u; j + 1u < K; j = j + 1u) {
                xr[j] = xr[j + 1u];
            }
            let ix = i32(x) + r;
            xr[K - 1u] = select(0.0, gx[rb + u32(clamp(ix, 0, wi - 1))], rin && ix < wi);
            // now xr[kx] = x at (iz, iy, x + kx - r)
            for (var o = 0u; o < CO_B; o = o + 1u) {
                let gv = gdy[dyo[o] + vb + x];
                for (var kx = 0u; kx < K; kx = kx + 1u) {
                    acc[o * K + kx] = fma(gv, xr[kx], acc[o * K + kx]);
                }
            }
        }
    }
    if (!live) { return; }
    store_partials(acc, chunk, cob, tc);
}

// The same sums with the input rows staged in workgroup memory (for GPUs;
// `ops::conv3d::WeightKernel::Staged`). In `weight_partials` each lane of a
// subgroup reads its own (ci, kz, ky) row of x, so one load touches as many
// cache lines as there are lanes. Here, for each (z, y) row of the chunk
// and each segment of ST_XT voxels along x, the workgroup first copies the
// segment of every lane's row (with its K - 1 halo) and the CO_B rows of dy
// into workgroup memory, consecutive lanes reading consecutive voxels; each
// lane then sums from there (rows ST_S apart, an odd stride, so lanes
// reading the same column hit different banks; dy values are read by all
// lanes at once). Same partial layout and the same order of additions
// within a lane as `weight_partials`. At most ST_LANES lanes (WG).
const ST_LANES: u32 = 32u;              // ops::conv3d::STAGED_MAX_WG
const ST_XT: u32 = 64u;                 // voxels of a segment
const ST_S: u32 = ST_XT + MAX_K;        // row stride: odd
var<workgroup> st_x: array<f32, ST_LANES * ST_S>;
var<workgroup> st_dy: array<f32, MAX_CO * ST_XT>;

@compute @workgroup_size(WG)
fn weight_partials_staged(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    // Uniform across the workgroup (barriers follow).
    let on_grid = g < gp.nchunks * gp.n_cob * gp.n_lg;
    let gg = min(g, gp.nchunks * gp.n_cob * gp.n_lg - 1u);
    let lg = gg % gp.n_lg;
    let cob = (gg / gp.n_lg) % gp.n_cob;
    let chunk = gg / (gp.n_lg * gp.n_cob);
    let nt = gp.ci_n * K * K;
    let r = i32(K / 2u);
    let wi = i32(gp.w);
    let hi = i32(gp.h);
    let di = i32(gp.d);
    let t = lg * WG + lid;
    let live = on_grid && t < nt;

    var acc: array<f32, 56>;  // MAX_CO * MAX_K
    for (var i = 0u; i < CO_B * K; i = i + 1u) {
        acc[i] = 0.0;
    }
    var xr: array<f32, MAX_K>;
    let row0 = chunk * gp.chunk_rows;
    let row1 = select(row0, min(row0 + gp.chunk_rows, gp.d * gp.h), on_grid);
    for (var rw = row0; rw < row1; rw = rw + 1u) {
        let z = rw / gp.h;
        let y = rw % gp.h;
        for (var x0 = 0u; x0 < gp.w; x0 = x0 + ST_XT) {
            let n = min(ST_XT, gp.w - x0);
            let seg_w = n + K - 1u;
            // Stage: every lane's x row segment (columns x0 - r .. x0 + n - 1 + r).
            for (var i = lid; i < WG * seg_w; i = i + WG) {
                let j = i / seg_w;
                let m = i % seg_w;
                let tj = min(lg * WG + j, nt - 1u);
                let ky = tj % K;
                let kz = (tj / K) % K;
                let ci = tj / (K * K);
                let iz = i32(z + kz) - r;
                let iy = i32(y + ky) - r;
                let ix = i32(x0 + m) - r;
                let inside = iz >= 0 && iz < di && iy >= 0 && iy < hi && ix >= 0 && ix < wi;
                let at = gp.base_x + ci * gp.spatial
                    + (u32(clamp(iz, 0, di - 1)) * gp.h + u32(clamp(iy, 0, hi - 1))) * gp.w + u32(clamp(ix, 0, wi - 1));
                st_x[j * ST_S + m] = select(0.0, gx[at], inside);
            }
            // Stage: CO_B rows of dy (zero past the group's channels).
            for (var i = lid; i < CO_B * n; i = i + WG) {
                let o = i / n;
                let c = i % n;
                let co = cob * CO_B + o;
                let at = gp.base_dy + min(co, gp.co_n - 1u) * gp.spatial + rw * gp.w + x0 + c;
                st_dy[o * ST_XT + c] = select(0.0, gdy[at], co < gp.co_n);
            }
            workgroupBarrier();
            let xb = lid * ST_S;
            for (var m = 1u; m < K; m = m + 1u) {
                xr[m] = st_x[xb + m - 1u];
            }
            for (var c = 0u; c < n; c = c + 1u) {
                for (var j = 0u; j + 1u < K; j = j + 1u) {
                    xr[j] = xr[j + 1u];
                }
                xr[K - 1u] = st_x[xb + c + K - 1u];
                // now xr[kx] = x at (iz, iy, x0 + c + kx - r)
                for (var o = 0u; o < CO_B; o = o + 1u) {
                    let gv = st_dy[o * ST_XT + c];
                    for (var kx = 0u; kx < K; kx = kx + 1u) {
                        acc[o * K + kx] = fma(gv, xr[kx], acc[o * K + kx]);
                    }
                }
            }
            workgroupBarrier();
        }
    }
    if (!live) { return; }
    store_partials(acc, chunk, cob, t);
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

@group(0) @binding(0) var<storage, read> fpart4: array<vec4<f32>>;

// The same, 4 values an invocation, where `ci_n * K^3` (a weight row of the
// group, so the 4 land in one output-channel row, at consecutive places)
// and `base_part` are multiples of 4: the partials loaded as vec4s.
@compute @workgroup_size(WG)
fn weight_finish4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e4 = (wid.x + wid.y * nwg.x) * WG + lid;
    if (4u * e4 >= fp.e_n) { return; }
    var s = vec4<f32>(0.0);
    let n4 = fp.e_n / 4u;
    let b4 = fp.base_part / 4u;
    for (var m = 0u; m < fp.m_n; m = m + 1u) {
        s = s + fpart4[b4 + m * n4 + e4];
    }
    let e = 4u * e4;
    let k3 = K * K * K;
    let tap = e % k3;
    let ci = (e / k3) % fp.ci_n;
    let co = e / (k3 * fp.ci_n);
    let d = fp.base_dw + (co * fp.cin_total + fp.i0 + ci) * k3 + tap;
    fdw[d] = s.x;
    fdw[d + 1u] = s.y;
    fdw[d + 2u] = s.z;
    fdw[d + 3u] = s.w;
}
