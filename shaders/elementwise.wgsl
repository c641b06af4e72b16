// Element-wise kernels (the contract of ops::elementwise::map): activations
// and their backward passes, and arithmetic.
// Bindings: a (read), b (read), out (read_write), params.
// Unary forward kernels read `a` only; backward kernels read a = saved
// forward tensor and b = upstream gradient. `base_*` offset a binding window.

struct Params {
    n: u32,
    base_a: u32,
    base_b: u32,
    base_out: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

override WG: u32 = 256u;
// Elements per invocation: invocation `lid` of workgroup `g` handles
// g*WG*PER + k*WG + lid for k < PER (neighbouring lanes, neighbouring elements).
override PER: u32 = 8u;

fn first_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG * PER + lid;
}

@compute @workgroup_size(WG)
fn relu_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i0 = first_id(wid, nwg, lid);
    for (var k = 0u; k < PER; k = k + 1u) {
        let i = i0 + k * WG;
        if (i >= p.n) { return; }
        out[p.base_out + i] = max(a[p.base_a + i], 0.0);
    }
}

@compute @workgroup_size(WG)
fn relu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i0 = first_id(wid, nwg, lid);
    for (var k = 0u; k < PER; k = k + 1u) {
        let i = i0 + k * WG;
        if (i >= p.n) { return; }
        out[p.base_out + i] = select(0.0, b[p.base_b + i], a[p.base_a + i] > 0.0);
    }
}

@compute @workgroup_size(WG)
fn sigmoid_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i0 = first_id(wid, nwg, lid);
    for (var k = 0u; k < PER; k = k + 1u) {
        let i = i0 + k * WG;
        if (i >= p.n) { return; }
        let x = a[p.base_a + i];
        // Stable for large |x|: exp of a non-positive number only.
        let e = exp(-abs(x));
        out[p.base_out + i] = select(e / (1.0 + e), 1.0 / (1.0 + e), x >= 0.0);
    }
}

@compute @workgroup_size(WG)
fn sigmoid_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i0 = first_id(wid, nwg, lid);
    for (var k = 0u; k < PER; k = k + 1u) {
        let i = i0 + k * WG;
        if (i >= p.n) { return; }
        let y = a[p.base_a + i];
        out[p.base_out + i] = b[p.base_b + i] * y * (1.0 - y);
    }
}

// out = a + b (gradient accumulation where a tensor feeds two layers).
@compute @workgroup_size(WG)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i0 = (wid.x + wid.y * nwg.x) * WG * PER + lid;
    for (var k = 0u; k < PER; k = k + 1u) {
        let i = i0 + k * WG;
        if (i >= p.n) { return; }
        out[p.base_out + i] = a[p.base_a + i] + b[p.base_b + i];
    }
}
