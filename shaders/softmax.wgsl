// Softmax over the channel axis, per voxel, and its backward pass.
// One invocation per voxel walks the channels (stride = voxels per channel,
// so neighbouring invocations read neighbouring addresses).
//
// Forward uses the online form: running max m and running sum
// s = sum exp(x - m), rescaled by exp(m_old - m_new) when the max grows, so
// every exp has a non-positive argument (stable for any logits); then
// y = exp(x - m) / s.
//   fused_forward   all channels in one binding: stats in registers, then write.
//   stats_forward   one channel group of a sample too large for one binding:
//                   updates (m, s) kept per voxel in `sm`, `ss` (first group initialises).
//   write_forward   y = exp(x - m) / s for one channel group.
// Backward, from y: dx = y * (dy - sum_c y*dy).
//   fused_backward, dot_backward (accumulates the dot in `sm`), write_backward.

struct Params {
    voxels: u32,    // D*H*W
    samples: u32,   // samples in this dispatch
    channels: u32,  // channels in this window
    first: u32,     // 1 for the first channel group of a sample
    a_base: u32,    // x (forward) or y (backward)
    b_base: u32,    // dy (backward)
    out_base: u32,  // y (forward) or dx (backward)
    stride: u32,    // elements between samples (fused kernels)
    m_base: u32,
    s_base: u32,
    _p0: u32,
    _p1: u32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> sm: array<f32>;
@group(0) @binding(4) var<storage, read_write> ss: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

// Folds channels [0, p.channels) of the voxel at `first_elem` (relative to a
// binding base) into the running (max, sum).
fn online(first_elem: u32, m0: f32, s0: f32) -> vec2<f32> {
    var m = m0;
    var s = s0;
    for (var c = 0u; c < p.channels; c = c + 1u) {
        let v = a[p.a_base + first_elem + c * p.voxels];
        if (v > m) {
            s = s * exp(m - v) + 1.0;
            m = v;
        } else {
            s = s + exp(v - m);
        }
    }
    return vec2<f32>(m, s);
}

fn write_probs(first_elem: u32, m: f32, s: f32) {
    let inv = 1.0 / s;
    for (var c = 0u; c < p.channels; c = c + 1u) {
        let k = first_elem + c * p.voxels;
        out[p.out_base + k] = exp(a[p.a_base + k] - m) * inv;
    }
}

@compute @workgroup_size(WG)
fn fused_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.samples * p.voxels) { return; }
    let e = (i / p.voxels) * p.stride + i % p.voxels;
    // Start from (m, s) = (x0, 0): folding channel 0 then adds exp(0) = 1.
    let x0 = a[p.a_base + e];
    let ms = online(e, x0, 0.0);
    write_probs(e, ms.x, ms.y);
}

@compute @workgroup_size(WG)
fn stats_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let v = linear_id(wid, nwg, lid);
    if (v >= p.voxels) { return; }
    var m0 = a[p.a_base + v];
    var s0 = 0.0;
    if (p.first == 0u) {
        m0 = sm[p.m_base + v];
        s0 = ss[p.s_base + v];
    }
    let ms = online(v, m0, s0);
    sm[p.m_base + v] = ms.x;
    ss[p.s_base + v] = ms.y;
}

@compute @workgroup_size(WG)
fn write_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let v = linear_id(wid, nwg, lid);
    if (v >= p.voxels) { return; }
    write_probs(v, sm[p.m_base + v], ss[p.s_base + v]);
}

fn dot_yg(first_elem: u32) -> f32 {
    var acc = 0.0;
    for (var c = 0u; c < p.channels; c = c + 1u) {
        let k = first_elem + c * p.voxels;
        acc = fma(a[p.a_base + k], b[p.b_base + k], acc);
    }
    return acc;
}

fn write_grad(first_elem: u32, dot: f32) {
    for (var c = 0u; c < p.channels; c = c + 1u) {
        let k = first_elem + c * p.voxels;
        out[p.out_base + k] = a[p.a_base + k] * (b[p.b_base + k] - dot);
    }
}

@compute @workgroup_size(WG)
fn fused_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.samples * p.voxels) { return; }
    let e = (i / p.voxels) * p.stride + i % p.voxels;
    write_grad(e, dot_yg(e));
}

@compute @workgroup_size(WG)
fn dot_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let v = linear_id(wid, nwg, lid);
    if (v >= p.voxels) { return; }
    var acc = dot_yg(v);
    if (p.first == 0u) {
        acc = acc + sm[p.m_base + v];
    }
    sm[p.m_base + v] = acc;
}

@compute @workgroup_size(WG)
fn write_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let v = linear_id(wid, nwg, lid);
    if (v >= p.voxels) { return; }
    write_grad(v, sm[p.m_base + v]);
}
