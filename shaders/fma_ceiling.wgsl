// The adapter's f32 fused multiply-add ceiling, for `qcanet-gpu bench`: each
// invocation runs 4 independent vec4 fma chains (16 lanes of independent
// work, enough to hide the fma latency on CPUs and GPUs) for ITERS
// iterations of 2 fmas each, with no memory traffic, then writes one value so
// the work cannot be optimised away. FLOPs per invocation: ITERS * 64
// (4 chains * 2 fmas * 4 lanes * 2 operations).
@group(0) @binding(0) var<storage, read_write> out: array<f32>;

override WG: u32 = 64u;
override ITERS: u32 = 1024u;

@compute @workgroup_size(WG)
fn fma_ceiling(@builtin(global_invocation_id) gid: vec3<u32>) {
    let s = f32(gid.x & 255u) * 1e-3;
    var a = vec4<f32>(s, s + 0.1, s + 0.2, s + 0.3);
    var b = a + 1.0;
    var e = a + 2.0;
    var f = a + 3.0;
    let c = vec4<f32>(0.999);
    let d = vec4<f32>(0.5);
    for (var i = 0u; i < ITERS; i = i + 1u) {
        a = fma(a, c, d);
        b = fma(b, c, d);
        e = fma(e, c, d);
        f = fma(f, c, d);
        a = fma(a, c, d);
        b = fma(b, c, d);
        e = fma(e, c, d);
        f = fma(f, c, d);
    }
    out[gid.x] = dot(a, b) + dot(e, f);
}
