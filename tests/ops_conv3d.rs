//! conv3d beyond the op table (`tests/ops_table.rs` holds forward and every
//! backward to the reference at k = 1, 3, 5, odd shapes, channel counts off
//! the register blocking, several register tiles and the split path, and
//! the reference backwards against finite differences): the kernels with
//! naga's runtime checks kept, a deterministic and accurate weight gradient
//! over many voxels, clear errors for bad shapes and oversized channels.

mod common;
use common::*;
use qcanet_gpu::ops::conv3d::{self, reference, Tile};
use qcanet_gpu::ops::table::Dims;
use qcanet_gpu::tensor::{CpuTensor, Shape5};

/// f32 GPU sums of ≤ 13·125 products against f64: relative error ~1e-7.
const TOL: f64 = 1e-5;

struct Case {
    x: CpuTensor,
    w: CpuTensor,
    b: CpuTensor,
    dy: CpuTensor,
}

fn case(n: usize, cin: usize, cout: usize, dhw: (usize, usize, usize), k: usize, seed: u64) -> Case {
    let (d, h, w) = dhw;
    Case {
        x: rand(Shape5::new(n, cin, d, h, w), seed),
        w: rand(Shape5::new(cout, cin, k, k, k), seed + 1),
        b: rand(Shape5::new(1, cout, 1, 1, 1), seed + 2),
        dy: rand(Shape5::new(n, cout, d, h, w), seed + 3),
    }
}

#[test]
fn conv3d_matches_reference_with_naga_runtime_checks_kept() {
    // QCANET_CHECKED_KERNELS builds the self-checking conv kernels with naga's
    // checks too: same results.
    let mut o = qcanet_gpu::gpu::ContextOptions::from_env();
    o.checked_kernels = true;
    let checked = common::context(&o, true);
    // Every conv3d case of the op table at these variants (forward and each backward).
    for (variant, dims) in [("3->5 k3", Dims::new(2, 5, 7, 9)), ("9->17 k5", Dims::new(1, 3, 5, 7))] {
        let n = assert_table_cases(&checked, dims, |c| c.op.starts_with("conv3d") && c.variant == variant);
        assert_eq!(n, 4, "conv3d {variant}: forward and three backwards expected in the op table");
    }
}

#[test]
fn unsupported_register_tile_is_an_error() {
    // The tiles that work are op-table cases; one with too many output
    // channels per invocation must be refused.
    let ctx = ctx();
    let c = case(2, 5, 7, (4, 7, 19), 3, 70);
    let (gx, gw, gb) = (up(ctx, &c.x), up(ctx, &c.w), up(ctx, &c.b));
    assert!(conv3d::forward_with_tile(ctx, &gx, &gw, &gb, Tile::loops(64, 9, 8)).is_err());
    // The generated kernel reads weights as vec4s: blocks of 4, 8, 12, ...
    // channels only, and the rows it was written for.
    for (co_b, yb, yb_tall) in [(6, 2, 2), (8, 0, 0), (8, 9, 9), (8, 2, 9), (8, 2, 0)] {
        let tile = Tile::unrolled(32, co_b, 8, yb, false).with_tall_rows(yb_tall);
        let e = conv3d::forward_with_tile(ctx, &gx, &gw, &gb, tile).unwrap_err().to_string();
        assert!(e.contains("unrolled"), "{e}");
    }
}

#[test]
fn backward_weight_is_deterministic_and_accurate_on_many_voxels() {
    // 2 x 40³ voxels: many chunks per sample, fixed-order sums.
    let ctx = ctx();
    let c = case(2, 2, 3, (40, 40, 40), 3, 80);
    let (gx, gdy) = (up(ctx, &c.x), up(ctx, &c.dy));
    let a = down(ctx, &conv3d::backward_weight(ctx, &gx, &gdy, 3).unwrap());
    let b = down(ctx, &conv3d::backward_weight(ctx, &gx, &gdy, 3).unwrap());
    assert_eq!(a.data, b.data, "backward_weight must be bit-identical across runs");
    assert_close("backward_weight 2x2->3 40³", &a, &reference::backward_weight(&c.x, &c.dy, 3), TOL);
}

#[test]
fn fused_forward_bad_shapes_are_errors() {
    let ctx = ctx();
    let a = up(ctx, &rand(Shape5::new(1, 2, 4, 5, 6), 1));
    let b = up(ctx, &rand(Shape5::new(1, 3, 4, 5, 7), 2));
    let w = up(ctx, &rand(Shape5::new(4, 5, 3, 3, 3), 3));
    let bias = up(ctx, &rand(Shape5::new(1, 4, 1, 1, 1), 4));
    let e = conv3d::forward_fused(ctx, &[&a, &b], &w, &bias, true).unwrap_err().to_string();
    assert!(e.contains("volume size"), "{e}");
    let e = conv3d::forward_fused(ctx, &[&a], &w, &bias, true).unwrap_err().to_string();
    assert!(e.contains("input channels"), "{e}");
    assert!(conv3d::forward_fused(ctx, &[], &w, &bias, true).is_err());
}

#[test]
fn channel_larger_than_a_binding_is_a_clear_error() {
    let ctx = capped_ctx(4096);
    let x = up(&ctx, &rand(Shape5::new(1, 1, 11, 11, 11), 100));
    let w = up(&ctx, &rand(Shape5::new(2, 1, 3, 3, 3), 101));
    let b = up(&ctx, &rand(Shape5::new(1, 2, 1, 1, 1), 102));
    let e = conv3d::forward(&ctx, &x, &w, &b).unwrap_err().to_string();
    assert!(e.contains("one channel") && e.contains("storage binding"), "{e}");
    let e = conv3d::backward_weight(&ctx, &x, &x, 3).unwrap_err().to_string();
    assert!(e.contains("one channel") && e.contains("storage binding"), "{e}");
}

#[test]
fn bad_shapes_are_errors() {
    let x = Shape5::new(2, 3, 7, 9, 11);
    assert_eq!(conv3d::output_shape(x, Shape5::new(5, 3, 3, 3, 3)).unwrap(), Shape5::new(2, 5, 7, 9, 11));
    let even = conv3d::output_shape(x, Shape5::new(5, 3, 4, 4, 4)).unwrap_err().to_string();
    assert!(even.contains("conv3d") && even.contains("odd"), "{even}");
    let mismatch = conv3d::output_shape(x, Shape5::new(5, 4, 3, 3, 3)).unwrap_err().to_string();
    assert!(mismatch.contains("input channels"), "{mismatch}");
    assert!(conv3d::output_shape(x, Shape5::new(5, 3, 3, 3, 1)).is_err());
    assert!(conv3d::output_shape(x, Shape5::new(5, 3, 9, 9, 9)).is_err());

    let ctx = ctx();
    let gx = up(ctx, &rand(x, 1));
    let gw = up(ctx, &rand(Shape5::new(5, 3, 3, 3, 3), 2));
    let bad_b = up(ctx, &rand(Shape5::new(1, 4, 1, 1, 1), 3));
    let e = conv3d::forward(ctx, &gx, &gw, &bad_b).unwrap_err().to_string();
    assert!(e.contains("bias"), "{e}");
    let e = conv3d::forward(ctx, &gx, &up(ctx, &rand(Shape5::new(5, 2, 3, 3, 3), 4)), &bad_b).unwrap_err().to_string();
    assert!(e.contains("input channels"), "{e}");
    // dy with the wrong channel count / volume.
    assert!(conv3d::backward_input(ctx, &gx, &gw).is_err());
    let dy = up(ctx, &rand(Shape5::new(2, 5, 7, 9, 10), 5));
    assert!(conv3d::backward_weight(ctx, &gx, &dy, 3).is_err());
    assert!(conv3d::backward_weight(ctx, &gx, &gx, 4).is_err());
}

/// Median GPU time and GFLOP/s, and the CPU reference time, for the shapes
/// the lead benchmarks. Run with
/// `cargo test --release --test ops_conv3d -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_conv3d() {
    let ctx = ctx();
    println!("adapter: {}", ctx.describe());
    let reps: usize = std::env::var("CONV_REPS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    for (cin, cout, d, k) in [(16usize, 16usize, 64usize, 3usize), (32, 32, 32, 5)] {
        let c = case(1, cin, cout, (d, d, d), k, 300);
        let (gx, gw, gb, gdy) = (up(ctx, &c.x), up(ctx, &c.w), up(ctx, &c.b), up(ctx, &c.dy));
        let fl = conv3d::flops(c.x.shape, cout, k);
        let time = |f: &dyn Fn()| time_median(ctx, reps, f);
        let fwd = time(&|| drop(conv3d::forward(ctx, &gx, &gw, &gb).unwrap()));
        let bwi = time(&|| drop(conv3d::backward_input(ctx, &gdy, &gw).unwrap()));
        let bww = time(&|| drop(conv3d::backward_weight(ctx, &gx, &gdy, k).unwrap()));
        let skip_cpu = std::env::var("CONV_NO_CPU").is_ok();
        let cpu = |f: &dyn Fn()| {
            if skip_cpu {
                return f64::NAN;
            }
            let s = std::time::Instant::now();
            f();
            s.elapsed().as_secs_f64()
        };
        let cf = cpu(&|| drop(reference::forward(&c.x, &c.w, &c.b)));
        let ci = cpu(&|| drop(reference::backward_input(&c.dy, &c.w)));
        let cw = cpu(&|| drop(reference::backward_weight(&c.x, &c.dy, k)));
        println!("{cin}->{cout} k={k} {d}^3 ({:.2} GFLOP per pass), median of {reps}:", fl / 1e9);
        for (name, g, cref) in [("forward", fwd, cf), ("backward_input", bwi, ci), ("backward_weight", bww, cw)] {
            println!(
                "  {name:16} GPU {:8.1} ms {:6.2} GFLOP/s | CPU reference {:8.1} ms {:5.2} GFLOP/s | speed-up {:5.1}x",
                g * 1e3,
                fl / g / 1e9,
                cref * 1e3,
                fl / cref / 1e9,
                cref / g
            );
        }
    }
    if std::env::var("CONV_PEAK").is_ok() {
        // Calibration: the FMA throughput of this driver right now (8
        // independent chains per invocation, no memory traffic).
        const PEAK: qcanet_gpu::gpu::ShaderSource = qcanet_gpu::gpu::ShaderSource {
            name: "conv3d_test_peak",
            wgsl: "@group(0) @binding(0) var<storage, read_write> o: array<f32>;
override WG: u32 = 64u;
@compute @workgroup_size(WG)
fn peak(@builtin(global_invocation_id) gid: vec3<u32>) {
    var a = vec4<f32>(f32(gid.x)); var b = a + 1.0; var c = vec4<f32>(0.999);
    for (var i = 0u; i < 4096u; i = i + 1u) { a = fma(a, c, vec4<f32>(0.5)); b = fma(b, c, vec4<f32>(0.25)); }
    o[gid.x] = dot(a, b);
}",
        };
        let p = ctx.pipeline(&PEAK, "peak", &[("WG", 64.0)]).unwrap();
        let n = 64 * 1024;
        let o = ctx.zeros(Shape5::new(1, 1, 1, 1, n), "peak").unwrap();
        let run = || {
            ctx.dispatch("peak", &p, &[qcanet_gpu::gpu::Arg::Whole(&o.buf)], [1024, 1, 1]).unwrap();
            ctx.sync().unwrap();
        };
        run();
        let s = std::time::Instant::now();
        run();
        let t = s.elapsed().as_secs_f64();
        println!("  FMA peak now: {:.2} GFLOP/s", (n * 4096 * 8 * 2) as f64 / t / 1e9);
    }
    if let Ok(spec) = std::env::var("CONV_TILES") {
        // e.g. CONV_TILES="64,8,8 64,4,8 64,8,4": forward only, 16->16 k=3 64³.
        let c = case(1, 16, 16, (64, 64, 64), 3, 300);
        let (gx, gw, gb) = (up(ctx, &c.x), up(ctx, &c.w), up(ctx, &c.b));
        let fl = conv3d::flops(c.x.shape, 16, 3);
        for t in spec.split_whitespace() {
            let v: Vec<u32> = t.split(',').map(|s| s.parse().unwrap()).collect();
            let tile = Tile::loops(v[0], v[1], v[2]);
            let m = time_median(ctx, reps, || drop(conv3d::forward_with_tile(ctx, &gx, &gw, &gb, tile).unwrap()));
            println!("  tile {tile:?}: {:.1} ms {:.2} GFLOP/s", m * 1e3, fl / m / 1e9);
        }
    }
}

#[test]
fn split_tiles_cut_only_layers_with_few_invocations() {
    use conv3d::{split_parts, MIN_SPLIT_CHANNELS, SPLIT_LANES};
    // Never without a target, at the target, or where parts would hold
    // fewer than MIN_SPLIT_CHANNELS channels or the partial sums not fit.
    assert_eq!(split_parts(0, 10, 64, 100), (1, 64));
    assert_eq!(split_parts(SPLIT_LANES, SPLIT_LANES as usize, 64, 100), (1, 64));
    assert_eq!(split_parts(SPLIT_LANES, 84, 1, 100), (1, 1));
    assert_eq!(split_parts(SPLIT_LANES, 84, 5, 1), (1, 5));
    assert_eq!(split_parts(SPLIT_LANES, 84, 5, 100), (2, 3));
    // A deep level of the paper's NDN (8³, 192 output channels, 8x8 tiles:
    // 1,536 invocations; 576 input channels): about SPLIT_LANES invocations,
    // no empty part.
    for (lanes, ci, max_parts) in [(1536, 576, 10_000), (1536, 96, 10_000), (6144, 288, 10_000), (1536, 576, 7)] {
        let (parts, per) = split_parts(SPLIT_LANES, lanes, ci, max_parts);
        assert!(per >= MIN_SPLIT_CHANNELS && parts <= max_parts, "{lanes} {ci}: {parts} x {per}");
        assert!(parts * per >= ci && (parts - 1) * per < ci, "{lanes} {ci}: {parts} parts of {per} leave one empty");
        assert!(parts == max_parts || parts == ci / MIN_SPLIT_CHANNELS || parts * lanes >= SPLIT_LANES as usize / 2);
    }

    // On the GPU: a layer with few invocations runs the split kernel and its
    // finish, one that fills SPLIT_LANES does not; both match the reference.
    // (Its own context: the kernel profile counts every dispatch on it.)
    let ctx = common::context(&qcanet_gpu::gpu::ContextOptions::from_env(), true);
    if !ctx.has_timestamps() {
        panic!("{}: no timestamp queries, so the dispatches cannot be counted", ctx.info.name);
    }
    let tile = Tile::loops_split(32, 8, 8, SPLIT_LANES);
    // 5 -> 7 channels, k3, 4x7x19: 84 invocations, 2 parts of 3 and 2
    // channels (and 7 -> 5 for the input gradient). 8 -> 16 channels, k1,
    // 64³: 2 blocks of 8 channels x 64 planes x 64 rows x 8 x-blocks =
    // SPLIT_LANES invocations, no split; its input gradient (16 -> 8: one
    // block, half of them) splits in 2.
    for (c, split) in [(case(2, 5, 7, (4, 7, 19), 3, 90), true), (case(1, 8, 16, (64, 64, 64), 1, 91), false)] {
        let (gx, gw, gb, gdy) = (up(&ctx, &c.x), up(&ctx, &c.w), up(&ctx, &c.b), up(&ctx, &c.dy));
        ctx.start_kernel_profile().unwrap();
        let y = conv3d::forward_with_tile(&ctx, &gx, &gw, &gb, tile).unwrap();
        let dx = conv3d::backward_input_with_tile(&ctx, &gdy, &gw, tile).unwrap();
        let prof = ctx.stop_kernel_profile().unwrap();
        let count = |entry: &str| {
            prof.by_kernel.iter().filter(|k| k.kernel.ends_with(&format!("::{entry}"))).map(|k| k.dispatches).sum()
        };
        let (n_split, n_finish, n_plain): (usize, usize, usize) =
            (count("conv_forward4_split"), count("conv_split_finish"), count("conv_forward4"));
        let what = format!("{} -> {} k{} at {}", c.x.shape, c.w.shape.n, c.w.shape.d, c.x.shape.spatial());
        if split {
            // forward and input gradient, each sample: one split conv and one finish
            assert_eq!((n_split, n_finish, n_plain), (4, 4, 0), "{what}: {:?}", prof.by_kernel);
        } else {
            assert_eq!((n_split, n_finish, n_plain), (1, 1, 1), "{what}: {:?}", prof.by_kernel);
        }
        assert_close(&format!("split forward {what}"), &down(&ctx, &y), &reference::forward(&c.x, &c.w, &c.b), TOL);
        assert_close(
            &format!("split input gradient {what}"),
            &down(&ctx, &dx),
            &reference::backward_input(&c.dy, &c.w),
            TOL,
        );
    }
}
