// Element-type conversion between f32 and f16 tensors (ops::cast). Needs the
// adapter's shader-f16 feature; the f32 kernels never include this module.
// Bindings: to_f16 reads src32 and writes dst16; to_f32 reads src16 and
// writes dst32 (each entry point uses its two, plus the parameters).
// `base_*` offset a binding window, in elements of the binding's type.
// Every index is checked against p.n; no loops.
enable f16;

struct Params {
    n: u32,
    base_src: u32,
    base_dst: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> src32: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst16: array<f16>;
@group(0) @binding(2) var<storage, read> src16: array<f16>;
@group(0) @binding(3) var<storage, read_write> dst32: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

override WG: u32 = 256u;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

// f32 -> f16 (WGSL rounds to one of the two nearest f16 values).
@compute @workgroup_size(WG)
fn to_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    dst16[p.base_dst + i] = f16(src32[p.base_src + i]);
}

// f16 -> f32 (exact).
@compute @workgroup_size(WG)
fn to_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    dst32[p.base_dst + i] = f32(src16[p.base_src + i]);
}
