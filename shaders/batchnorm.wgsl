// Batch normalisation over (N, D, H, W) per channel.
//
// Statistics are deterministic: `bn_partials` has each workgroup sum one chunk
// of one channel of one sample (every invocation adds a strided run in a fixed
// order, then a tree in workgroup memory) into a vec4 partial; the
// `bn_finish_*` kernels (one workgroup per channel) sum that channel's
// partials over samples and chunks the same way and derive the per-channel
// values. No float atomics, so results are bit-identical from run to run.
//
// Forward (training): partials of x -> mean; partials of d = x - mean ->
// (sum d, sum d^2) -> variance (corrected by the residual mean), invstd,
// running stats, and coef = (mean, gamma*invstd, beta, 0); then
// `bn_normalize`: y = ((x - coef.x) - coef.w) * coef.y + coef.z (coef.x + coef.w
// is the mean as a double-float).
// Backward: partials of (dy, dy*(x - mean)) -> dbeta, dgamma and
// coef = (A, B, C, mean) with dx = A*dy + B*(x - mean) + C (`bn_dx`).
//
// Frozen (fine-tuning with the running statistics as constants): the forward
// is the inference forward, with `bn_frozen_coef` also writing the running
// mean and invstd for the backward, and `bn_finish_bwd` with `frozen` drops
// the batch-statistics terms: dx = gamma*invstd*dy (coef = (A, 0, 0, mean)).
//
// A ReLU after the batch norm is fused in: `bn_normalize` clamps at 0 when
// `relu` is set, and the backward through it (partials mode 3, `bn_dx` with
// `relu`) reads dy where the fused output r > 0 and 0 elsewhere, so the ReLU's
// gradient is never written out.

override WG: u32 = 128u;

// The element each partials and element-wise invocation loads at a time:
// f32 here; vec4<f32> in the vec4 form of this shader
// (`batchnorm::shader_vec4`, which sets these two lines), where the
// host's counts, chunks and bases are in vec4s. A vec4 load is a quarter
// of the loads, which on CPU adapters, where each invocation's load is a
// load of its own, is most of these kernels' cost. `hsum` adds an
// element's lanes.
alias V = f32;
fn hsum(v: V) -> f32 { return v; }

// ---------------------------------------------------------------- partials

struct PartParams {
    spatial: u32,    // D*H*W
    chunk: u32,      // voxels per chunk (one workgroup)
    nchunks: u32,    // ceil(spatial / chunk)
    nc: u32,         // channels in this window
    j0: u32,         // first chunk of each channel in this window
    nj: u32,         // chunks per channel in this window
    c0: u32,         // global index of the window's first channel
    part_base: u32,  // index in `part` of (sample, c0, chunk 0)
    base_x: u32,     // window base of x
    base_y: u32,     // window base of dy
    mode: u32,       // 0: (sum x, sum x^2); 1: centred (sum d, sum d^2); 2: backward (sum dy, sum dy*d); 3: 2 through a ReLU
    lo_at: u32,      // index in pmean of the mean's low-order parts, or 0xffffffff if absent
    base_r: u32,     // window base of the fused ReLU output r (mode 3)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// `tree_sum` is in the prelude (shaders/prelude.wgsl).

@group(0) @binding(0) var<storage, read> px: array<V>;
@group(0) @binding(1) var<storage, read> pdy: array<V>;
@group(0) @binding(2) var<storage, read> pmean: array<f32>;
@group(0) @binding(3) var<storage, read_write> part: array<vec4<f32>>;
@group(0) @binding(4) var<uniform> pp: PartParams;
@group(0) @binding(5) var<storage, read> pr: array<V>;

@compute @workgroup_size(WG)
fn bn_partials(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= pp.nc * pp.nj) { return; }
    let c = g / pp.nj;
    let j = pp.j0 + g % pp.nj;
    // Offset of this chunk inside the window (the window starts at chunk j0 of channel c0).
    let start = c * pp.spatial + (j - pp.j0) * pp.chunk;
    let lim = min(pp.chunk, pp.spatial - j * pp.chunk);
    var m = 0.0;
    var lo = 0.0;
    if (pp.mode != 0u) {
        m = pmean[pp.c0 + c];
    }
    if (pp.lo_at != 0xffffffffu) {
        lo = pmean[pp.lo_at + pp.c0 + c];
    }
    var s1 = V(0.0);
    var s2 = V(0.0);
    if (pp.mode == 2u) {
        for (var k = lid; k < lim; k = k + WG) {
            let d = (px[pp.base_x + start + k] - m) - lo;
            let e = pdy[pp.base_y + start + k];
            s1 = s1 + e;
            s2 = s2 + e * d;
        }
    } else if (pp.mode == 3u) {
        for (var k = lid; k < lim; k = k + WG) {
            let d = (px[pp.base_x + start + k] - m) - lo;
            let e = select(V(0.0), pdy[pp.base_y + start + k], pr[pp.base_r + start + k] > V(0.0));
            s1 = s1 + e;
            s2 = s2 + e * d;
        }
    } else {
        for (var k = lid; k < lim; k = k + WG) {
            let d = px[pp.base_x + start + k] - m;
            s1 = s1 + d;
            s2 = s2 + d * d;
        }
    }
    let total = tree_sum(lid, vec4<f32>(hsum(s1), hsum(s2), 0.0, 0.0));
    if (lid == 0u) {
        part[pp.part_base + c * pp.nchunks + j] = total;
    }
}

// ---------------------------------------------------------------- finish

struct FinishParams {
    channels: u32,
    samples: u32,
    nchunks: u32,
    one: f32,       // 1.0, opaque to the shader compiler (keeps TwoSum from being simplified away)
    count: f32,     // N*D*H*W
    eps: f32,
    momentum: f32,
    unbias: f32,    // count / (count - 1)
    frozen: u32,    // bn_finish_bwd: 1 if mean and invstd are constants (running statistics)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> fpart: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> fgamma: array<f32>;
@group(0) @binding(2) var<storage, read> fbeta: array<f32>;
@group(0) @binding(3) var<storage, read_write> fmean: array<f32>;
@group(0) @binding(4) var<storage, read_write> finvstd: array<f32>;
@group(0) @binding(5) var<storage, read_write> frm: array<f32>;
@group(0) @binding(6) var<storage, read_write> frv: array<f32>;
@group(0) @binding(7) var<storage, read_write> fcoef: array<vec4<f32>>;
@group(0) @binding(8) var<uniform> fp: FinishParams;

// Channel c's partials summed over samples and chunks in a fixed order.
fn channel_total(c: u32, lid: u32) -> vec4<f32> {
    let m = fp.samples * fp.nchunks;
    var acc = vec4<f32>(0.0);
    for (var t = lid; t < m; t = t + WG) {
        let n = t / fp.nchunks;
        let j = t % fp.nchunks;
        acc = acc + fpart[(n * fp.channels + c) * fp.nchunks + j];
    }
    return tree_sum(lid, acc);
}

@compute @workgroup_size(WG)
fn bn_finish_mean(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wid.x + wid.y * nwg.x;
    if (c >= fp.channels) { return; }
    let s = channel_total(c, lid);
    if (lid == 0u) {
        fmean[c] = s.x / fp.count;
    }
}

@compute @workgroup_size(WG)
fn bn_finish_var(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wid.x + wid.y * nwg.x;
    if (c >= fp.channels) { return; }
    let s = channel_total(c, lid);
    if (lid == 0u) {
        // s = (sum d, sum d^2) with d = x - m0; the residual mean r = sum d / count
        // corrects both the mean and the variance.
        // The mean is kept as a double-float hi + lo (TwoSum of m0 and r): with
        // large offsets (1000 + N(0,1)) rounding the mean to f32 alone would
        // cost ~2e-5 relative error in y.
        let m0 = fmean[c];
        let r = s.x / fp.count;
        let v = max(s.y / fp.count - r * r, 0.0);
        // Shader compilers (NIR) may treat float ops as reassociable and fold
        // (m0 + r) - m0 to r; multiplying by the runtime 1.0 hides the pattern.
        let hi = m0 + r;
        let bb = hi * fp.one - m0;
        let lo = (m0 - (hi - bb) * fp.one) + (r - bb);
        let invstd = 1.0 / sqrt(v + fp.eps);
        fmean[c] = hi;
        fmean[fp.channels + c] = lo;
        finvstd[c] = invstd;
        frm[c] = (1.0 - fp.momentum) * frm[c] + fp.momentum * (hi + lo);
        frv[c] = (1.0 - fp.momentum) * frv[c] + fp.momentum * v * fp.unbias;
        fcoef[c] = vec4<f32>(hi, fgamma[c] * invstd, fbeta[c], lo);
    }
}

// Backward: frm, frv are bound to dgamma, dbeta. fp.eps > 0 (a flag) says
// fmean holds the low-order parts of the mean after its C values.
@compute @workgroup_size(WG)
fn bn_finish_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wid.x + wid.y * nwg.x;
    if (c >= fp.channels) { return; }
    let s = channel_total(c, lid);
    if (lid == 0u) {
        let invstd = finvstd[c];
        let dbeta = s.x;
        let dgamma = s.y * invstd;
        frm[c] = dgamma;
        frv[c] = dbeta;
        let a = fgamma[c] * invstd;
        if (fp.frozen != 0u) {
            // Constant statistics: y is affine in x, dx = a dy.
            fcoef[c] = vec4<f32>(a, 0.0, 0.0, fmean[c]);
            return;
        }
        let b = -a * invstd * dgamma / fp.count;
        var lo = 0.0;
        if (fp.eps > 0.0) {
            lo = fmean[fp.channels + c];
        }
        // dx = a dy + b ((x - hi) - lo) + k = a dy + b (x - hi) + (k - b lo)
        fcoef[c] = vec4<f32>(a, b, -a * dbeta / fp.count - b * lo, fmean[c]);
    }
}

// ---------------------------------------------------------------- inference coefficients

struct CoefParams {
    channels: u32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> igamma: array<f32>;
@group(0) @binding(1) var<storage, read> ibeta: array<f32>;
@group(0) @binding(2) var<storage, read> irm: array<f32>;
@group(0) @binding(3) var<storage, read> irv: array<f32>;
@group(0) @binding(4) var<storage, read_write> icoef: array<vec4<f32>>;
@group(0) @binding(5) var<uniform> ip: CoefParams;

@group(0) @binding(6) var<storage, read_write> imean: array<f32>;
@group(0) @binding(7) var<storage, read_write> iinvstd: array<f32>;

@compute @workgroup_size(WG)
fn bn_infer_coef(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = (wid.x + wid.y * nwg.x) * WG + lid;
    if (c >= ip.channels) { return; }
    icoef[c] = vec4<f32>(irm[c], igamma[c] / sqrt(irv[c] + ip.eps), ibeta[c], 0.0);
}

// bn_infer_coef, and the statistics a frozen forward saves for its backward:
// the running mean and 1 / sqrt(running var + eps).
@compute @workgroup_size(WG)
fn bn_frozen_coef(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = (wid.x + wid.y * nwg.x) * WG + lid;
    if (c >= ip.channels) { return; }
    let invstd = 1.0 / sqrt(irv[c] + ip.eps);
    icoef[c] = vec4<f32>(irm[c], igamma[c] * invstd, ibeta[c], 0.0);
    imean[c] = irm[c];
    iinvstd[c] = invstd;
}

// ---------------------------------------------------------------- element-wise

struct ApplyParams {
    n: u32,         // elements in this window
    start: u32,     // global element index of the window's first element
    spatial: u32,
    channels: u32,
    base_x: u32,
    base_y: u32,
    base_out: u32,
    relu: u32,      // 1: the fused ReLU (clamp in bn_normalize; dy masked by r > 0 in bn_dx)
    base_r: u32,    // window base of the fused ReLU output r (bn_dx)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> ax: array<V>;
@group(0) @binding(1) var<storage, read> ady: array<V>;
@group(0) @binding(2) var<storage, read_write> aout: array<V>;
@group(0) @binding(3) var<storage, read> acoef: array<vec4<f32>>;
@group(0) @binding(4) var<uniform> ap: ApplyParams;
@group(0) @binding(5) var<storage, read> ar: array<V>;

// The element-wise kernels walk the (sample, channel) rows the window
// touches, each row in runs of WG * PER elements, one run a workgroup: the
// channel, and so its coefficients, are uniform over a workgroup, and no
// invocation divides by the spatial size (per-element index division was
// most of these kernels' time on CPU adapters). Within a run invocation
// `lid` takes elements lid, lid + WG, ... (adjacent invocations, adjacent
// elements). Indices are global (start + window offset); elements are V.
override PER: u32 = 4u;

struct Run {
    c: u32,     // channel
    lo: u32,    // first global element of the run inside the window
    hi: u32,    // one past its last
    first: u32, // global element of the run's invocation 0, step 0
}

fn apply_run(wid: vec3<u32>, nwg: vec3<u32>) -> Run {
    let g = wid.x + wid.y * nwg.x;
    let run = WG * PER;
    let per_row = (ap.spatial + run - 1u) / run;
    let row = ap.start / ap.spatial + g / per_row;
    let row_start = row * ap.spatial;
    let first = row_start + (g % per_row) * run;
    let lo = max(first, ap.start);
    let hi = min(min(first + run, row_start + ap.spatial), ap.start + ap.n);
    return Run(row % ap.channels, lo, hi, first);
}

@compute @workgroup_size(WG)
fn bn_normalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = apply_run(wid, nwg);
    let k = acoef[r.c];
    let relu = ap.relu != 0u;
    for (var t = 0u; t < PER; t = t + 1u) {
        let gi = r.first + t * WG + lid;
        if (gi >= r.lo && gi < r.hi) {
            let i = gi - ap.start;
            let v = ((ax[ap.base_x + i] - k.x) - k.w) * k.y + k.z;
            aout[ap.base_out + i] = select(v, max(v, V(0.0)), relu);
        }
    }
}

@compute @workgroup_size(WG)
fn bn_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = apply_run(wid, nwg);
    let k = acoef[r.c];
    let relu = ap.relu != 0u;
    for (var t = 0u; t < PER; t = t + 1u) {
        let gi = r.first + t * WG + lid;
        if (gi >= r.lo && gi < r.hi) {
            let i = gi - ap.start;
            var e = ady[ap.base_y + i];
            if (relu) {
                e = select(V(0.0), e, ar[ap.base_r + i] > V(0.0));
            }
            aout[ap.base_out + i] = k.x * e + k.y * (ax[ap.base_x + i] - k.w) + k.z;
        }
    }
}
