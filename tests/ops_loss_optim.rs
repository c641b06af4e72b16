//! Losses (softmax cross-entropy, BCE with logits, soft Dice) and optimizers
//! (SGD with momentum, Adam; weight decay) against their CPU references; the
//! reference gradients against central finite differences; the split path;
//! determinism; optimizer state save and restore.

mod common;
use common::*;
use qcanet_gpu::gpu::{GpuContext, GpuTensor};
use qcanet_gpu::ops::loss::{self, reference as lref};
use qcanet_gpu::ops::optim::{reference::CpuOptimizer, AdamConfig, Optimizer, OptimizerConfig, SgdConfig};
use qcanet_gpu::tensor::{rel_err, CpuTensor, Shape5};
use rand::{Rng, SeedableRng};

const SHAPE: Shape5 = Shape5::new(2, 3, 7, 9, 11);
/// f32 kernels against the f64 references.
const TOL: f64 = 1e-5;
/// Reference gradients against central differences (h = 1e-3, in f64).
const FD_STEP: f32 = 1e-3;
const FD_TOL: f64 = 1e-5;

fn scalar(ctx: &GpuContext, t: &GpuTensor) -> f32 {
    assert_eq!(t.shape, Shape5::new(1, 1, 1, 1, 1));
    ctx.read_f32(&t.buf, 0, 1).unwrap()[0]
}

#[track_caller]
fn assert_scalar(what: &str, gpu: f32, reference: f64, tol: f64) {
    let e = (gpu as f64 - reference).abs() / reference.abs();
    assert!(e < tol, "{what}: {gpu} vs {reference}, relative error {e:.2e} (tolerance {tol:.1e})");
}

/// Class indices 0..k as f32, reproducible; every class present.
fn classes(shape: Shape5, k: usize, seed: u64) -> CpuTensor {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut t = CpuTensor::from_vec(shape, (0..shape.numel()).map(|_| rng.random_range(0..k) as f32).collect());
    for c in 0..k {
        t.data[c] = c as f32;
    }
    t
}

fn ce_check(ctx: &GpuContext, s: Shape5, w: &[f32], seed: u64, what: &str) -> (f32, CpuTensor) {
    let z = CpuTensor::random(s, seed, -3.0, 3.0);
    let t = classes(s.with_c(1), s.c, seed + 1);
    let (l, g) = loss::softmax_cross_entropy(ctx, &up(ctx, &z), &up(ctx, &t), w).unwrap();
    let (rl, rg) = lref::softmax_cross_entropy(&z, &t, w).unwrap();
    let (l, g) = (scalar(ctx, &l), down(ctx, &g));
    assert_scalar(&format!("{what} loss"), l, rl, TOL);
    assert_close(&format!("{what} grad"), &g, &rg, TOL);
    (l, g)
}

#[test]
fn softmax_cross_entropy_matches_reference() {
    let ctx = ctx();
    ce_check(ctx, SHAPE, &[0.2, 1.0, 2.5], 1, "ce K=3");
    ce_check(ctx, Shape5::new(3, 2, 17, 19, 23), &[0.3, 4.0], 2, "ce K=2");
    ce_check(ctx, Shape5::new(1, 5, 3, 5, 7), &[1.0, 0.5, 2.0, 0.0, 3.0], 3, "ce K=5");
}

#[test]
fn softmax_cross_entropy_rejects_bad_targets() {
    let ctx = ctx();
    let z = up(ctx, &rand(SHAPE, 4));
    for bad in [3.0f32, -1.0, 0.5, f32::NAN] {
        let mut t = classes(SHAPE.with_c(1), 3, 5);
        t.data[100] = bad;
        let e = loss::softmax_cross_entropy(ctx, &z, &up(ctx, &t), &[1.0, 1.0, 1.0]).unwrap_err().to_string();
        assert!(e.contains("softmax_cross_entropy") && e.contains("class"), "{bad}: {e}");
        assert!(lref::softmax_cross_entropy(&down(ctx, &z), &t, &[1.0; 3]).is_err());
    }
    let t = up(ctx, &classes(SHAPE.with_c(1), 3, 5));
    let e = loss::softmax_cross_entropy(ctx, &z, &t, &[1.0, 1.0]).unwrap_err().to_string();
    assert!(e.contains("class weights"), "{e}");
    let wrong = up(ctx, &classes(Shape5::new(2, 1, 7, 9, 10), 3, 5));
    let e = loss::softmax_cross_entropy(ctx, &z, &wrong, &[1.0; 3]).unwrap_err().to_string();
    assert!(e.contains("target has shape"), "{e}");
}

fn binary(shape: Shape5, seed: u64) -> CpuTensor {
    let mut t = CpuTensor::random(shape, seed, 0.0, 1.0);
    for v in t.data.iter_mut() {
        *v = if *v < 0.3 { 1.0 } else { 0.0 };
    }
    t
}

fn bce_check(ctx: &GpuContext, s: Shape5, pw: f32, seed: u64, what: &str) -> (f32, CpuTensor) {
    let mut z = CpuTensor::random(s, seed, -6.0, 6.0);
    // Saturated logits: the stable form must not overflow.
    z.data[0] = 60.0;
    z.data[1] = -60.0;
    z.data[2] = 100.0;
    let t = binary(s, seed + 1);
    let (l, g) = loss::bce_with_logits(ctx, &up(ctx, &z), &up(ctx, &t), pw).unwrap();
    let (rl, rg) = lref::bce_with_logits(&z, &t, pw);
    let (l, g) = (scalar(ctx, &l), down(ctx, &g));
    assert_scalar(&format!("{what} loss"), l, rl, TOL);
    assert_close(&format!("{what} grad"), &g, &rg, TOL);
    (l, g)
}

#[test]
fn bce_with_logits_matches_reference() {
    let ctx = ctx();
    bce_check(ctx, SHAPE.with_c(1), 3.0, 10, "bce pw 3");
    bce_check(ctx, Shape5::new(3, 1, 17, 19, 23), 0.5, 11, "bce pw 0.5");
    let z = up(ctx, &rand(SHAPE, 12));
    let e = loss::bce_with_logits(ctx, &z, &up(ctx, &rand(SHAPE, 13)), 1.0).unwrap_err().to_string();
    assert!(e.contains("one channel"), "{e}");
}

fn dice_check(ctx: &GpuContext, s: Shape5, ch: usize, smooth: f32, seed: u64, what: &str) -> (f32, CpuTensor) {
    let p = CpuTensor::random(s, seed, 0.0, 1.0);
    let t = binary(s.with_c(1), seed + 1);
    let (l, g) = loss::soft_dice(ctx, &up(ctx, &p), &up(ctx, &t), ch, smooth).unwrap();
    let (rl, rg) = lref::soft_dice(&p, &t, ch, smooth);
    let (l, g) = (scalar(ctx, &l), down(ctx, &g));
    assert_scalar(&format!("{what} loss"), l, rl, TOL);
    assert_close(&format!("{what} grad"), &g, &rg, TOL);
    let sp = s.spatial();
    for n in 0..s.n {
        for c in (0..s.c).filter(|&c| c != ch) {
            assert!(g.channel(n, c).iter().all(|&v| v == 0.0), "{what}: gradient not zero in channel {c}");
        }
        assert!(g.channel(n, ch).iter().any(|&v| v != 0.0));
    }
    assert_eq!(g.data.len(), s.n * s.c * sp);
    (l, g)
}

#[test]
fn soft_dice_matches_reference() {
    let ctx = ctx();
    dice_check(ctx, SHAPE, 1, 1.0, 20, "dice K=3 ch 1");
    dice_check(ctx, Shape5::new(3, 2, 17, 19, 23), 0, 1e-5, 21, "dice K=2 ch 0");
    dice_check(ctx, SHAPE.with_c(1), 0, 1.0, 22, "dice K=1");
    let e = loss::soft_dice(ctx, &up(ctx, &rand(SHAPE, 23)), &up(ctx, &binary(SHAPE.with_c(1), 24)), 3, 1.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("channel 3"), "{e}");
}

#[test]
fn losses_are_deterministic() {
    let ctx = ctx();
    let s = Shape5::new(2, 2, 33, 35, 37);
    let a = ce_check(ctx, s, &[0.4, 2.0], 30, "ce det");
    let b = ce_check(ctx, s, &[0.4, 2.0], 30, "ce det");
    assert_eq!((a.0.to_bits(), &a.1.data), (b.0.to_bits(), &b.1.data), "cross-entropy not bit-identical");
    let a = bce_check(ctx, s.with_c(1), 2.0, 31, "bce det");
    let b = bce_check(ctx, s.with_c(1), 2.0, 31, "bce det");
    assert_eq!((a.0.to_bits(), &a.1.data), (b.0.to_bits(), &b.1.data), "bce not bit-identical");
    let a = dice_check(ctx, s, 1, 1.0, 32, "dice det");
    let b = dice_check(ctx, s, 1, 1.0, 32, "dice det");
    assert_eq!((a.0.to_bits(), &a.1.data), (b.0.to_bits(), &b.1.data), "dice not bit-identical");
}

#[test]
fn losses_split_path() {
    // 4 KiB bindings. Cross-entropy windows hold whole samples (2×5×6×7 = 420
    // values each, 3 samples exceed one binding); BCE and Dice split anywhere
    // (17×19×23 channels exceed one binding).
    let ctx = capped_ctx(4096);
    let s = Shape5::new(3, 2, 5, 6, 7);
    assert!(s.bytes() > ctx.binding_limit());
    ce_check(&ctx, s, &[0.7, 1.9], 40, "split ce");
    let big = Shape5::new(2, 2, 17, 19, 23);
    assert!(big.spatial() * 4 > ctx.binding_limit() as usize);
    bce_check(&ctx, big.with_c(1), 3.0, 41, "split bce");
    dice_check(&ctx, big, 1, 1.0, 42, "split dice");
    // A sample larger than one binding is a clear error for cross-entropy.
    let z = up(&ctx, &rand(big, 43));
    let t = up(&ctx, &classes(big.with_c(1), 2, 44));
    let e = loss::softmax_cross_entropy(&ctx, &z, &t, &[1.0, 1.0]).unwrap_err().to_string();
    assert!(e.contains("storage binding"), "{e}");
}

#[test]
fn reference_gradients_match_finite_differences() {
    let s = Shape5::new(2, 3, 2, 2, 3);
    let z = CpuTensor::random(s, 50, -2.0, 2.0);
    let t = classes(s.with_c(1), 3, 51);
    let w = [0.3, 1.0, 2.0];
    let (_, g) = lref::softmax_cross_entropy(&z, &t, &w).unwrap();
    fd_check("fd ce", &g, &z, FD_STEP, FD_TOL, |z| lref::softmax_cross_entropy(z, &t, &w).unwrap().0);

    let z1 = CpuTensor::random(s.with_c(1), 52, -3.0, 3.0);
    let t1 = binary(s.with_c(1), 53);
    assert!(t1.data.contains(&0.0) && t1.data.contains(&1.0));
    let (_, g) = lref::bce_with_logits(&z1, &t1, 2.5);
    fd_check("fd bce", &g, &z1, FD_STEP, FD_TOL, |z| lref::bce_with_logits(z, &t1, 2.5).0);

    let p = CpuTensor::random(s, 54, 0.05, 0.95);
    let (_, g) = lref::soft_dice(&p, &t1, 2, 1.0);
    fd_check("fd dice", &g, &p, FD_STEP, FD_TOL, |p| lref::soft_dice(p, &t1, 2, 1.0).0);
}

const PARAM_SHAPES: [Shape5; 3] = [Shape5::new(5, 3, 3, 3, 3), Shape5::new(1, 5, 1, 1, 1), Shape5::new(2, 3, 7, 9, 11)];

/// Runs `steps` updates on the GPU and the reference with the same random
/// gradients; compares parameter changes and state after each step.
fn optimizer_check(ctx: &GpuContext, config: OptimizerConfig, shapes: &[Shape5], steps: usize, what: &str) {
    let p0: Vec<CpuTensor> = shapes.iter().enumerate().map(|(i, &s)| rand(s, 60 + i as u64)).collect();
    let gp: Vec<GpuTensor> = p0.iter().map(|p| up(ctx, p)).collect();
    let gref: Vec<&GpuTensor> = gp.iter().collect();
    let mut opt = Optimizer::new(ctx, config.clone(), &gref).unwrap();
    let mut cpu_p = p0.clone();
    let mut cpu = CpuOptimizer::new(config, &p0.iter().collect::<Vec<_>>());
    for step in 0..steps {
        let grads: Vec<CpuTensor> =
            shapes.iter().enumerate().map(|(i, &s)| rand(s, 1000 + (step * 10 + i) as u64)).collect();
        let gg: Vec<GpuTensor> = grads.iter().map(|g| up(ctx, g)).collect();
        opt.step(ctx, &gref, &gg.iter().collect::<Vec<_>>()).unwrap();
        cpu.step(&mut cpu_p, &grads);
        assert_eq!(opt.step_count(), step as u64 + 1);
        for i in 0..shapes.len() {
            // Compare the change from the start, not the parameters, so the
            // check sees the updates at full relative precision.
            let got = down(ctx, &gp[i]);
            let delta = |t: &CpuTensor| t.data.iter().zip(&p0[i].data).map(|(a, b)| a - b).collect::<Vec<f32>>();
            let e = rel_err(&delta(&got), &delta(&cpu_p[i]));
            assert!(e < TOL, "{what} step {step} param {i}: relative error of the update {e:.2e}");
        }
        let names: Vec<String> = opt.state().into_iter().map(|(n, _)| n).collect();
        for ((name, t), (rname, rt)) in opt.state().into_iter().zip(cpu.state(shapes)) {
            assert_eq!(name, rname);
            assert_close(&format!("{what} step {step} state {name}"), &down(ctx, t), &rt, TOL);
        }
        assert_eq!(names.len(), cpu.state(shapes).len());
    }
}

#[test]
fn sgd_matches_reference() {
    let ctx = ctx();
    let sgd = |momentum, weight_decay| OptimizerConfig::Sgd(SgdConfig { lr: 0.1, momentum, weight_decay });
    optimizer_check(ctx, sgd(0.9, 0.01), &PARAM_SHAPES, 5, "sgd momentum wd");
    optimizer_check(ctx, sgd(0.0, 0.05), &PARAM_SHAPES, 3, "sgd plain wd");
}

#[test]
fn adam_matches_reference() {
    let ctx = ctx();
    let adam = OptimizerConfig::Adam(AdamConfig { lr: 0.05, weight_decay: 0.01, ..AdamConfig::default() });
    optimizer_check(ctx, adam, &PARAM_SHAPES, 6, "adam wd");
    let adam = OptimizerConfig::Adam(AdamConfig { lr: 0.01, beta1: 0.5, beta2: 0.9, eps: 1e-3, weight_decay: 0.0 });
    optimizer_check(ctx, adam, &PARAM_SHAPES, 4, "adam betas");
}

#[test]
fn optimizer_split_path() {
    // 1 KiB bindings: the 2×3×7×9×11 parameter spans many windows.
    let ctx = capped_ctx(1024);
    assert!(PARAM_SHAPES[2].bytes() > ctx.binding_limit());
    let adam = OptimizerConfig::Adam(AdamConfig { lr: 0.05, weight_decay: 0.01, ..AdamConfig::default() });
    optimizer_check(&ctx, adam, &PARAM_SHAPES, 3, "split adam");
    let sgd = OptimizerConfig::Sgd(SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 0.01 });
    optimizer_check(&ctx, sgd, &PARAM_SHAPES, 3, "split sgd");
}

#[test]
fn optimizer_state_save_and_restore() {
    let ctx = ctx();
    let config = OptimizerConfig::Adam(AdamConfig { lr: 0.05, ..AdamConfig::default() });
    let shapes = &PARAM_SHAPES[..2];
    let p: Vec<GpuTensor> = shapes.iter().enumerate().map(|(i, &s)| up(ctx, &rand(s, 70 + i as u64))).collect();
    let pr: Vec<&GpuTensor> = p.iter().collect();
    let g: Vec<GpuTensor> = shapes.iter().enumerate().map(|(i, &s)| up(ctx, &rand(s, 80 + i as u64))).collect();
    let gr: Vec<&GpuTensor> = g.iter().collect();
    let mut a = Optimizer::new(ctx, config.clone(), &pr).unwrap();
    a.step(ctx, &pr, &gr).unwrap();
    a.step(ctx, &pr, &gr).unwrap();
    let saved: Vec<(String, CpuTensor)> = a.state().into_iter().map(|(n, t)| (n, down(ctx, t))).collect();
    let names: Vec<&str> = saved.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["0.exp_avg", "0.exp_avg_sq", "1.exp_avg", "1.exp_avg_sq"]);
    // Restore into a fresh optimizer over a copy of the parameters; the next
    // step must be bit-identical.
    let q: Vec<GpuTensor> = p.iter().map(|t| up(ctx, &down(ctx, t))).collect();
    let qr: Vec<&GpuTensor> = q.iter().collect();
    let mut b = Optimizer::new(ctx, config.clone(), &qr).unwrap();
    b.load_state(ctx, a.step_count(), &saved).unwrap();
    assert_eq!(b.step_count(), 2);
    a.step(ctx, &pr, &gr).unwrap();
    b.step(ctx, &qr, &gr).unwrap();
    for (x, y) in p.iter().zip(&q) {
        assert_eq!(down(ctx, x).data, down(ctx, y).data, "restored optimizer diverged");
    }
    // Errors name the tensor.
    let e = b.load_state(ctx, 1, &saved[1..]).unwrap_err().to_string();
    assert!(e.contains("missing") && e.contains("0.exp_avg"), "{e}");
    let mut bad = saved.clone();
    bad[3].1 = rand(Shape5::new(1, 4, 1, 1, 1), 90);
    let e = b.load_state(ctx, 1, &bad).unwrap_err().to_string();
    assert!(e.contains("1.exp_avg_sq") && e.contains("shape"), "{e}");
    let mut extra = saved.clone();
    extra.push(("0.momentum_buffer".into(), rand(shapes[0], 91)));
    let e = b.load_state(ctx, 1, &extra).unwrap_err().to_string();
    assert!(e.contains("unexpected") && e.contains("0.momentum_buffer"), "{e}");
    // Wrong parameter lists and invalid settings.
    let e = b.step(ctx, &qr[..1], &gr[..1]).unwrap_err().to_string();
    assert!(e.contains("parameters"), "{e}");
    let bad_cfg = OptimizerConfig::Adam(AdamConfig { beta1: 1.0, ..AdamConfig::default() });
    assert!(Optimizer::new(ctx, bad_cfg, &qr).unwrap_err().to_string().contains("beta1"));
    // The config round-trips through serde.
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(serde_json::from_str::<OptimizerConfig>(&json).unwrap(), config);
}
