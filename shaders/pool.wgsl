// Max-pool 2x2x2, stride 2, floor of odd sides (PyTorch MaxPool3d(2)), keeping
// the argmax tap t = a*4 + b*2 + c (0..8, window offset (a, b, c) in z, y, x)
// for the backward pass. Ties: the first maximum in z, y, x order wins (strict >).
// A tensor is seen as `planes` = N*C contiguous volumes.
//
// forward:  one invocation per output voxel: 8 loads, 7 compares, 2 stores.
// backward: one invocation per output voxel: writes the whole 2x2x2 window of
//           dx (dy to the argmax, 0 elsewhere) and, on odd sides, the trailing
//           input planes/rows/columns no window covers (zeros), so every dx
//           element is written exactly once.

struct Params {
    planes: u32,
    d: u32,   // input sides
    h: u32,
    w: u32,
    od: u32,  // output sides
    oh: u32,
    ow: u32,
    x_base: u32,  // window bases: input (x or dx), output (y or dy), indices
    y_base: u32,
    i_base: u32,
    _p0: u32,
    _p1: u32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> idx: array<u32>;
@group(0) @binding(3) var<uniform> p: Params;

@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read> bidx: array<u32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let ospatial = p.od * p.oh * p.ow;
    if (i >= p.planes * ospatial) { return; }
    let ox = i % p.ow;
    let oy = (i / p.ow) % p.oh;
    let oz = (i / (p.ow * p.oh)) % p.od;
    let plane = i / ospatial;
    let corner = p.x_base + plane * (p.d * p.h * p.w) + ((2u * oz) * p.h + 2u * oy) * p.w + 2u * ox;
    let hw = p.h * p.w;
    var best = x[corner];
    var arg = 0u;
    for (var t = 1u; t < 8u; t = t + 1u) {
        let v = x[corner + (t >> 2u) * hw + ((t >> 1u) & 1u) * p.w + (t & 1u)];
        if (v > best) {
            best = v;
            arg = t;
        }
    }
    y[p.y_base + i] = best;
    idx[p.i_base + i] = arg;
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let ospatial = p.od * p.oh * p.ow;
    if (i >= p.planes * ospatial) { return; }
    let ox = i % p.ow;
    let oy = (i / p.ow) % p.oh;
    let oz = (i / (p.ow * p.oh)) % p.od;
    let plane = i / ospatial;
    let hw = p.h * p.w;
    let pbase = p.x_base + plane * (p.d * hw);
    let g = dy[p.y_base + i];
    let arg = bidx[p.i_base + i];
    // The window, plus the uncovered trailing column / row / plane next to it
    // when this window is the last one along an odd side.
    let xe = select(2u, 3u, ox + 1u == p.ow && p.w % 2u == 1u);
    let ye = select(2u, 3u, oy + 1u == p.oh && p.h % 2u == 1u);
    let ze = select(2u, 3u, oz + 1u == p.od && p.d % 2u == 1u);
    for (var a = 0u; a < ze; a = a + 1u) {
        for (var b = 0u; b < ye; b = b + 1u) {
            for (var c = 0u; c < xe; c = c + 1u) {
                let inside = a < 2u && b < 2u && c < 2u;
                let t = a * 4u + b * 2u + c;
                let v = select(0.0, g, inside && t == arg);
                dx[pbase + ((2u * oz + a) * p.h + 2u * oy + b) * p.w + 2u * ox + c] = v;
            }
        }
    }
}
