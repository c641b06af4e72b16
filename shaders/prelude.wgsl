// Prelude: helpers shared by several kernels, written once. A shader built
// with `shader!("name", prelude)` is this file followed by `name.wgsl`, and
// must declare `override WG: u32` (its workgroup size, a power of two).
// Not a shader on its own.

// Workgroup memory of `tree_sum`.
var<workgroup> tree: array<vec4<f32>, WG>;

// Sum of `v` over the WG invocations of the workgroup, returned to all of
// them: a fixed-order tree in workgroup memory (at each level invocation
// `lid` adds `lid + s`), so results are bit-identical from run to run. Every
// invocation of the workgroup must call it (it has barriers); the trailing
// barrier lets it be called again at once.
fn tree_sum(lid: u32, v: vec4<f32>) -> vec4<f32> {
    tree[lid] = v;
    workgroupBarrier();
    var s = WG / 2u;
    while (s > 0u) {
        if (lid < s) {
            tree[lid] = tree[lid] + tree[lid + s];
        }
        workgroupBarrier();
        s = s / 2u;
    }
    let r = tree[0];
    workgroupBarrier();
    return r;
}

