//! The network on the GPU against the same network on the CPU references:
//! training-mode forward, every parameter gradient, and a full SGD training
//! step (loss, updated parameters, BN running statistics), for a small NSN
//! (3³ kernels, softmax head, cross-entropy) and a small NDN (5³ kernels,
//! sigmoid head, BCE), on odd widths and non-cubic, non-power-of-two volumes.

mod common;

use common::{assert_close, ctx, down, rand, up};
use qcanet_gpu::model::{Arch, Cpu, Gpu, Layout, LossSpec, Net, NetConfig};
use qcanet_gpu::ops::optim::{reference::CpuOptimizer, Optimizer, OptimizerConfig, SgdConfig};
use qcanet_gpu::tensor::{rel_err, CpuTensor, Shape5};

/// Forward logits and loss: f32 kernels against f64-accumulating references
/// through ~14 layers.
const TOL_FORWARD: f64 = 1e-4;
/// Gradients (backward through batch norm in training mode amplifies the
/// forward's rounding a little).
const TOL_GRAD: f64 = 1e-3;
/// Parameter updates of one SGD step (lr · gradient, momentum buffer).
const TOL_UPDATE: f64 = 1e-3;

fn target(shape: Shape5, seed: u64) -> CpuTensor {
    let r = CpuTensor::random(shape.with_c(1), seed, 0.0, 1.0);
    CpuTensor::from_vec(r.shape, r.data.iter().map(|&v| (v > 0.7) as u8 as f32).collect())
}

/// Biases of convs followed by batch norm have zero gradient in exact
/// arithmetic (BN subtracts the channel mean): only rounding noise is left,
/// so they are checked to be negligible rather than compared.
fn pre_bn_bias(name: &str) -> bool {
    name.ends_with(".conv.bias")
}

/// With `frozen`, batch norm is frozen (running statistics, random, as
/// constants): the conv biases before it then have gradients, and the step
/// must leave the statistics exactly as they were.
fn parity(cfg: NetConfig, shape: Shape5, spec: LossSpec, frozen: bool) {
    let ctx = ctx();
    let layout = Layout::new(&cfg);
    let p0 = layout.init_params(11);
    let b0: Vec<CpuTensor> = if frozen {
        // Means near 0 (conv outputs are small at initialisation, so most
        // voxels stay above the ReLU), variances 0.5-2.
        let lim =
            |s: &qcanet_gpu::model::TensorSpec| if s.name.ends_with("running_var") { (0.5, 2.0) } else { (-0.2, 0.2) };
        layout
            .buffers
            .iter()
            .enumerate()
            .map(|(k, s)| CpuTensor::random(s.shape, 60 + k as u64, lim(s).0, lim(s).1))
            .collect()
    } else {
        layout.init_buffers()
    };
    let mut g = Net::<Gpu>::from_host(ctx, cfg.clone(), &p0, &b0).unwrap();
    let mut c = Net::<Cpu>::from_host(&(), cfg.clone(), &p0, &b0).unwrap();
    g.frozen_bn = frozen;
    c.frozen_bn = frozen;
    let pre_bn_bias = |name: &str| pre_bn_bias(name) && !frozen;
    let x = rand(shape, 5);
    let t = target(shape, 6);
    let (gx, gt) = (up(ctx, &x), up(ctx, &t));

    // Forward (training mode) and loss.
    let (gl, gtape) = g.forward_train(ctx, &gx).unwrap();
    let (cl, ctape) = c.forward_train(&(), &x).unwrap();
    assert_close("logits", &down(ctx, &gl), &cl, TOL_FORWARD);
    if frozen {
        // A frozen training pass computes what inference computes.
        assert_close(
            "frozen training logits against inference",
            &down(ctx, &gl),
            &down(ctx, &g.logits(ctx, &gx).unwrap()),
            1e-5,
        );
    }
    let (gloss, gd) = g.loss(ctx, &spec, &gl, &gt).unwrap();
    let (closs, cd) = c.loss(&(), &spec, &cl, &t).unwrap();
    let (gloss, closs) = (down(ctx, &gloss).data[0] as f64, closs.data[0] as f64);
    assert!(((gloss - closs) / closs).abs() < TOL_FORWARD, "loss {gloss} vs {closs}");
    assert_close("dlogits", &down(ctx, &gd), &cd, TOL_FORWARD);

    // Backward: every parameter's gradient.
    let gg = g.backward(ctx, gtape, &gd).unwrap();
    let cg = c.backward(&(), ctape, &cd).unwrap();
    let mut weight_grad_norm = 0.0f64;
    for (i, spec) in layout.params.iter().enumerate() {
        let a = down(ctx, &gg[i]);
        if pre_bn_bias(&spec.name) {
            continue;
        }
        weight_grad_norm = weight_grad_norm.max(cg[i].data.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt());
        assert_close(&format!("grad {}", spec.name), &a, &cg[i], TOL_GRAD);
    }
    for (i, spec) in layout.params.iter().enumerate().filter(|(_, s)| pre_bn_bias(&s.name)) {
        let n = |t: &CpuTensor| t.data.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        let a = down(ctx, &gg[i]);
        assert!(
            n(&a) < 1e-3 * weight_grad_norm && n(&cg[i]) < 1e-3 * weight_grad_norm,
            "grad {} should vanish (BN follows): gpu {:.2e} cpu {:.2e}, largest gradient {:.2e}",
            spec.name,
            n(&a),
            n(&cg[i]),
            weight_grad_norm
        );
    }

    // One full SGD training step on both.
    let oc = OptimizerConfig::Sgd(SgdConfig { lr: 0.05, momentum: 0.9, weight_decay: 1e-3 });
    let mut gopt = Optimizer::new(ctx, oc.clone(), &g.params.iter().collect::<Vec<_>>()).unwrap();
    let mut copt = CpuOptimizer::new(oc, &c.params.iter().collect::<Vec<_>>());
    let gl = g.train_step(ctx, &gx, &gt, &spec, &mut gopt).unwrap();
    let cl = c.train_step(&(), &x, &t, &spec, &mut copt).unwrap();
    let (gl, cl) = (down(ctx, &gl).data[0] as f64, cl.data[0] as f64);
    assert!(((gl - cl) / cl).abs() < TOL_FORWARD, "step loss {gl} vs {cl}");
    for (i, spec) in layout.params.iter().enumerate() {
        let a = down(ctx, &g.params[i]);
        let b = &c.params[i];
        // The updated parameter, and the update itself (which is what the step computed).
        assert_close(&format!("param {}", spec.name), &a, b, TOL_UPDATE * 1e-2);
        if pre_bn_bias(&spec.name) {
            continue;
        }
        let du: Vec<f32> = a.data.iter().zip(&p0[i].data).map(|(x, y)| x - y).collect();
        let dc: Vec<f32> = b.data.iter().zip(&p0[i].data).map(|(x, y)| x - y).collect();
        let e = rel_err(&du, &dc);
        assert!(e < TOL_UPDATE, "update of {}: relative error {e:.2e}", spec.name);
    }
    for (i, spec) in layout.buffers.iter().enumerate() {
        let gb = down(ctx, &g.buffers[i]);
        assert_close(&format!("buffer {}", spec.name), &gb, &c.buffers[i], TOL_FORWARD);
        if frozen {
            assert_eq!(gb.data, b0[i].data, "frozen batch norm changed {}", spec.name);
            assert_eq!(c.buffers[i].data, b0[i].data, "frozen batch norm changed {} (CPU)", spec.name);
        }
    }

    // Inference mode (running statistics) after the step.
    let gp = g.predict(ctx, &gx).unwrap();
    let cp = c.predict(&(), &x).unwrap();
    assert_close("inference probabilities", &down(ctx, &gp), &cp, TOL_FORWARD);
}

#[test]
fn nsn_step_matches_cpu_reference() {
    let cfg = NetConfig { depth: 2, base: 3, kernel: 3, ..NetConfig::preset(Arch::Nsn) };
    parity(cfg, Shape5::new(2, 1, 12, 8, 20), LossSpec::Ce { class_weights: vec![1.0, 3.0] }, false);
}

#[test]
fn frozen_bn_step_matches_cpu_reference_and_keeps_statistics() {
    let cfg = NetConfig { depth: 2, base: 3, kernel: 3, ..NetConfig::preset(Arch::Nsn) };
    parity(cfg, Shape5::new(1, 1, 12, 8, 20), LossSpec::Ce { class_weights: vec![1.0, 3.0] }, true);
}

#[test]
fn ndn_step_matches_cpu_reference() {
    let cfg = NetConfig { depth: 2, base: 4, kernel: 5, classes: 1, ..NetConfig::preset(Arch::Ndn) };
    parity(cfg, Shape5::new(2, 1, 8, 12, 16), LossSpec::Bce { pos_weight: 5.0 }, false);
}

#[test]
fn dice_step_matches_cpu_reference() {
    let cfg = NetConfig { depth: 1, base: 3, kernel: 3, ..NetConfig::preset(Arch::Nsn) };
    parity(cfg, Shape5::new(2, 1, 6, 10, 14), LossSpec::Dice { smooth: 1.0 }, false);
}

#[test]
fn bad_input_sides_are_refused() {
    let ctx = ctx();
    let cfg = NetConfig { depth: 2, base: 2, kernel: 3, ..NetConfig::preset(Arch::Nsn) };
    let g = Net::<Gpu>::init(ctx, cfg, 0).unwrap();
    let x = up(ctx, &rand(Shape5::new(1, 1, 8, 8, 10), 1));
    let e = g.predict(ctx, &x).err().unwrap().to_string();
    assert!(e.contains("multiples of 4"), "{e}");
}

/// Activations larger than one storage binding (forced with a 16 KiB cap;
/// weights, at most 11.4 KiB here, must fit one binding):
/// the same training-mode forward, gradients and inference as uncapped.
#[test]
fn split_bindings_match_whole_bindings() {
    let whole = ctx();
    let capped = common::capped_ctx(16384);
    let cfg = NetConfig { depth: 1, base: 3, kernel: 3, ..NetConfig::preset(Arch::Nsn) };
    let layout = Layout::new(&cfg);
    let (p, b) = (layout.init_params(4), layout.init_buffers());
    // One channel of one sample is 8·16·14·4 = 7 KiB: every activation with
    // more than two channels spans several bindings.
    let shape = Shape5::new(2, 1, 8, 16, 14);
    let x = rand(shape, 9);
    let t = target(shape, 10);
    let spec = LossSpec::Ce { class_weights: vec![1.0, 2.0] };
    let run = |c: &qcanet_gpu::gpu::GpuContext| {
        let net = Net::<Gpu>::from_host(c, cfg.clone(), &p, &b).unwrap();
        let (gx, gt) = (up(c, &x), up(c, &t));
        let (z, tape) = net.forward_train(c, &gx).unwrap();
        let (_, dz) = net.loss(c, &spec, &z, &gt).unwrap();
        let grads = net.backward(c, tape, &dz).unwrap();
        let probs = net.predict(c, &gx).unwrap();
        (down(c, &z), grads.iter().map(|g| down(c, g)).collect::<Vec<_>>(), down(c, &probs))
    };
    let (z0, g0, p0) = run(whole);
    let (z1, g1, p1) = run(&capped);
    assert_close("logits (split bindings)", &z1, &z0, 1e-5);
    assert_close("probabilities (split bindings)", &p1, &p0, 1e-5);
    for (i, s) in layout.params.iter().enumerate().filter(|(_, s)| !pre_bn_bias(&s.name)) {
        assert_close(&format!("grad {} (split bindings)", s.name), &g1[i], &g0[i], 1e-4);
    }
}

#[test]
fn bn_recalibration_averages_batch_statistics() {
    // Batch statistics in training mode do not depend on the running
    // statistics, so re-estimating from [x1, x2] must give the mean of what
    // [x1] and [x2] give alone, whatever the starting buffers; the GPU must
    // match the CPU reference, and the parameters must not move.
    let ctx = ctx();
    let cfg = NetConfig { depth: 1, base: 3, kernel: 3, ..NetConfig::preset(Arch::Nsn) };
    let layout = Layout::new(&cfg);
    let p0 = layout.init_params(21);
    let fresh = layout.init_buffers();
    // Arbitrary starting statistics (positive variances).
    let odd: Vec<CpuTensor> =
        fresh.iter().enumerate().map(|(i, b)| CpuTensor::random(b.shape, 40 + i as u64, 0.5, 2.0)).collect();
    let shape = Shape5::new(1, 1, 6, 10, 8);
    let (x1, x2) = (rand(shape, 31), rand(shape, 32));
    let cpu = |start: &[CpuTensor], xs: &[&CpuTensor]| {
        let mut n = Net::<Cpu>::from_host(&(), cfg.clone(), &p0, start).unwrap();
        let k = n.recalibrate_bn(&(), xs.iter().map(|x| Ok((*x).clone()))).unwrap();
        assert_eq!(k, xs.len());
        assert_eq!(n.params_to_host(&()).unwrap(), p0, "parameters changed");
        n.buffers_to_host(&()).unwrap()
    };
    let a = cpu(&fresh, &[&x1]);
    let b = cpu(&fresh, &[&x2]);
    let ab = cpu(&odd, &[&x1, &x2]);
    for (i, spec) in layout.buffers.iter().enumerate() {
        assert!(a[i].data != fresh[i].data, "{}: not re-estimated", spec.name);
        let mean: Vec<f32> = a[i].data.iter().zip(&b[i].data).map(|(p, q)| (p + q) / 2.0).collect();
        let e = rel_err(&ab[i].data, &mean);
        assert!(
            e < 1e-5,
            "{}: [x1, x2] gives {:?}, mean of the two {:?} (rel err {e:.2e})",
            spec.name,
            ab[i].data,
            mean
        );
    }
    // GPU against CPU, from the odd start.
    let mut g = Net::<Gpu>::from_host(ctx, cfg.clone(), &p0, &odd).unwrap();
    g.recalibrate_bn(ctx, [&x1, &x2].into_iter().map(|x| Ok(up(ctx, x)))).unwrap();
    let gb = g.buffers_to_host(ctx).unwrap();
    for (i, spec) in layout.buffers.iter().enumerate() {
        assert_close(&spec.name, &gb[i], &ab[i], 1e-4);
    }
    // No batches: nothing changes.
    assert_eq!(cpu(&odd, &[]), odd);
}
