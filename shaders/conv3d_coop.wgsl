// 3-D convolution, stride 1, zero padding K/2 ("same"), odd K <= 7, as an
// implicit GEMM on cooperative matrices (tensor cores): the same
// convolution as `conv_forward` in conv3d.wgsl, with the same parameters
// and the same packed weights (pack_weights of conv3d.wgsl with CO_B = 16),
// so ops::conv3d drives both alike (forward, fused inference conv with
// bias and ReLU, input gradient through the transposed packing, channel
// groups that accumulate).
//
// The GEMM: C[m][n] = sum over r of A[m][r] B[r][n], where m runs over 16
// consecutive x-positions of one output row (z, y), n over 16 output
// channels, and the reduction r over (input channel, tap). One workgroup is
// one subgroup (SG invocations; 32 on NVIDIA, whose subgroups are 32 wide)
// and computes MT = 4 such 16 x 16 output tiles (4 consecutive row tiles of
// its z-plane) for one block of 16 output channels: per step (16 input
// channels, one tap) it stages one B tile (weights, f16) and 4 A tiles
// (the input rows shifted by the tap, zero outside the volume, f16) in
// workgroup memory and issues 4 multiply-adds into f32 accumulators.
// Inputs are rounded to f16 (the tensor cores' input type); sums are f32.
//
// Control flow is uniform across the workgroup (the cooperative operations
// need the whole subgroup): tiles past the plane compute on clamped
// positions and do not store.
//
// coopLoad / coopStore are column-major (element (i, j) at i + j * stride),
// coopLoadT / coopStoreT row-major (i * stride + j).
//
// Never run where this was written (lavapipe has no cooperative matrices):
// validated by naga in tests/shaders_naga.rs; checked against the CPU
// reference by the op table on an adapter that offers 16x16x16 f16 x f16 +
// f32 matrices (`QCANET_COOPERATIVE_MATRIX=1`).

enable f16;
enable wgpu_cooperative_matrix;

// Activations and packed weights (`act`): f32 here; ops::conv3d builds the
// f16-storage form by setting this alias to f16.
alias act = f32;

override SG: u32 = 32u;
override K: u32 = 3u;

const T: u32 = 16u;        // matrix side: 16 x-positions, 16 channels, 16 reduction steps
const TT: u32 = 256u;      // T * T
const MT: u32 = 4u;        // output tiles per workgroup

struct ConvParams {
    d: u32,
    h: u32,
    w: u32,
    spatial: u32,
    ci_n: u32,        // input channels in this group
    co_n: u32,        // output channels in this group
    nxb: u32,         // x-tiles per row: ceil(w / 16)
    tiles: u32,       // workgroups per z-plane: ceil(h * nxb / MT)
    base_x: u32,
    base_w: u32,
    base_b: u32,      // window offset of the group's first bias value
    base_out: u32,
    accumulate: u32,  // 1: add to the output (not the first input-channel group)
    use_bias: u32,
    n_cob: u32,       // output-channel blocks: ceil(co_n / 16)
    relu: u32,        // 1: store max(v, 0) (last input-channel group only)
    splits: u32,      // unused here (the split form of the loop kernel, conv3d.wgsl)
    ci_per_split: u32,
    base_part: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> cx: array<act>;
@group(0) @binding(1) var<storage, read> cw: array<act>;
@group(0) @binding(2) var<storage, read> cb: array<f32>;
@group(0) @binding(3) var<storage, read_write> cout: array<act>;
@group(0) @binding(4) var<uniform> cp: ConvParams;

var<workgroup> a_tiles: array<f16, 1024>;   // MT A tiles, column-major (x-position fastest)
var<workgroup> b_tile: array<f16, 256>;     // one B tile, row-major (output channel fastest)
var<workgroup> c_tiles: array<f32, 1024>;   // MT C tiles, column-major, for the epilogue

@compute @workgroup_size(SG)
fn conv_coop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    let per_cob = cp.d * cp.tiles;
    // Uniform across the workgroup: the whole workgroup returns or none.
    if (g >= cp.n_cob * per_cob) { return; }
    let cob = g / per_cob;
    let rem = g % per_cob;
    let z = rem / cp.tiles;
    let p0 = (rem % cp.tiles) * MT;   // first row tile (y, x-tile) of this workgroup
    let plane_tiles = cp.h * cp.nxb;
    let k3 = K * K * K;
    let r = i32(K / 2u);
    let hi = i32(cp.h);
    let wi = i32(cp.w);
    let di = i32(cp.d);

    // Zero accumulators, loaded from zeroed workgroup memory (as the
    // extension's own examples start them).
    for (var e = lid; e < MT * TT; e = e + SG) {
        c_tiles[e] = 0.0;
    }
    workgroupBarrier();
    var acc0 = coopLoad<coop_mat16x16<f32, C>>(&c_tiles[0], T);
    var acc1 = acc0;
    var acc2 = acc0;
    var acc3 = acc0;

    let n_chunks = (cp.ci_n + T - 1u) / T;
    for (var chunk = 0u; chunk < n_chunks; chunk = chunk + 1u) {
        let ci0 = chunk * T;
        for (var t = 0u; t < k3; t = t + 1u) {
            let kz = t / (K * K);
            let ky = (t / K) % K;
            let kx = t % K;
            let iz = i32(z + kz) - r;
            let zin = iz >= 0 && iz < di;
            // B: packed weights [cob][ci][tap][16], rows = input channels.
            for (var e = lid; e < TT; e = e + SG) {
                let kk = e / T;
                let n = e % T;
                let ci = ci0 + kk;
                var v = 0.0;
                if (ci < cp.ci_n) {
                    v = f32(cw[cp.base_w + ((cob * cp.ci_n + ci) * k3 + t) * T + n]);
                }
                b_tile[e] = f16(v);
            }
            // A: for each of the MT row tiles, 16 x-positions x 16 channels.
            for (var e = lid; e < MT * TT; e = e + SG) {
                let mt = e / TT;
                let kk = (e % TT) / T;
                let mm = e % T;
                let p = min(p0 + mt, plane_tiles - 1u);
                let y = p / cp.nxb;
                let ix = i32((p % cp.nxb) * T + mm + kx) - r;
                let iy = i32(y + ky) - r;
                let ci = ci0 + kk;
                let inside = zin && iy >= 0 && iy < hi && ix >= 0 && ix < wi && ci < cp.ci_n;
                var v = 0.0;
                if (inside) {
                    v = f32(cx[cp.base_x + ci * cp.spatial + (u32(iz) * cp.h + u32(iy)) * cp.w + u32(ix)]);
                }
                // Column-major A (16 x 16, row = x-position, column = channel).
                a_tiles[mt * TT + kk * T + mm] = f16(v);
            }
            workgroupBarrier();
            let b = coopLoadT<coop_mat16x16<f16, B>>(&b_tile[0], T);
            acc0 = coopMultiplyAdd(coopLoad<coop_mat16x16<f16, A>>(&a_tiles[0], T), b, acc0);
            acc1 = coopMultiplyAdd(coopLoad<coop_mat16x16<f16, A>>(&a_tiles[TT], T), b, acc1);
            acc2 = coopMultiplyAdd(coopLoad<coop_mat16x16<f16, A>>(&a_tiles[2u * TT], T), b, acc2);
            acc3 = coopMultiplyAdd(coopLoad<coop_mat16x16<f16, A>>(&a_tiles[3u * TT], T), b, acc3);
            workgroupBarrier();
        }
    }

    // Epilogue: accumulators to workgroup memory (column-major: x-position
    // fastest), then bias or accumulation, ReLU and the store.
    coopStore(acc0, &c_tiles[0], T);
    coopStore(acc1, &c_tiles[TT], T);
    coopStore(acc2, &c_tiles[2u * TT], T);
    coopStore(acc3, &c_tiles[3u * TT], T);
    workgroupBarrier();
    for (var e = lid; e < MT * TT; e = e + SG) {
        let mt = e / TT;
        let n = (e % TT) / T;
        let mm = e % T;
        let p = p0 + mt;
        let co = cob * T + n;
        let x = (p % cp.nxb) * T + mm;
        if (p < plane_tiles && co < cp.co_n && x < cp.w) {
            let y = p / cp.nxb;
            let o = cp.base_out + co * cp.spatial + (z * cp.h + y) * cp.w + x;
            var v = c_tiles[e];
            if (cp.accumulate != 0u) {
                v = v + f32(cout[o]);
            } else if (cp.use_bias != 0u) {
                v = v + cb[cp.base_b + co];
            }
            if (cp.relu != 0u) {
                v = max(v, 0.0);
            }
            cout[o] = act(v);
        }
    }
}
