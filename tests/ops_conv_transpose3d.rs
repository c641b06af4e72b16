//! Transposed convolution (k=2, s=2): forward and all three gradients against
//! the CPU reference on odd shapes and channel counts that do not fill the
//! register blocks, finite-difference checks of the reference gradients, the
//! split path for tensors larger than one binding, determinism, bad shapes.

mod common;
use common::*;
use qcanet_gpu::ops::conv_transpose3d::{self as ct, reference};
use qcanet_gpu::tensor::{CpuTensor, Shape5};

const TOL: f64 = 1e-5;

fn wshape(cin: usize, cout: usize) -> Shape5 {
    Shape5::new(cin, cout, 2, 2, 2)
}

/// Runs forward and every backward on the GPU context `ctx` and compares with the reference.
fn check_all(ctx: &qcanet_gpu::gpu::GpuContext, xs: Shape5, cout: usize, seed: u64, what: &str) {
    let x = rand(xs, seed);
    let w = rand(wshape(xs.c, cout), seed + 1);
    let b = rand(Shape5::new(1, cout, 1, 1, 1), seed + 2);
    let ys = ct::output_shape(xs, w.shape).unwrap();
    assert_eq!(ys, Shape5::new(xs.n, cout, 2 * xs.d, 2 * xs.h, 2 * xs.w));
    let dy = rand(ys, seed + 3);
    let (gx, gw, gb, gdy) = (up(ctx, &x), up(ctx, &w), up(ctx, &b), up(ctx, &dy));
    assert_close(
        &format!("{what} forward"),
        &down(ctx, &ct::forward(ctx, &gx, &gw, &gb).unwrap()),
        &reference::forward(&x, &w, &b),
        TOL,
    );
    assert_close(
        &format!("{what} backward_input"),
        &down(ctx, &ct::backward_input(ctx, &gdy, &gw).unwrap()),
        &reference::backward_input(&dy, &w),
        TOL,
    );
    let dw_ref = reference::backward_weight(&x, &dy);
    let dw1 = down(ctx, &ct::backward_weight(ctx, &gx, &gdy).unwrap());
    assert_close(&format!("{what} backward_weight"), &dw1, &dw_ref, TOL);
    let dw2 = down(ctx, &ct::backward_weight(ctx, &gx, &gdy).unwrap());
    assert_eq!(dw1.data, dw2.data, "{what}: backward_weight must be bit-identical across runs");
    assert_close(
        &format!("{what} backward_bias"),
        &down(ctx, &ct::backward_bias(ctx, &gdy).unwrap()),
        &reference::backward_bias(&dy),
        TOL,
    );
}

#[test]
fn matches_reference_on_odd_shapes() {
    let ctx = ctx();
    // 3 -> 5 channels: both are tails of the register blocks.
    check_all(ctx, Shape5::new(2, 3, 4, 5, 3), 5, 10, "2x3x4x5x3 -> 5");
    // Several blocks plus tails in both directions.
    check_all(ctx, Shape5::new(1, 19, 2, 3, 3), 17, 20, "1x19x2x3x3 -> 17");
    // Enough input rows for several weight-gradient chunks (90 rows of 11).
    check_all(ctx, Shape5::new(2, 3, 9, 10, 11), 5, 30, "2x3x9x10x11 -> 5");
    // A single voxel.
    check_all(ctx, Shape5::new(2, 4, 1, 1, 1), 3, 40, "2x4x1x1x1 -> 3");
}

#[test]
fn split_path_matches_reference() {
    // 2 KiB bindings: one output channel (480 values) fits but not two; one
    // sample of the input (11 x 60 values) does not fit either, so the forward
    // pass accumulates over input-channel groups and the input gradient over
    // output-channel groups.
    let ctx = capped_ctx(2048);
    let xs = Shape5::new(2, 11, 3, 4, 5);
    assert!((xs.c * xs.spatial() * 4) as u64 > ctx.binding_limit());
    assert!((8 * xs.spatial() * 4) as u64 <= ctx.binding_limit());
    check_all(&ctx, xs, 3, 50, "split 2x11x3x4x5 -> 3");
}

#[test]
fn reference_gradients_match_finite_differences() {
    // The op is linear in x and in w; central differences of L = sum(y * g)
    // in f64 over f32 outputs are accurate to about 1e-4 with eps = 1e-2.
    let xs = Shape5::new(2, 2, 1, 2, 3);
    let x = rand(xs, 60);
    let w = rand(wshape(2, 3), 61);
    let b = rand(Shape5::new(1, 3, 1, 1, 1), 62);
    let g = rand(ct::output_shape(xs, w.shape).unwrap(), 63);
    let loss = |x: &CpuTensor, w: &CpuTensor, b: &CpuTensor| -> f64 {
        let y = reference::forward(x, w, b);
        y.data.iter().zip(&g.data).map(|(&a, &b)| a as f64 * b as f64).sum()
    };
    let (step, tol) = (1e-2, 1e-4);
    fd_check("fd dx", &reference::backward_input(&g, &w), &x, step, tol, |x| loss(x, &w, &b));
    fd_check("fd dw", &reference::backward_weight(&x, &g), &w, step, tol, |w| loss(&x, w, &b));
    fd_check("fd db", &reference::backward_bias(&g), &b, step, tol, |b| loss(&x, &w, b));
}

#[test]
fn bad_shapes_are_errors() {
    let ctx = ctx();
    let x = up(ctx, &rand(Shape5::new(1, 3, 2, 2, 2), 70));
    let w = up(ctx, &rand(wshape(3, 4), 71));
    let b = up(ctx, &rand(Shape5::new(1, 4, 1, 1, 1), 72));
    let msg = |r: qcanet_gpu::error::Result<qcanet_gpu::gpu::GpuTensor>| r.unwrap_err().to_string();
    // Kernel not 2x2x2.
    let w3 = up(ctx, &rand(Shape5::new(3, 4, 3, 3, 3), 73));
    assert!(msg(ct::forward(ctx, &x, &w3, &b)).contains("weights"));
    // Channel mismatch.
    let w5 = up(ctx, &rand(wshape(5, 4), 74));
    assert!(msg(ct::forward(ctx, &x, &w5, &b)).contains("channels"));
    // Bias of the wrong length.
    let b3 = up(ctx, &rand(Shape5::new(1, 3, 1, 1, 1), 75));
    assert!(msg(ct::forward(ctx, &x, &w, &b3)).contains("bias"));
    // Gradient with odd sides, or the wrong channel count.
    let dy_odd = up(ctx, &rand(Shape5::new(1, 4, 4, 3, 4), 76));
    assert!(msg(ct::backward_input(ctx, &dy_odd, &w)).contains("even"));
    assert!(msg(ct::backward_weight(ctx, &x, &dy_odd)).contains("even"));
    let dy_c = up(ctx, &rand(Shape5::new(1, 5, 4, 4, 4), 77));
    assert!(msg(ct::backward_input(ctx, &dy_c, &w)).contains("weights"));
    // Gradient whose size does not match the input.
    let dy_big = up(ctx, &rand(Shape5::new(1, 4, 6, 4, 4), 78));
    assert!(msg(ct::backward_weight(ctx, &x, &dy_big)).contains("must be"));
    // Weights larger than one storage binding.
    let small = capped_ctx(1024);
    let (x, w, b) = (
        up(&small, &rand(Shape5::new(1, 8, 2, 2, 2), 79)),
        up(&small, &rand(wshape(8, 8), 80)),
        up(&small, &rand(Shape5::new(1, 8, 1, 1, 1), 81)),
    );
    assert!(msg(ct::forward(&small, &x, &w, &b)).contains("storage binding"));
}

/// Timings for the report (not a test of speed): `cargo test --release --test
/// ops_conv_transpose3d -- --ignored --nocapture timings`.
#[test]
#[ignore]
fn timings() {
    let ctx = ctx();
    println!("adapter: {}", ctx.describe());
    for (cin, cout, side, reps) in [(64usize, 64usize, 16usize, 7usize), (32, 32, 32, 5)] {
        let xs = Shape5::new(1, cin, side, side, side);
        let x = rand(xs, 1);
        let w = rand(wshape(cin, cout), 2);
        let b = rand(Shape5::new(1, cout, 1, 1, 1), 3);
        let dy = rand(ct::output_shape(xs, w.shape).unwrap(), 4);
        let (gx, gw, gb, gdy) = (up(ctx, &x), up(ctx, &w), up(ctx, &b), up(ctx, &dy));
        let flops = ct::flops(xs, cout);
        let name = format!("{cin}->{cout} {side}^3->{}^3", 2 * side);
        let run = |label: &str, f: &mut dyn FnMut()| {
            let t = time_median(ctx, reps, f);
            println!("{name} {label}: {:.2} ms, {:.2} GFLOP/s", t * 1e3, flops / t / 1e9);
        };
        run("gpu forward", &mut || {
            ct::forward(ctx, &gx, &gw, &gb).unwrap();
            ctx.sync().unwrap();
        });
        run("gpu backward_input", &mut || {
            ct::backward_input(ctx, &gdy, &gw).unwrap();
            ctx.sync().unwrap();
        });
        run("gpu backward_weight", &mut || {
            ct::backward_weight(ctx, &gx, &gdy).unwrap();
            ctx.sync().unwrap();
        });
        let cpu = |label: &str, f: &mut dyn FnMut()| {
            let s = std::time::Instant::now();
            f();
            let t = s.elapsed().as_secs_f64();
            println!("{name} {label}: {:.2} ms (1 run), {:.3} GFLOP/s", t * 1e3, flops / t / 1e9);
        };
        cpu("reference forward", &mut || {
            reference::forward(&x, &w, &b);
        });
        cpu("reference backward_input", &mut || {
            reference::backward_input(&dy, &w);
        });
        cpu("reference backward_weight", &mut || {
            reference::backward_weight(&x, &dy);
        });
    }
}
