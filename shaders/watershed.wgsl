// Marker-controlled watershed by iterative relaxation (src/postprocess/watershed.rs).
//
// Each mask voxel v carries a key (level, d, s, label) that models when a
// priority flood (scikit-image's `watershed`: min-heap on (value, age)) pops
// it: `level` is the flood level at which it is reached (largest surface value
// on its path, as an order-preserving u32), `d` the steps taken on a plateau
// at that level (FIFO arrival), `s` the order in which it entered that level
// (0 for markers, which are pushed first; else 1 + the top 16 bits of the
// level it rose from: entries pushed from lower levels arrive earlier), and
// the marker's label. v takes the smallest key among its labelled
// neighbours n (the neighbour popped first claims it) and becomes
//   (level_n, d_n, s_n, label_n)          if h_v <  level_n (descent: popped at once),
//   (level_n, d_n + 1, s_n, label_n)      if h_v == level_n (plateau: FIFO),
//   (h_v, 0, 1 + level_n >> 16, label_n)  if h_v >  level_n (the flood rises).
// The (level, d, s) part is monotone in the neighbour's key and labels then
// settle by minimum on ties (a voxel whose key does not change keeps the
// smaller of its own and the offered label), so Jacobi iteration from
// "unlabelled" converges;
// `flags[iter]` records whether iteration `iter` changed anything.
//
// Storage: key = vec2(level, d << 16 | s) and label in separate arrays, and a
// per-voxel code (0 outside the mask, 1 in it, 2 + m on marker m), so a step
// binds 7 storage buffers (WebGPU's default limit is 8).

struct Params {
    d: u32,
    h: u32,
    w: u32,
    conn: u32,    // 6 or 26
    iter: u32,    // slot in `flags` for this iteration
    negate: u32,  // 1: the surface is -surf
    _pad0: u32,
    _pad1: u32,
}

const NONE: u32 = 0xffffffffu;
const DMAX: u32 = 0xfffeu;

override WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> surf: array<f32>;
@group(0) @binding(1) var<storage, read> code: array<u32>;
@group(0) @binding(2) var<storage, read> key_in: array<vec2<u32>>;
@group(0) @binding(3) var<storage, read> lab_in: array<u32>;
@group(0) @binding(4) var<storage, read_write> key_out: array<vec2<u32>>;
@group(0) @binding(5) var<storage, read_write> lab_out: array<u32>;
@group(0) @binding(6) var<storage, read_write> flags: array<atomic<u32>>;
@group(0) @binding(7) var<uniform> p: Params;
// ws_prepare only
@group(0) @binding(8) var<storage, read> mask: array<u32>;
@group(0) @binding(9) var<storage, read> markers: array<u32>;
@group(0) @binding(10) var<storage, read_write> code_out: array<u32>;

fn linear(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

fn numel() -> u32 {
    return p.d * p.h * p.w;
}

// Order-preserving map f32 -> u32 (no NaN); +inf maps below NONE.
fn ordered(i: u32) -> u32 {
    var f = surf[i];
    if (p.negate != 0u) { f = -f; }
    let b = bitcast<u32>(f);
    if ((b & 0x80000000u) != 0u) {
        return ~b;
    }
    return b | 0x80000000u;
}

@compute @workgroup_size(WG)
fn ws_prepare(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear(wid, nwg, lid);
    if (i >= numel()) { return; }
    var c = 0u;
    if (mask[i] != 0u) {
        c = select(1u, markers[i] + 1u, markers[i] != 0u);
    }
    code_out[i] = c;
}

@compute @workgroup_size(WG)
fn ws_init(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear(wid, nwg, lid);
    if (i >= numel()) { return; }
    let c = code[i];
    if (c >= 2u) {
        key_out[i] = vec2<u32>(ordered(i), 0u);
        lab_out[i] = c - 1u;
    } else {
        key_out[i] = vec2<u32>(NONE, NONE);
        lab_out[i] = 0u;
    }
}

fn less(a: vec2<u32>, la: u32, b: vec2<u32>, lb: u32) -> bool {
    if (a.x != b.x) { return a.x < b.x; }
    if (a.y != b.y) { return a.y < b.y; }
    return la < lb;
}

@compute @workgroup_size(WG)
fn ws_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear(wid, nwg, lid);
    if (i >= numel()) { return; }
    let ck = key_in[i];
    let cl = lab_in[i];
    if (code[i] != 1u) {
        key_out[i] = ck;
        lab_out[i] = cl;
        return;
    }
    let hw = p.h * p.w;
    let z = i32(i / hw);
    let y = i32((i / p.w) % p.h);
    let x = i32(i % p.w);
    var bk = vec2<u32>(NONE, NONE);
    var bl = NONE;
    for (var dz = -1; dz <= 1; dz = dz + 1) {
        let nz = z + dz;
        if (nz < 0 || nz >= i32(p.d)) { continue; }
        for (var dy = -1; dy <= 1; dy = dy + 1) {
            let ny = y + dy;
            if (ny < 0 || ny >= i32(p.h)) { continue; }
            for (var dx = -1; dx <= 1; dx = dx + 1) {
                let nx = x + dx;
                if (nx < 0 || nx >= i32(p.w)) { continue; }
                let nonzero = u32(dz != 0) + u32(dy != 0) + u32(dx != 0);
                if (nonzero == 0u || (p.conn == 6u && nonzero != 1u)) { continue; }
                let j = u32(nz) * hw + u32(ny) * p.w + u32(nx);
                if (code[j] == 0u) { continue; }
                let k = key_in[j];
                if (k.x == NONE) { continue; }
                let l = lab_in[j];
                if (less(k, l, bk, bl)) {
                    bk = k;
                    bl = l;
                }
            }
        }
    }
    var nk = ck;
    var nl = cl;
    if (bk.x != NONE) {
        let hv = ordered(i);
        nl = bl;
        if (hv < bk.x) {
            nk = bk;
        } else if (hv == bk.x) {
            let dd = min((bk.y >> 16u) + 1u, DMAX);
            nk = vec2<u32>(bk.x, (dd << 16u) | (bk.y & 0xffffu));
        } else {
            nk = vec2<u32>(hv, (bk.x >> 16u) + 1u);
        }
    }
    // Equal keys form plateaus and descents whose voxels all derive the same
    // key from each other; keep the smaller label there, or two neighbours
    // could swap labels forever.
    if (all(nk == ck) && cl != 0u) {
        nl = min(nl, cl);
    }
    if (any(nk != ck) || nl != cl) {
        atomicStore(&flags[p.iter], 1u);
    }
    key_out[i] = nk;
    lab_out[i] = nl;
}

// Final labels in place: 0 outside the mask and where no marker reached.
@compute @workgroup_size(WG)
fn ws_final(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear(wid, nwg, lid);
    if (i >= numel()) { return; }
    let reached = code[i] != 0u && key_in[i].x != NONE;
    lab_out[i] = select(0u, lab_out[i], reached);
}
