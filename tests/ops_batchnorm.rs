//! Batch normalisation beyond the op table (`tests/ops_table.rs` holds the
//! training forward with its statistics and running-stat update, the
//! inference forward and the backward to the reference on odd shapes, other
//! eps and momentum, and the split path; the reference backward against
//! finite differences is there too, `table::grad_cases`): accuracy and
//! determinism at a large offset, and bad shapes.

mod common;
use common::*;
use qcanet_gpu::gpu::GpuContext;
use qcanet_gpu::ops::batchnorm::{self, reference, BnConfig, BnSaved};
use qcanet_gpu::tensor::{rel_err, CpuTensor, Shape5};

const SHAPE: Shape5 = Shape5::new(2, 3, 7, 9, 11);
/// f32 kernels against the f64 reference.
const TOL: f64 = 1e-5;

struct Case {
    x: CpuTensor,
    gamma: CpuTensor,
    beta: CpuTensor,
    rm: CpuTensor,
    rv: CpuTensor,
}

fn case(shape: Shape5, seed: u64) -> Case {
    let cs = Shape5::new(1, shape.c, 1, 1, 1);
    Case {
        x: CpuTensor::random(shape, seed, -2.0, 3.0),
        gamma: CpuTensor::random(cs, seed + 1, 0.5, 1.5),
        beta: rand(cs, seed + 2),
        rm: rand(cs, seed + 3),
        rv: CpuTensor::random(cs, seed + 4, 0.5, 2.0),
    }
}

/// Runs the GPU training forward and checks it against the reference; returns the GPU results.
fn check_train(ctx: &GpuContext, k: &Case, cfg: &BnConfig, what: &str, tol: f64) -> (CpuTensor, BnSaved) {
    let (x, g, b) = (up(ctx, &k.x), up(ctx, &k.gamma), up(ctx, &k.beta));
    let (rm, rv) = (up(ctx, &k.rm), up(ctx, &k.rv));
    let (y, saved) = batchnorm::forward_train(ctx, &x, &g, &b, &rm, &rv, cfg).unwrap();
    let (ry, rmean, rinv, rrm, rrv) = reference::forward_train(&k.x, &k.gamma, &k.beta, &k.rm, &k.rv, cfg);
    let y = down(ctx, &y);
    assert_close(&format!("{what} y"), &y, &ry, tol);
    assert_close(&format!("{what} mean"), &down(ctx, &saved.mean), &rmean, tol);
    assert_close(&format!("{what} invstd"), &down(ctx, &saved.invstd), &rinv, tol);
    assert_close(&format!("{what} running_mean"), &down(ctx, &rm), &rrm, tol);
    assert_close(&format!("{what} running_var"), &down(ctx, &rv), &rrv, tol);
    (y, saved)
}

#[test]
fn large_offset_statistics_are_accurate_and_deterministic() {
    // Values 1000 + N(0, 1): a one-pass E[x²] − E[x]² in f32 would lose the
    // variance entirely; the two-pass double-float mean keeps y accurate.
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};
    let ctx = ctx();
    let shape = Shape5::new(1, 3, 64, 64, 64);
    let mut rng = rand::rngs::StdRng::seed_from_u64(80);
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    let x = CpuTensor::from_vec(shape, (0..shape.numel()).map(|_| 1000.0 + normal.sample(&mut rng)).collect());
    let mut k = case(Shape5::new(1, 3, 1, 1, 1), 81);
    k.x = x;
    let cfg = BnConfig::default();
    let (y1, saved) = check_train(ctx, &k, &cfg, "offset 1000", TOL);
    let (_, rmean, rinv, _, _) = reference::forward_train(&k.x, &k.gamma, &k.beta, &k.rm, &k.rv, &cfg);
    // The mean is good to f32 rounding of 1000 (ulp 6e-5); invstd to 1e-6.
    let m = down(ctx, &saved.mean);
    for c in 0..3 {
        assert!(
            (m.data[c] as f64 - rmean.data[c] as f64).abs() <= 6.2e-5,
            "mean {c}: {} vs {}",
            m.data[c],
            rmean.data[c]
        );
    }
    let e = rel_err(&down(ctx, &saved.invstd).data, &rinv.data);
    assert!(e < 1e-6, "invstd relative error {e:.2e}");
    // Backward at the offset, and bit-identical reruns.
    let dy = rand(shape, 82);
    let (dx, dg, db) = batchnorm::backward(ctx, &up(ctx, &k.x), &up(ctx, &k.gamma), &saved, &up(ctx, &dy)).unwrap();
    // The reference takes an f32 mean, which at 1000 is only good to 3e-5;
    // batch norm's backward is shift-invariant, so feed it x − 1000 (exact in
    // f32 here) and the f64 mean − 1000 instead.
    let (m64, _) = reference::batch_stats(&k.x);
    let xs = CpuTensor::from_vec(shape, k.x.data.iter().map(|&v| v - 1000.0).collect());
    let ms = CpuTensor::from_vec(rmean.shape, m64.iter().map(|&v| (v - 1000.0) as f32).collect());
    let (rdx, rdg, rdb) = reference::backward(&xs, &k.gamma, &ms, &rinv, &dy);
    assert_close("offset dx", &down(ctx, &dx), &rdx, TOL);
    assert_close("offset dgamma", &down(ctx, &dg), &rdg, TOL);
    assert_close("offset dbeta", &down(ctx, &db), &rdb, TOL);
    let (y2, saved2) = check_train(ctx, &k, &cfg, "offset 1000 rerun", TOL);
    assert_eq!(y1.data, y2.data, "y must be bit-identical across runs");
    assert_eq!(down(ctx, &saved.invstd).data, down(ctx, &saved2.invstd).data);
    let (dx2, dg2, _) = batchnorm::backward(ctx, &up(ctx, &k.x), &up(ctx, &k.gamma), &saved2, &up(ctx, &dy)).unwrap();
    assert_eq!(down(ctx, &dx).data, down(ctx, &dx2).data, "dx must be bit-identical across runs");
    assert_eq!(down(ctx, &dg).data, down(ctx, &dg2).data, "dgamma must be bit-identical across runs");
}

#[test]
fn bad_shapes_are_errors() {
    let ctx = ctx();
    let k = case(SHAPE, 100);
    let x = up(ctx, &k.x);
    let wrong = up(ctx, &rand(Shape5::new(1, 4, 1, 1, 1), 101));
    let (g, b, rm, rv) = (up(ctx, &k.gamma), up(ctx, &k.beta), up(ctx, &k.rm), up(ctx, &k.rv));
    let e = batchnorm::forward_train(ctx, &x, &wrong, &b, &rm, &rv, &BnConfig::default()).unwrap_err().to_string();
    assert!(e.contains("gamma") && e.contains("forward_train"), "{e}");
    let e = batchnorm::forward_infer(ctx, &x, &g, &b, &rm, &wrong, &BnConfig::default()).unwrap_err().to_string();
    assert!(e.contains("running_var"), "{e}");
    let one = up(ctx, &rand(Shape5::new(1, 3, 1, 1, 1), 102));
    let e = batchnorm::forward_train(ctx, &one, &g, &b, &rm, &rv, &BnConfig::default()).unwrap_err().to_string();
    assert!(e.contains("one value per channel"), "{e}");
}

/// Throughput report, not a check: `cargo test --test ops_batchnorm -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_throughput() {
    use qcanet_gpu::ops::{loss, optim};
    // Its own context without NaN poisoning, so the shared one stays poisoned.
    let ctx = &unpoisoned_ctx();
    // Median of 5, in ms.
    let median = |f: &mut dyn FnMut()| time_median(ctx, 5, f) * 1e3;
    println!("adapter: {}", ctx.describe());
    for shape in [Shape5::new(1, 16, 48, 48, 48), Shape5::new(1, 32, 64, 64, 64)] {
        let k = case(shape, 1);
        let (x, g, b, rm, rv) = (up(ctx, &k.x), up(ctx, &k.gamma), up(ctx, &k.beta), up(ctx, &k.rm), up(ctx, &k.rv));
        let dy = up(ctx, &rand(shape, 2));
        let cfg = BnConfig::default();
        let (_, saved) = batchnorm::forward_train(ctx, &x, &g, &b, &rm, &rv, &cfg).unwrap();
        let mb = shape.f32_bytes() as f64 / 1e6;
        let f = median(&mut || drop(batchnorm::forward_train(ctx, &x, &g, &b, &rm, &rv, &cfg).unwrap()));
        let i = median(&mut || drop(batchnorm::forward_infer(ctx, &x, &g, &b, &rm, &rv, &cfg).unwrap()));
        let w = median(&mut || drop(batchnorm::backward(ctx, &x, &g, &saved, &dy).unwrap()));
        let r = median(&mut || drop(qcanet_gpu::ops::activation::relu_forward(ctx, &x).unwrap()));
        println!("relu_forward {shape} (element-wise, for scale): {r:.1} ms");
        println!(
            "batchnorm {shape} ({mb:.0} MB): forward_train {f:.1} ms, forward_infer {i:.1} ms, backward {w:.1} ms"
        );
    }
    let s = Shape5::new(1, 2, 48, 48, 48);
    let z = up(ctx, &rand(s, 3));
    let t = up(ctx, &CpuTensor::from_vec(s.with_c(1), (0..s.spatial()).map(|i| (i % 2) as f32).collect()));
    let z1 = up(ctx, &rand(s.with_c(1), 4));
    let ce = median(&mut || drop(loss::softmax_cross_entropy(ctx, &z, &t, &[0.3, 1.0]).unwrap()));
    let bce = median(&mut || drop(loss::bce_with_logits(ctx, &z1, &t, 3.0).unwrap()));
    let dice = median(&mut || drop(loss::soft_dice(ctx, &z, &t, 1, 1.0).unwrap()));
    println!("losses {s}: softmax_cross_entropy {ce:.1} ms, bce_with_logits {bce:.1} ms, soft_dice {dice:.1} ms");
    let ps: Vec<GpuTensorBox> = (0..20).map(|i| up(ctx, &rand(Shape5::new(16, 16, 3, 3, 3), 10 + i))).collect();
    let gs: Vec<GpuTensorBox> = (0..20).map(|i| up(ctx, &rand(Shape5::new(16, 16, 3, 3, 3), 40 + i))).collect();
    let (pr, gr): (Vec<_>, Vec<_>) = (ps.iter().collect(), gs.iter().collect());
    let mut opt = optim::Optimizer::new(ctx, optim::OptimizerConfig::default(), &pr).unwrap();
    let a = median(&mut || opt.step(ctx, &pr, &gr).unwrap());
    println!("adam step, 20 tensors of 16x16x3x3x3 ({} params): {a:.2} ms", 20 * 16 * 16 * 27);
}

type GpuTensorBox = qcanet_gpu::gpu::GpuTensor;
