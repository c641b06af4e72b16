// Connected-component labelling of a 3-D mask (src/postprocess/ccl.rs):
// union-find with atomicMin linking of roots (Playne & Hawick 2018), so every
// component's root is its lowest linear index; then a deterministic
// renumbering 1..n in order of that index (count, sequential scan, assign),
// with no workgroup barriers (they are expensive on software Vulkan).

struct Params {
    d: u32,
    h: u32,
    w: u32,
    conn: u32,     // 6 or 26
    nchunks: u32,  // ceil(numel / CHUNK)
    chunk: u32,    // voxels per invocation in count/assign
    _pad0: u32,
    _pad1: u32,
}

const NONE: u32 = 0xffffffffu;

override WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> mask: array<u32>;
@group(0) @binding(1) var<storage, read_write> lab: array<atomic<u32>>;
@group(0) @binding(2) var<storage, read_write> counts: array<u32>;
@group(0) @binding(3) var<storage, read_write> ids: array<u32>;
@group(0) @binding(4) var<uniform> p: Params;

fn linear(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

fn numel() -> u32 {
    return p.d * p.h * p.w;
}

fn find(x: u32) -> u32 {
    var r = x;
    loop {
        let q = atomicLoad(&lab[r]);
        if (q == r) { break; }
        r = q;
    }
    return r;
}

fn unite(a0: u32, b0: u32) {
    var a = a0;
    var b = b0;
    loop {
        a = find(a);
        b = find(b);
        if (a == b) { break; }
        if (a < b) {
            let old = atomicMin(&lab[b], a);
            if (old == b) { break; }
            b = old;
        } else {
            let old = atomicMin(&lab[a], b);
            if (old == a) { break; }
            a = old;
        }
    }
}

@compute @workgroup_size(WG)
fn ccl_init(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear(wid, nwg, lid);
    if (i >= numel()) { return; }
    atomicStore(&lab[i], select(NONE, i, mask[i] != 0u));
}

// Unite each foreground voxel with its foreground neighbours of lower index.
@compute @workgroup_size(WG)
fn ccl_union(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear(wid, nwg, lid);
    if (i >= numel()) { return; }
    if (mask[i] == 0u) { return; }
    let hw = p.h * p.w;
    let z = i32(i / hw);
    let y = i32((i / p.w) % p.h);
    let x = i32(i % p.w);
    for (var dz = -1; dz <= 0; dz = dz + 1) {
        let nz = z + dz;
        if (nz < 0) { continue; }
        for (var dy = -1; dy <= 1; dy = dy + 1) {
            let ny = y + dy;
            if (ny < 0 || ny >= i32(p.h)) { continue; }
            if (dz == 0 && dy > 0) { continue; }
            for (var dx = -1; dx <= 1; dx = dx + 1) {
                if (dz == 0 && dy == 0 && dx >= 0) { continue; }
                let nx = x + dx;
                if (nx < 0 || nx >= i32(p.w)) { continue; }
                let nonzero = u32(dz != 0) + u32(dy != 0) + u32(dx != 0);
                if (p.conn == 6u && nonzero != 1u) { continue; }
                let j = u32(nz) * hw + u32(ny) * p.w + u32(nx);
                if (mask[j] != 0u) {
                    unite(i, j);
                }
            }
        }
    }
}

fn is_root(i: u32) -> bool {
    return mask[i] != 0u && atomicLoad(&lab[i]) == i;
}

@compute @workgroup_size(WG)
fn ccl_count(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = linear(wid, nwg, lid);
    if (c >= p.nchunks) { return; }
    let end = min((c + 1u) * p.chunk, numel());
    var cnt = 0u;
    for (var i = c * p.chunk; i < end; i = i + 1u) {
        cnt = cnt + u32(is_root(i));
    }
    counts[c] = cnt;
}

// Exclusive scan of the chunk counts by one invocation; total at [nchunks].
@compute @workgroup_size(1)
fn ccl_scan() {
    var run = 0u;
    for (var c = 0u; c < p.nchunks; c = c + 1u) {
        let t = counts[c];
        counts[c] = run;
        run = run + t;
    }
    counts[p.nchunks] = run;
}

@compute @workgroup_size(WG)
fn ccl_assign(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = linear(wid, nwg, lid);
    if (c >= p.nchunks) { return; }
    let end = min((c + 1u) * p.chunk, numel());
    var r = counts[c];
    for (var i = c * p.chunk; i < end; i = i + 1u) {
        if (is_root(i)) {
            r = r + 1u;
            ids[i] = r;
        }
    }
}

// Each voxel takes its root's number. Non-root slots of `ids` are read by
// nobody; a root rewrites its own value, so in-place is race-free.
@compute @workgroup_size(WG)
fn ccl_final(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear(wid, nwg, lid);
    if (i >= numel()) { return; }
    if (mask[i] == 0u) {
        ids[i] = 0u;
        return;
    }
    let r = find(i);
    if (r != i) {
        ids[i] = ids[r];
    }
}
