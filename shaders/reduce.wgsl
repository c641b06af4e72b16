// Deterministic per-channel reductions over (N, D, H, W) without atomics.
// Pass 1 (`channel_partials`): each workgroup sums one CHUNK of one channel of
// one sample: every invocation adds a strided run in order, then a tree in
// workgroup memory. Pass 2 (`channel_finish`): one workgroup per channel sums
// that channel's partials (all samples, all chunks) the same way.

struct PartialParams {
    spatial: u32,    // D*H*W
    nchunks: u32,    // ceil(spatial / CHUNK)
    channels: u32,   // channels in this window
    base_x: u32,     // element offset of the window's first channel
    part_base: u32,  // index in `part` of this window's first (channel, chunk)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct FinishParams {
    channels: u32,
    samples: u32,
    nchunks: u32,
    _pad: u32,
}

override WG: u32 = 256u;
override PER_THREAD: u32 = 16u;

// The element each `channel_partials` invocation loads at a time: f32
// here; vec4<f32> in the vec4 form of this shader (`reduce::shader_vec4`,
// which sets these two lines), where the host's counts and bases are in
// vec4s (a chunk is then WG * PER_THREAD vec4s). `hsum` adds an element's
// lanes.
alias V = f32;
fn hsum(v: V) -> f32 { return v; }

@group(0) @binding(0) var<storage, read> x: array<V>;
@group(0) @binding(1) var<storage, read_write> part: array<f32>;
@group(0) @binding(2) var<uniform> pp: PartialParams;

// The prelude's vec4 `tree_sum` (shaders/prelude.wgsl) on (v, 0, 0, 0): its
// x component adds in the same order as a scalar tree would.
fn tree_sum1(lid: u32, v: f32) -> f32 {
    return tree_sum(lid, vec4<f32>(v, 0.0, 0.0, 0.0)).x;
}

@compute @workgroup_size(WG)
fn channel_partials(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    // Uniform control flow: every invocation of a workgroup takes the same branch.
    if (g >= pp.channels * pp.nchunks) { return; }
    let c = g / pp.nchunks;
    let j = g % pp.nchunks;
    let start = j * WG * PER_THREAD;
    let chan = pp.base_x + c * pp.spatial;
    var acc = V(0.0);
    for (var k = 0u; k < PER_THREAD; k = k + 1u) {
        let i = start + k * WG + lid;
        if (i < pp.spatial) {
            acc = acc + x[chan + i];
        }
    }
    let total = tree_sum1(lid, hsum(acc));
    if (lid == 0u) {
        part[pp.part_base + g] = total;
    }
}

@group(0) @binding(0) var<storage, read> fpart: array<f32>;
@group(0) @binding(1) var<storage, read_write> fout: array<f32>;
@group(0) @binding(2) var<uniform> fp: FinishParams;

// part layout: [sample][channel][chunk]
@compute @workgroup_size(WG)
fn channel_finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wid.x + wid.y * nwg.x;
    if (c >= fp.channels) { return; }
    let m = fp.samples * fp.nchunks;
    var acc = 0.0;
    for (var t = lid; t < m; t = t + WG) {
        let n = t / fp.nchunks;
        let j = t % fp.nchunks;
        acc = acc + fpart[(n * fp.channels + c) * fp.nchunks + j];
    }
    let total = tree_sum1(lid, acc);
    if (lid == 0u) {
        fout[c] = total;
    }
}
