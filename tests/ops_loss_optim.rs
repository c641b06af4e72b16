//! Losses and optimizers beyond the op table (`tests/ops_table.rs` holds
//! softmax cross-entropy, BCE with logits and soft Dice, value and gradient,
//! and two-step SGD and Adam to their references, deterministic, on odd
//! shapes and the split path, and the reference gradients against finite
//! differences): bad targets and settings, Dice's gradient outside its
//! channel, optimizers over several tensors and steps against the reference
//! (update and state after each step), state save and restore.

mod common;
use common::*;
use qcanet_gpu::gpu::{GpuContext, GpuTensor};
use qcanet_gpu::ops::loss::{self, reference as lref};
use qcanet_gpu::ops::optim::{reference::CpuOptimizer, AdamConfig, Optimizer, OptimizerConfig, SgdConfig};
use qcanet_gpu::ops::table::{binary, classes};
use qcanet_gpu::tensor::{rel_err, CpuTensor, Shape5};

const SHAPE: Shape5 = Shape5::new(2, 3, 7, 9, 11);
/// f32 kernels against the f64 references.
const TOL: f64 = 1e-5;

#[test]
fn softmax_cross_entropy_rejects_bad_targets() {
    let ctx = ctx();
    let z = up(ctx, &rand(SHAPE, 4));
    let good = classes(SHAPE.with_c(1), 3, 5);
    let (l, _) = loss::softmax_cross_entropy(ctx, &z, &up(ctx, &good), &[1.0, 1.0, 1.0]).unwrap();
    assert!(down(ctx, &l).data[0].is_finite());
    for bad in [3.0f32, -1.0, 0.5, f32::NAN] {
        let mut t = good.clone();
        t.data[100] = bad;
        // The GPU loss turns NaN (checked without a wait inside the step);
        // the reference errors.
        let (l, _) = loss::softmax_cross_entropy(ctx, &z, &up(ctx, &t), &[1.0, 1.0, 1.0]).unwrap();
        assert!(down(ctx, &l).data[0].is_nan(), "{bad}");
        assert!(lref::softmax_cross_entropy(&down(ctx, &z), &t, &[1.0; 3]).is_err());
    }
    let t = up(ctx, &classes(SHAPE.with_c(1), 3, 5));
    let e = loss::softmax_cross_entropy(ctx, &z, &t, &[1.0, 1.0]).unwrap_err().to_string();
    assert!(e.contains("class weights"), "{e}");
    let wrong = up(ctx, &classes(Shape5::new(2, 1, 7, 9, 10), 3, 5));
    let e = loss::softmax_cross_entropy(ctx, &z, &wrong, &[1.0; 3]).unwrap_err().to_string();
    assert!(e.contains("target has shape"), "{e}");
}

#[test]
fn softmax_cross_entropy_rejects_bad_voxel_weights() {
    // A two-channel target: class indices, then voxel weights. A negative,
    // NaN or infinite weight makes the GPU loss NaN and the reference err;
    // a weight map of ones gives the unweighted loss.
    let ctx = ctx();
    let z = up(ctx, &rand(SHAPE, 6));
    let good = qcanet_gpu::ops::table::weighted_classes(SHAPE, 3, 7);
    let (l, _) = loss::softmax_cross_entropy(ctx, &z, &up(ctx, &good), &[1.0, 2.0, 0.5]).unwrap();
    assert!(down(ctx, &l).data[0].is_finite());
    let sp = SHAPE.spatial();
    for bad in [-0.5f32, f32::NAN, f32::INFINITY] {
        let mut t = good.clone();
        t.data[sp + 100] = bad; // sample 0's weight of voxel 100
        let (l, _) = loss::softmax_cross_entropy(ctx, &z, &up(ctx, &t), &[1.0, 2.0, 0.5]).unwrap();
        assert!(down(ctx, &l).data[0].is_nan(), "{bad}");
        assert!(lref::softmax_cross_entropy(&down(ctx, &z), &t, &[1.0, 2.0, 0.5]).is_err(), "{bad}");
    }
    let mut ones = good.clone();
    for n in 0..SHAPE.n {
        ones.data[(2 * n + 1) * sp..(2 * n + 2) * sp].fill(1.0);
    }
    let plain = classes(SHAPE.with_c(1), 3, 7);
    let (a, ga) = loss::softmax_cross_entropy(ctx, &z, &up(ctx, &ones), &[1.0, 2.0, 0.5]).unwrap();
    let (b, gb) = loss::softmax_cross_entropy(ctx, &z, &up(ctx, &plain), &[1.0, 2.0, 0.5]).unwrap();
    assert_eq!(down(ctx, &a).data, down(ctx, &b).data);
    assert_eq!(down(ctx, &ga).data, down(ctx, &gb).data);
    let e =
        loss::softmax_cross_entropy(ctx, &z, &up(ctx, &rand(SHAPE.with_c(3), 8)), &[1.0; 3]).unwrap_err().to_string();
    assert!(e.contains("target has shape"), "{e}");
}

#[test]
fn bce_with_logits_needs_one_channel() {
    let ctx = ctx();
    let z = up(ctx, &rand(SHAPE, 12));
    let e = loss::bce_with_logits(ctx, &z, &up(ctx, &rand(SHAPE, 13)), 1.0).unwrap_err().to_string();
    assert!(e.contains("one channel"), "{e}");
}

#[test]
fn soft_dice_gradient_is_zero_outside_its_channel() {
    // The op table compares the whole gradient with a relative tolerance;
    // here the other channels must be exactly zero.
    let ctx = ctx();
    for (s, ch) in [(SHAPE, 1usize), (Shape5::new(3, 2, 17, 19, 23), 0)] {
        let p = CpuTensor::random(s, 20, 0.0, 1.0);
        let t = binary(s.with_c(1), 21);
        let (_, g) = loss::soft_dice(ctx, &up(ctx, &p), &up(ctx, &t), ch, 1.0).unwrap();
        let g = down(ctx, &g);
        for n in 0..s.n {
            for c in (0..s.c).filter(|&c| c != ch) {
                assert!(g.channel(n, c).iter().all(|&v| v == 0.0), "{s}: gradient not zero in channel {c}");
            }
            assert!(g.channel(n, ch).iter().any(|&v| v != 0.0));
        }
    }
    let e = loss::soft_dice(ctx, &up(ctx, &rand(SHAPE, 23)), &up(ctx, &binary(SHAPE.with_c(1), 24)), 3, 1.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("channel 3"), "{e}");
}

#[test]
fn cross_entropy_sample_larger_than_a_binding_is_a_clear_error() {
    // Cross-entropy windows hold whole samples (the op table checks it split
    // by sample under 4 KiB bindings); one sample larger than that is refused.
    let ctx = capped_ctx(4096);
    let big = Shape5::new(2, 2, 17, 19, 23);
    let z = up(&ctx, &rand(big, 43));
    let t = up(&ctx, &classes(big.with_c(1), 2, 44));
    let e = loss::softmax_cross_entropy(&ctx, &z, &t, &[1.0, 1.0]).unwrap_err().to_string();
    assert!(e.contains("storage binding"), "{e}");
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
    assert!(PARAM_SHAPES[2].f32_bytes() > ctx.binding_limit());
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
