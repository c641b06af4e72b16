// Losses and their gradients w.r.t. the network output.
//
// Every loss is a deterministic reduction: a `*_partials` kernel has each
// workgroup sum one chunk of voxels into a vec4 partial (fixed-order strided
// sums, then a tree in workgroup memory), and `loss_finish` (one workgroup)
// sums all partials the same way and writes the loss and the sums the
// gradient kernels need. No float atomics.

override WG: u32 = 128u;

// `tree_sum` is in the prelude (shaders/prelude.wgsl).

struct Params {
    n: u32,          // softmax CE: samples in the window; others: elements in the window
    spatial: u32,    // softmax CE: voxels per sample
    classes: u32,    // softmax CE: K
    chunk: u32,      // elements (voxels) per partial
    nchunks: u32,    // softmax CE: chunks per sample; others: chunks in this window
    part_base: u32,  // first partial written by this window
    base_a: u32,     // window base of logits / probabilities
    base_b: u32,     // window base of the target
    base_out: u32,   // window base of the gradient
    tc: u32,         // softmax CE: target channels (1: class index; 2: class index, then voxel weight)
    pos_weight: f32, // BCE
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> za: array<f32>;
@group(0) @binding(1) var<storage, read> tb: array<f32>;
@group(0) @binding(2) var<storage, read> cw: array<f32>;
@group(0) @binding(3) var<storage, read_write> part: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> grad: array<f32>;
@group(0) @binding(5) var<storage, read> sums: array<vec4<f32>>;
@group(0) @binding(6) var<uniform> p: Params;

fn lin(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// A class index stored as f32 is valid if it is an integer in [0, K).
fn valid_class(t: f32) -> bool {
    return t >= 0.0 && t < f32(p.classes) && floor(t) == t;
}

// A voxel's weight (channel 1 of a two-channel target) is valid if it is a
// finite non-negative number.
fn valid_weight(w: f32) -> bool {
    return w >= 0.0 && w <= 3.40282347e38; // f32::MAX: false for +inf and NaN
}

// The weight of voxel k of a sample's target at `tbase`: the class weight,
// times the voxel's own weight when the target has two channels (0 with
// `ok` false when that weight is invalid).
fn ce_weight(tbase: u32, k: u32, ti: u32, ok: ptr<function, bool>) -> f32 {
    var w = cw[ti];
    if (p.tc == 2u) {
        let v = tb[tbase + p.spatial + k];
        if (!valid_weight(v)) {
            *ok = false;
            return 0.0;
        }
        w = w * v;
    }
    return w;
}

// Per voxel: (w * (logsumexp(z) - z[t]), w, invalid count, 0), w = w[t]
// times the voxel's weight.
@compute @workgroup_size(WG)
fn ce_partials(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = lin(wid, nwg);
    if (g >= p.n * p.nchunks) { return; }
    let s = g / p.nchunks;
    let j = g % p.nchunks;
    let v0 = j * p.chunk;
    let lim = min(p.chunk, p.spatial - v0);
    let zb = p.base_a + s * p.classes * p.spatial;
    // A sample's target: its class indices, then (tc = 2) its voxel weights.
    let tbase = p.base_b + s * p.tc * p.spatial;
    var acc = vec4<f32>(0.0);
    for (var k = v0 + lid; k < v0 + lim; k = k + WG) {
        let t = tb[tbase + k];
        if (!valid_class(t)) {
            acc.z = acc.z + 1.0;
            continue;
        }
        let ti = u32(t);
        var ok = true;
        let w = ce_weight(tbase, k, ti, &ok);
        if (!ok) {
            acc.z = acc.z + 1.0;
            continue;
        }
        var m = za[zb + k];
        for (var c = 1u; c < p.classes; c = c + 1u) {
            m = max(m, za[zb + c * p.spatial + k]);
        }
        var se = 0.0;
        for (var c = 0u; c < p.classes; c = c + 1u) {
            se = se + exp(za[zb + c * p.spatial + k] - m);
        }
        let l = m + log(se) - za[zb + ti * p.spatial + k];
        acc = acc + vec4<f32>(w * l, w, 0.0, 0.0);
    }
    let total = tree_sum(lid, acc);
    if (lid == 0u) {
        part[p.part_base + g] = total;
    }
}

// grad[k] = w * (softmax(z)[k] - [k == t]) / sum_w (w: the class weight
// times the voxel's weight); zero for invalid targets and weights.
@compute @workgroup_size(WG)
fn ce_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = lin(wid, nwg) * WG + lid;
    if (i >= p.n * p.spatial) { return; }
    let s = i / p.spatial;
    let v = i % p.spatial;
    let zb = p.base_a + s * p.classes * p.spatial + v;
    let ob = p.base_out + s * p.classes * p.spatial + v;
    let tbase = p.base_b + s * p.tc * p.spatial;
    let t = tb[tbase + v];
    var ok = valid_class(t);
    var w = 0.0;
    if (ok) {
        w = ce_weight(tbase, v, u32(t), &ok);
    }
    if (!ok) {
        for (var c = 0u; c < p.classes; c = c + 1u) {
            grad[ob + c * p.spatial] = 0.0;
        }
        return;
    }
    let ti = u32(t);
    var m = za[zb];
    for (var c = 1u; c < p.classes; c = c + 1u) {
        m = max(m, za[zb + c * p.spatial]);
    }
    var se = 0.0;
    for (var c = 0u; c < p.classes; c = c + 1u) {
        se = se + exp(za[zb + c * p.spatial] - m);
    }
    let scale = w / sums[0].y;
    for (var c = 0u; c < p.classes; c = c + 1u) {
        let q = exp(za[zb + c * p.spatial] - m) / se;
        grad[ob + c * p.spatial] = scale * (q - select(0.0, 1.0, c == ti));
    }
}

// BCE with logits, PyTorch's stable form:
// l = (1 - t) x + (1 + (pw - 1) t) (log(1 + exp(-|x|)) + max(-x, 0)).
fn softplus_neg(x: f32) -> f32 {
    return log(1.0 + exp(-abs(x))) + max(-x, 0.0);
}

@compute @workgroup_size(WG)
fn bce_partials(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = lin(wid, nwg);
    if (j >= p.nchunks) { return; }
    let start = j * p.chunk;
    let lim = min(p.chunk, p.n - start);
    var acc = vec4<f32>(0.0);
    for (var k = lid; k < lim; k = k + WG) {
        let x = za[p.base_a + start + k];
        let t = tb[p.base_b + start + k];
        let lw = 1.0 + (p.pos_weight - 1.0) * t;
        acc.x = acc.x + (1.0 - t) * x + lw * softplus_neg(x);
    }
    let total = tree_sum(lid, acc);
    if (lid == 0u) {
        part[p.part_base + j] = total;
    }
}

// d l / d x = (1 - t) - lw * sigmoid(-x), divided by the element count (sums[0].w).
@compute @workgroup_size(WG)
fn bce_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = lin(wid, nwg) * WG + lid;
    if (i >= p.n) { return; }
    let x = za[p.base_a + i];
    let t = tb[p.base_b + i];
    let lw = 1.0 + (p.pos_weight - 1.0) * t;
    // sigmoid(-x) without overflow for either sign.
    let e = exp(-abs(x));
    let sneg = select(e / (1.0 + e), 1.0 / (1.0 + e), x < 0.0);
    grad[p.base_out + i] = ((1.0 - t) - lw * sneg) / sums[0].w;
}

// Soft Dice partials: (sum p t, sum p, sum t, 0).
@compute @workgroup_size(WG)
fn dice_partials(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = lin(wid, nwg);
    if (j >= p.nchunks) { return; }
    let start = j * p.chunk;
    let lim = min(p.chunk, p.n - start);
    var acc = vec4<f32>(0.0);
    for (var k = lid; k < lim; k = k + WG) {
        let q = za[p.base_a + start + k];
        let t = tb[p.base_b + start + k];
        acc = acc + vec4<f32>(q * t, q, t, 0.0);
    }
    let total = tree_sum(lid, acc);
    if (lid == 0u) {
        part[p.part_base + j] = total;
    }
}

// d/dp of 1 - A/U with A = 2 I + s, U = P + T + s: -(2 t U - A) / U^2.
// sums[0] = (I, P, T, s).
@compute @workgroup_size(WG)
fn dice_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = lin(wid, nwg) * WG + lid;
    if (i >= p.n) { return; }
    let st = sums[0];
    let a = 2.0 * st.x + st.w;
    let u = st.y + st.z + st.w;
    let t = tb[p.base_b + i];
    grad[p.base_out + i] = -(2.0 * t * u - a) / (u * u);
}

@compute @workgroup_size(WG)
fn fill_zero(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = lin(wid, nwg) * WG + lid;
    if (i >= p.n) { return; }
    grad[p.base_out + i] = 0.0;
}

// ---------------------------------------------------------------- finish

struct FinishParams {
    count: u32,      // partials
    mode: u32,       // 0: CE, 1: BCE, 2: Dice
    numel: f32,      // BCE: element count
    smoothing: f32,  // Dice
}

@group(0) @binding(0) var<storage, read> fpart: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> floss: array<f32>;
@group(0) @binding(2) var<storage, read_write> fsums: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> fp: FinishParams;

// Sums all partials; writes the loss and fsums[0], the sums the gradient uses:
// CE: (sum w l, sum w, invalid, 0); BCE: (sum l, 0, 0, numel); Dice: (I, P, T, smooth).
@compute @workgroup_size(WG)
fn loss_finish(@builtin(local_invocation_index) lid: u32) {
    var acc = vec4<f32>(0.0);
    for (var t = lid; t < fp.count; t = t + WG) {
        acc = acc + fpart[t];
    }
    var s = tree_sum(lid, acc);
    if (lid == 0u) {
        if (fp.mode == 0u) {
            // s.z counts targets that are not class indices: NaN, so the
            // caller sees it when it reads the loss (no wait inside a step).
            floss[0] = select(s.x / s.y, bitcast<f32>(0x7fc00000u), s.z > 0.0);
        } else if (fp.mode == 1u) {
            s.w = fp.numel;
            floss[0] = s.x / fp.numel;
        } else {
            s.w = fp.smoothing;
            floss[0] = 1.0 - (2.0 * s.x + fp.smoothing) / (s.y + s.z + fp.smoothing);
        }
        fsums[0] = s;
    }
}
