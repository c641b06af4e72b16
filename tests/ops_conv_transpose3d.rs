//! Transposed convolution (k=2, s=2) beyond the op table (`tests/ops_table.rs`
//! holds forward and all three gradients to the reference, deterministic, on
//! odd shapes, channel counts that do not fill the register blocks, a single
//! voxel and the split path, and the reference gradients against finite
//! differences): bad shapes.

mod common;
use common::*;
use qcanet_gpu::ops::conv_transpose3d::{self as ct, reference};
use qcanet_gpu::tensor::Shape5;

fn wshape(cin: usize, cout: usize) -> Shape5 {
    Shape5::new(cin, cout, 2, 2, 2)
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

/// The generated CPU kernels' blocks side by side (how the cpu-unrolled
/// variant's blocks were chosen; not a test of speed): `cargo test
/// --release --test ops_conv_transpose3d -- --ignored --nocapture blocks`.
/// Each block runs forward, input and weight gradient at the NSN's two decoder
/// layers (32 and 64 channels, 32³ → 64³), medians of 3 (each including the
/// output's allocation, so rates are lower than `bench`'s); the blocks
/// listed first are the variant's. Run it twice: on a busy host one round
/// decides little.
#[test]
#[ignore]
fn blocks() {
    use qcanet_gpu::ops::conv_transpose3d::{Block, Kernel, WeightBlock};
    let ctx = ctx();
    println!("adapter: {}", ctx.describe());
    use qcanet_gpu::ops::conv_transpose3d_unrolled::WeightShape;
    let fwd_blocks = [(8, 8, 2), (8, 4, 4), (8, 8, 1), (4, 8, 4), (8, 4, 2)];
    let weight_blocks = [(4, 4, 2), (4, 4, 4), (4, 2, 4), (2, 8, 2), (4, 8, 1)];
    let bin_blocks = [(32, 8, 1), (32, 4, 1), (24, 8, 1), (16, 8, 1), (32, 6, 1)];
    for c in [32usize, 64] {
        let xs = Shape5::new(1, c, 32, 32, 32);
        let x = up(ctx, &rand(xs, 1));
        let w = up(ctx, &rand(wshape(c, c), 2));
        let b = up(ctx, &rand(Shape5::new(1, c, 1, 1, 1), 3));
        let dy = up(ctx, &rand(ct::output_shape(xs, w.shape).unwrap(), 4));
        let flops = ct::flops(xs, c);
        for ((f, bi), &(ci_b, co_b, wxb)) in fwd_blocks.iter().zip(&bin_blocks).zip(&weight_blocks) {
            let blk = |(ch_b, xb, red_b): (u32, u32, u32)| Block { wg: 32, ch_b, xb, red_b };
            let weight = WeightBlock { wg: 32, shape: WeightShape { ci_b, co_b, xb: wxb } };
            let k = Kernel::Unrolled { forward: blk(*f), backward_input: blk(*bi), weight };
            let tf = time_median(ctx, 3, || {
                ct::forward_with(ctx, &x, &w, &b, k).unwrap();
            });
            let tb = time_median(ctx, 3, || {
                ct::backward_input_with(ctx, &dy, &w, k).unwrap();
            });
            let x_in = up(ctx, &rand(xs, 5));
            let tw = time_median(ctx, 3, || {
                ct::backward_weight_with(ctx, &x_in, &dy, k).unwrap();
            });
            let rate = |t: f64| format!("{:.1} ms {:.1} GFLOP/s", t * 1e3, flops / t / 1e9);
            println!(
                "c{c}: forward {f:?} {} | input gradient {bi:?} {} | weight gradient {:?} {}",
                rate(tf),
                rate(tb),
                weight.shape,
                rate(tw)
            );
        }
    }
}
