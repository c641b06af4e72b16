//! The network's backward (on the CPU references) checked by central finite
//! differences of the loss, for one entry of every parameter tensor; with
//! frozen batch norm, of the loss on the inference forward's logits.

use qcanet_gpu::model::{Arch, Cpu, LossSpec, Net, NetConfig};
use qcanet_gpu::ops::loss;
use qcanet_gpu::tensor::{CpuTensor, Shape5};

/// The loss in f64 (the backend's scalar tensor is f32, too coarse for differences).
fn loss(net: &Net<Cpu>, x: &CpuTensor, t: &CpuTensor, spec: &LossSpec) -> f64 {
    // Frozen batch norm trains the inference function itself: difference that.
    let z = if net.frozen_bn { net.logits(&(), x).unwrap() } else { net.forward_train(&(), x).unwrap().0 };
    match spec {
        LossSpec::Ce { class_weights } => loss::reference::softmax_cross_entropy(&z, t, class_weights).unwrap().0,
        LossSpec::Bce { pos_weight } => loss::reference::bce_with_logits(&z, t, *pos_weight).0,
        LossSpec::Dice { .. } => unreachable!(),
    }
}

fn check(cfg: NetConfig, shape: Shape5, spec: LossSpec, frozen: bool) {
    let mut net = Net::<Cpu>::init(&(), cfg, 3).unwrap();
    if frozen {
        // Running statistics away from the initial 0 and 1.
        // Means near 0 (conv outputs are small at initialisation), variances 0.5-2.
        for (k, (b, s)) in net.buffers.iter_mut().zip(&net.layout.buffers).enumerate() {
            let (lo, hi) = if s.name.ends_with("running_var") { (0.5, 2.0) } else { (-0.2, 0.2) };
            *b = CpuTensor::random(b.shape, 40 + k as u64, lo, hi);
        }
        net.frozen_bn = true;
    }
    let x = CpuTensor::random(shape, 1, -1.0, 1.0);
    let r = CpuTensor::random(shape, 2, 0.0, 1.0);
    let t = CpuTensor::from_vec(shape, r.data.iter().map(|&v| (v > 0.6) as u8 as f32).collect());
    let (z, tape) = net.forward_train(&(), &x).unwrap();
    let (_, dz) = net.loss(&(), &spec, &z, &t).unwrap();
    let grads = net.backward(&(), tape, &dz).unwrap();
    let names: Vec<String> = net.layout.params.iter().map(|p| p.name.clone()).collect();
    // A conv bias before batch norm with batch statistics shifts the
    // channel and its batch mean alike: its gradient is 0 up to rounding,
    // too small to difference. It must be that small next to the others:
    // the f32 sum of a channel's at most 192 voxel gradients cancels to
    // within 192 * 2^-24 (1.1e-5) of their size; measured, at most 2e-8 of
    // the largest other gradient.
    let before_bn = |name: &str| name.ends_with(".conv.bias") && !frozen;
    let largest = |i: usize| grads[i].data.iter().fold(0f32, |m, g| m.max(g.abs()));
    let others = (0..names.len()).filter(|&i| !before_bn(&names[i])).map(largest).fold(0f32, f32::max);
    let (mut checked, mut biases) = (0, 0);
    for (i, name) in names.iter().enumerate() {
        if before_bn(name) {
            let g = largest(i);
            println!("{name}: largest gradient {g:.3e}, {:.3e} of the largest other", g / others);
            assert!(g <= 1e-5 * others, "{name}: gradient {g:.3e} before batch norm (largest other {others:.3e})");
            biases += 1;
            continue;
        }
        // The entry with the largest gradient of this tensor.
        let (j, &g) = grads[i].data.iter().enumerate().max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())).unwrap();
        let orig = net.params[i].data[j];
        let g = g as f64;
        // Central differences at three steps: larger steps cross ReLU kinks,
        // smaller ones see the f32 activations' rounding; a correct gradient
        // matches at one of them at least, a wrong one at none.
        let mut fds = Vec::new();
        for eps in [1e-3f32, 3e-4, 1e-4] {
            net.params[i].data[j] = orig + eps;
            let lp = loss(&net, &x, &t, &spec);
            net.params[i].data[j] = orig - eps;
            let lm = loss(&net, &x, &t, &spec);
            net.params[i].data[j] = orig;
            fds.push((lp - lm) / (2.0 * eps as f64));
        }
        assert!(
            fds.iter().any(|fd| (fd - g).abs() <= 1e-2 * g.abs() + 1e-5),
            "{name}[{j}]: analytic {g:.6e}, finite differences {fds:?}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} tensors checked");
    assert!(frozen || biases >= 2, "only {biases} conv biases before batch norm");
}

#[test]
fn softmax_ce_gradients_match_finite_differences() {
    let cfg = NetConfig { depth: 1, base: 2, kernel: 3, ..NetConfig::preset(Arch::Nsn) };
    check(cfg, Shape5::new(2, 1, 4, 6, 4), LossSpec::Ce { class_weights: vec![1.0, 2.0] }, false);
}

#[test]
fn frozen_bn_gradients_match_finite_differences_of_inference() {
    let cfg = NetConfig { depth: 1, base: 2, kernel: 3, ..NetConfig::preset(Arch::Nsn) };
    check(cfg, Shape5::new(2, 1, 4, 6, 4), LossSpec::Ce { class_weights: vec![1.0, 2.0] }, true);
}

#[test]
fn sigmoid_bce_gradients_match_finite_differences() {
    // Depth 2 on 8×8×4: the bottom level still has 2·2·2·1 = 8 values per BN channel.
    let cfg = NetConfig { depth: 2, base: 2, kernel: 3, classes: 1, ..NetConfig::preset(Arch::Ndn) };
    check(cfg, Shape5::new(2, 1, 8, 8, 4), LossSpec::Bce { pos_weight: 3.0 }, false);
}
