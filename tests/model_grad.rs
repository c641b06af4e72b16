//! The network's backward (on the CPU references) checked by central finite
//! differences of the loss, for one entry of every parameter tensor.

use qcanet_gpu::model::{Arch, Cpu, LossSpec, Net, NetConfig};
use qcanet_gpu::tensor::{CpuTensor, Shape5};

fn loss(net: &Net<Cpu>, x: &CpuTensor, t: &CpuTensor, spec: &LossSpec) -> f64 {
    let (z, _) = net.forward_train(&(), x).unwrap();
    net.loss(&(), spec, &z, t).unwrap().0.data[0] as f64
}

fn check(cfg: NetConfig, shape: Shape5, spec: LossSpec) {
    let mut net = Net::<Cpu>::init(&(), cfg, 3).unwrap();
    let x = CpuTensor::random(shape, 1, -1.0, 1.0);
    let r = CpuTensor::random(shape, 2, 0.0, 1.0);
    let t = CpuTensor::from_vec(shape, r.data.iter().map(|&v| (v > 0.6) as u8 as f32).collect());
    let (z, tape) = net.forward_train(&(), &x).unwrap();
    let (_, dz) = net.loss(&(), &spec, &z, &t).unwrap();
    let grads = net.backward(&(), tape, &dz).unwrap();
    let names: Vec<String> = net.layout.params.iter().map(|p| p.name.clone()).collect();
    let eps = 1e-2f32;
    let mut checked = 0;
    for (i, name) in names.iter().enumerate() {
        if name.ends_with(".conv.bias") {
            continue; // zero gradient (BN follows): nothing to compare
        }
        // The entry with the largest gradient of this tensor.
        let (j, &g) = grads[i].data.iter().enumerate().max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())).unwrap();
        let orig = net.params[i].data[j];
        net.params[i].data[j] = orig + eps;
        let lp = loss(&net, &x, &t, &spec);
        net.params[i].data[j] = orig - eps;
        let lm = loss(&net, &x, &t, &spec);
        net.params[i].data[j] = orig;
        let fd = (lp - lm) / (2.0 * eps as f64);
        let g = g as f64;
        assert!(
            (fd - g).abs() <= 2e-2 * g.abs() + 1e-5,
            "{name}[{j}]: analytic {g:.6e}, finite difference {fd:.6e}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} tensors checked");
}

#[test]
fn softmax_ce_gradients_match_finite_differences() {
    let cfg = NetConfig { depth: 1, base: 2, kernel: 3, ..NetConfig::preset(Arch::Nsn) };
    check(cfg, Shape5::new(2, 1, 4, 6, 4), LossSpec::Ce { class_weights: vec![1.0, 2.0] });
}

#[test]
fn sigmoid_bce_gradients_match_finite_differences() {
    let cfg = NetConfig { depth: 2, base: 2, kernel: 3, classes: 1, ..NetConfig::preset(Arch::Ndn) };
    check(cfg, Shape5::new(2, 1, 4, 8, 4), LossSpec::Bce { pos_weight: 3.0 });
}
