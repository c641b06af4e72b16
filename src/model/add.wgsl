// Element-wise sum (gradient accumulation at the U-Net's skip connections).
// Same contract as shaders/activation.wgsl: a, b (read), out (read_write),
// params {n, base_a, base_b, base_out}, 1-D folded grid, override WG.

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

@compute @workgroup_size(WG)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.n) { return; }
    out[p.base_out + i] = a[p.base_a + i] + b[p.base_b + i];
}
