// Euclidean distance transforms of a 3-D mask on an anisotropic grid
// (src/postprocess/edt.rs). Distances are from each foreground voxel to the
// nearest background voxel; 0 on background; +inf where no background exists.
//
// Exact: separable lower envelope of parabolas (Felzenszwalb & Huttenlocher),
// one pass per axis, one invocation per 1-D line, squared distances in f32
// weighted by the axis spacing squared. Scratch per line: n+1 slots of
// `vbuf` (parabola sites) and `zbuf` (envelope boundaries).
//
// Approximate: jump flooding (JFA) on nearest-background-voxel indices, steps
// N/2, ..., 1, then 2, 1 again (JFA+2).

struct Params {
    d: u32,
    h: u32,
    w: u32,
    n: u32,        // line length of this pass
    stride: u32,   // element stride along the line (1, W or H*W)
    lines: u32,    // number of lines
    step: u32,     // JFA step in voxels
    inf_bits: u32, // 0x7f800000 (+inf), passed in so it is never constant-folded
    w2: f32,       // spacing squared of this pass's axis
    sz: f32,
    sy: f32,
    sx: f32,
}

const BIG: f32 = 1.0e30;
const HALF_BIG: f32 = 5.0e29;
const NONE: u32 = 0xffffffffu;

override WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> mask: array<u32>;
@group(0) @binding(1) var<storage, read> fin: array<f32>;
@group(0) @binding(2) var<storage, read_write> fout: array<f32>;
@group(0) @binding(3) var<storage, read_write> vbuf: array<u32>;
@group(0) @binding(4) var<storage, read_write> zbuf: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;
@group(0) @binding(6) var<storage, read> seed_in: array<u32>;
@group(0) @binding(7) var<storage, read_write> seed_out: array<u32>;

fn linear(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

fn numel() -> u32 {
    return p.d * p.h * p.w;
}

// f = 0 on background, BIG (no site) on foreground.
@compute @workgroup_size(WG)
fn edt_init(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear(wid, nwg, lid);
    if (i >= numel()) { return; }
    fout[i] = select(0.0, BIG, mask[i] != 0u);
}

// One FH pass along one axis: fout(q) = min_p w2 (q - p)^2 + fin(p).
@compute @workgroup_size(WG)
fn edt_pass(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let l = linear(wid, nwg, lid);
    if (l >= p.lines) { return; }
    let n = p.n;
    let s = p.stride;
    let base = (l / s) * (s * n) + (l % s);
    let sb = l * (n + 1u);
    var k: i32 = -1;
    for (var q = 0u; q < n; q = q + 1u) {
        let fq = fin[base + q * s];
        if (fq >= HALF_BIG) { continue; }
        if (k < 0) {
            k = 0;
            vbuf[sb] = q;
            zbuf[sb] = -BIG;
            zbuf[sb + 1u] = BIG;
            continue;
        }
        let qf = f32(q);
        var sv = 0.0;
        loop {
            let pp = vbuf[sb + u32(k)];
            let pf = f32(pp);
            let fp = fin[base + pp * s];
            sv = ((fq - fp) / (p.w2 * (qf - pf)) + (qf + pf)) * 0.5;
            if (k > 0 && sv <= zbuf[sb + u32(k)]) {
                k = k - 1;
            } else {
                break;
            }
        }
        if (sv <= zbuf[sb + u32(k)]) {
            // Only reachable at k == 0 with a boundary below -BIG: replace.
            vbuf[sb] = q;
            zbuf[sb + 1u] = BIG;
            continue;
        }
        k = k + 1;
        vbuf[sb + u32(k)] = q;
        zbuf[sb + u32(k)] = sv;
        zbuf[sb + u32(k) + 1u] = BIG;
    }
    if (k < 0) {
        for (var q = 0u; q < n; q = q + 1u) {
            fout[base + q * s] = BIG;
        }
        return;
    }
    var j = 0u;
    for (var q = 0u; q < n; q = q + 1u) {
        let qf = f32(q);
        while (zbuf[sb + j + 1u] < qf) {
            j = j + 1u;
        }
        let pp = vbuf[sb + j];
        let dq = qf - f32(pp);
        fout[base + q * s] = p.w2 * dq * dq + fin[base + pp * s];
    }
}

// Squared distances to distances in place; no site left means +inf.
@compute @workgroup_size(WG)
fn edt_finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear(wid, nwg, lid);
    if (i >= numel()) { return; }
    let v = fout[i];
    fout[i] = select(sqrt(v), bitcast<f32>(p.inf_bits), v >= HALF_BIG);
}

// Seeds are packed coordinates z << 20 | y << 10 | x (dimensions ≤ 1024),
// so distances need no integer division.
fn pack(z: u32, y: u32, x: u32) -> u32 {
    return (z << 20u) | (y << 10u) | x;
}

@compute @workgroup_size(WG)
fn jfa_init(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear(wid, nwg, lid);
    if (i >= numel()) { return; }
    let hw = p.h * p.w;
    let seed = pack(i / hw, (i / p.w) % p.h, i % p.w);
    seed_out[i] = select(NONE, seed, mask[i] == 0u);
}

fn dist2(z: i32, y: i32, x: i32, s: u32) -> f32 {
    let dz = f32(z - i32(s >> 20u)) * p.sz;
    let dy = f32(y - i32((s >> 10u) & 1023u)) * p.sy;
    let dx = f32(x - i32(s & 1023u)) * p.sx;
    return dz * dz + dy * dy + dx * dx;
}

@compute @workgroup_size(WG)
fn jfa_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear(wid, nwg, lid);
    if (i >= numel()) { return; }
    var best = seed_in[i];
    if (mask[i] == 0u) {
        seed_out[i] = best;
        return;
    }
    let hw = p.h * p.w;
    let z = i32(i / hw);
    let y = i32((i / p.w) % p.h);
    let x = i32(i % p.w);
    var bd = BIG;
    if (best != NONE) { bd = dist2(z, y, x, best); }
    let st = i32(p.step);
    for (var dz = -1; dz <= 1; dz = dz + 1) {
        let nz = z + dz * st;
        if (nz < 0 || nz >= i32(p.d)) { continue; }
        for (var dy = -1; dy <= 1; dy = dy + 1) {
            let ny = y + dy * st;
            if (ny < 0 || ny >= i32(p.h)) { continue; }
            let row = u32(nz) * hw + u32(ny) * p.w;
            for (var dx = -1; dx <= 1; dx = dx + 1) {
                let nx = x + dx * st;
                if (nx < 0 || nx >= i32(p.w)) { continue; }
                let s = seed_in[row + u32(nx)];
                if (s == NONE || s == best) { continue; }
                let dd = dist2(z, y, x, s);
                if (dd < bd || (dd == bd && s < best)) {
                    bd = dd;
                    best = s;
                }
            }
        }
    }
    seed_out[i] = best;
}

@compute @workgroup_size(WG)
fn jfa_finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear(wid, nwg, lid);
    if (i >= numel()) { return; }
    let s = seed_in[i];
    if (mask[i] == 0u) {
        fout[i] = 0.0;
    } else if (s == NONE) {
        fout[i] = bitcast<f32>(p.inf_bits);
    } else {
        let hw = p.h * p.w;
        fout[i] = sqrt(dist2(i32(i / hw), i32((i / p.w) % p.h), i32(i % p.w), s));
    }
}
