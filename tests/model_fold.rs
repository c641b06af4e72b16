//! Batch norm folded into the convolutions for inference
//! (`Net::fold_bn`, `Net::logits_folded`): the folded network's output
//! equals the op-by-op inference forward within rounding, on random weights,
//! random running statistics and random inputs, on the CPU references and on
//! the GPU (fused conv + ReLU kernels, never-materialised skip
//! concatenation), also with bindings capped so tensors are split; and the
//! folding itself against batch norm applied after the conv.

mod common;

use common::{assert_close, capped_ctx, ctx, down, not_run_for_lack_of, rand, up};
use qcanet_gpu::model::{unet::BN_EPS, Arch, Cpu, Gpu, Layout, Net, NetConfig};
use qcanet_gpu::ops::variants::Need;
use qcanet_gpu::ops::{batchnorm, conv3d};
use qcanet_gpu::tensor::{CpuTensor, Shape5};

/// Folded against unfolded, both f64-accumulating references: the folded
/// weights are rounded to f32 once, so only f32 rounding is left.
const TOL_CPU: f64 = 1e-5;
/// f32 GPU kernels (folded) against the f64 references (unfolded) through
/// ~14 layers.
const TOL_GPU: f64 = 1e-4;

/// Parameters as initialised, with batch norm made non-trivial: gamma in
/// [0.5, 1.5), beta in [-0.5, 0.5), running mean in [-0.3, 0.3) and running
/// variance in [0.2, 2.0) (fresh buffers are 0 and 1, which would hide a
/// wrong fold).
fn random_net(cfg: &NetConfig, seed: u64) -> (Vec<CpuTensor>, Vec<CpuTensor>) {
    let layout = Layout::new(cfg);
    let mut p = layout.init_params(seed);
    for (i, (spec, t)) in layout.params.iter().zip(p.iter_mut()).enumerate() {
        let s = seed + 100 + i as u64;
        if spec.name.ends_with("bn.weight") {
            *t = CpuTensor::random(t.shape, s, 0.5, 1.5);
        } else if spec.name.ends_with("bn.bias") {
            *t = CpuTensor::random(t.shape, s, -0.5, 0.5);
        }
    }
    let b = layout
        .buffers
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let s = seed + 500 + i as u64;
            if spec.name.ends_with("running_var") {
                CpuTensor::random(spec.shape, s, 0.2, 2.0)
            } else {
                CpuTensor::random(spec.shape, s, -0.3, 0.3)
            }
        })
        .collect();
    (p, b)
}

fn small(arch: Arch, depth: usize, base: usize, kernel: usize, classes: usize) -> NetConfig {
    NetConfig { arch, depth, base, kernel, in_channels: 1, classes }
}

#[test]
fn fold_into_conv_equals_batchnorm_after_conv() {
    let x = rand(Shape5::new(2, 3, 5, 6, 7), 1);
    let w = rand(Shape5::new(5, 3, 3, 3, 3), 2);
    let b = rand(Shape5::new(1, 5, 1, 1, 1), 3);
    let ch = Shape5::new(1, 5, 1, 1, 1);
    let (g, beta) = (CpuTensor::random(ch, 4, 0.5, 1.5), CpuTensor::random(ch, 5, -0.5, 0.5));
    let (rm, rv) = (CpuTensor::random(ch, 6, -0.3, 0.3), CpuTensor::random(ch, 7, 0.2, 2.0));
    let cfg = batchnorm::BnConfig { eps: BN_EPS, momentum: 0.1, relu: false };
    let want = batchnorm::reference::forward_infer(&conv3d::reference::forward(&x, &w, &b), &g, &beta, &rm, &rv, &cfg);
    let (wf, bf) = batchnorm::fold_into_conv(&w, &b, &g, &beta, &rm, &rv, BN_EPS).unwrap();
    assert_close("folded conv", &conv3d::reference::forward(&x, &wf, &bf), &want, TOL_CPU);
    assert!(batchnorm::fold_into_conv(&w, &b, &g, &beta, &rm, &x, BN_EPS).is_err());
}

fn check(ctx: &qcanet_gpu::gpu::GpuContext, cfg: NetConfig, shape: Shape5, seed: u64, what: &str) {
    let (p, b) = random_net(&cfg, seed);
    let x = rand(shape, seed + 1);
    let c = Net::<Cpu>::from_host(&(), cfg.clone(), &p, &b).unwrap();
    let want = c.logits(&(), &x).unwrap();
    let cf = c.fold_bn(&()).unwrap();
    assert_close(&format!("{what}: CPU folded"), &c.logits_folded(&(), &cf, &x).unwrap(), &want, TOL_CPU);
    let g = Net::<Gpu>::from_host(ctx, cfg, &p, &b).unwrap();
    let gx = up(ctx, &x);
    let gf = g.fold_bn(ctx).unwrap();
    assert_close(&format!("{what}: GPU folded"), &down(ctx, &g.logits_folded(ctx, &gf, &gx).unwrap()), &want, TOL_GPU);
    assert_close(
        &format!("{what}: GPU folded probabilities"),
        &down(ctx, &g.predict_folded(ctx, &gf, &gx).unwrap()),
        &c.predict(&(), &x).unwrap(),
        TOL_GPU,
    );
}

#[test]
fn folded_network_equals_unfolded() {
    let ctx = ctx();
    // NSN-like (3³, softmax head) and NDN-like (5³, sigmoid head), odd
    // widths, non-cubic volumes.
    check(ctx, small(Arch::Nsn, 2, 3, 3, 2), Shape5::new(1, 1, 8, 12, 16), 10, "nsn");
    check(ctx, small(Arch::Ndn, 1, 5, 5, 1), Shape5::new(2, 1, 6, 10, 8), 20, "ndn");
}

#[test]
fn folded_network_equals_unfolded_split_path() {
    // 32 KiB bindings (the transposed conv needs its weights in one): one
    // 8x12x16 channel is 6 KiB, so the full-resolution decoder conv's 18
    // input channels (upsampled 12 + skip 6) run as groups of 5 across both
    // parts, and its output of 3 channels is one group.
    let ctx = capped_ctx(32768);
    check(&ctx, small(Arch::Nsn, 2, 3, 3, 2), Shape5::new(1, 1, 8, 12, 16), 30, "nsn split");
}

/// f16 activation storage (`--gpu-kernel activations=f16`): on the GPU
/// the convolutions read and write f16 between layers (sums f32); the CPU
/// pass rounds its activations to f16 at the same places, so the two agree
/// up to the order of f32 sums and an f16 rounding of partial sums between
/// channel groups; against the f32 network the difference is what f16
/// storage costs.
#[test]
fn folded_network_with_f16_activations() {
    let ctx = ctx();
    if !ctx.has_f16() {
        // The cast tests check the error; nothing to compare here (and
        // lavapipe has shader-f16).
        not_run_for_lack_of(ctx, Need::ShaderF16, "f16 activations");
        return;
    }
    for (cfg, shape, seed) in [
        (small(Arch::Nsn, 2, 3, 3, 2), Shape5::new(1, 1, 8, 12, 16), 40),
        (small(Arch::Ndn, 1, 5, 5, 1), Shape5::new(2, 1, 6, 10, 8), 50),
    ] {
        let (p, b) = random_net(&cfg, seed);
        let x = rand(shape, seed + 1);
        let c = Net::<Cpu>::from_host(&(), cfg.clone(), &p, &b).unwrap();
        let full = c.logits(&(), &x).unwrap();
        let cf = c.fold_bn(&()).unwrap().with_half_storage(true);
        let want = c.logits_folded(&(), &cf, &x).unwrap();
        let g = Net::<Gpu>::from_host(ctx, cfg, &p, &b).unwrap();
        let gf = g.fold_bn(ctx).unwrap().with_half_storage(true);
        assert!(gf.half_storage());
        let got = down(ctx, &g.logits_folded(ctx, &gf, &up(ctx, &x)).unwrap());
        assert_close("GPU f16 activations vs CPU f16-rounded", &got, &want, 2e-3);
        // f16 storage does change the result, by about its rounding.
        let e = qcanet_gpu::tensor::rel_err(&got.data, &full.data);
        assert!(e > 1e-6 && e < 1e-2, "f16 activations vs f32: relative error {e}");
    }
}
