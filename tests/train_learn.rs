//! Learning test: a small network trained on the GPU for a bounded number of
//! steps on synthetic bright blobs (noisy, blurred) segments unseen volumes
//! with foreground IoU > 0.9, with and without the separation weight map;
//! and validation's loss is the training loss (with the same map).

mod common;

use common::ctx;
use qcanet_gpu::model::{Arch, Backend, Gpu, LossSpec, Net, NetConfig};
use qcanet_gpu::ops::optim::{AdamConfig, Optimizer, OptimizerConfig};
use qcanet_gpu::tensor::{CpuTensor, Shape5};
use qcanet_gpu::train::{fit, predict_volume, weighted_target, Augment, FitSettings, Sample, Separation, Vol};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

/// Blurs along each axis with taps (0.25, 0.5, 0.25), edges clamped.
fn blur(img: &mut [f32], side: usize) {
    for stride in [side * side, side, 1] {
        let src = img.to_vec();
        for (i, v) in img.iter_mut().enumerate() {
            let p = (i / stride) % side;
            let lo = if p > 0 { src[i - stride] } else { src[i] };
            let hi = if p + 1 < side { src[i + stride] } else { src[i] };
            *v = 0.25 * lo + 0.5 * src[i] + 0.25 * hi;
        }
    }
}

/// A volume of `side`³: a dim background of blurred noise, 3–5 bright balls
/// (radius 3.5–5.5, brightness 0.6–1) blurred slightly, Gaussian noise on
/// top; target = the balls.
fn blobs(side: usize, seed: u64) -> Sample {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n = side * side * side;
    let texture = Normal::new(0.0f32, 0.1).unwrap();
    let mut img: Vec<f32> = (0..n).map(|_| texture.sample(&mut rng)).collect();
    blur(&mut img, side);
    blur(&mut img, side);
    for v in &mut img {
        *v += 0.15;
    }
    let mut tgt = vec![0f32; n];
    let count = rng.random_range(3..=5);
    for _ in 0..count {
        let r: f32 = rng.random_range(3.5..5.5);
        let c: [f32; 3] = std::array::from_fn(|_| rng.random_range(r..side as f32 - r));
        let bright: f32 = rng.random_range(0.6..1.0);
        for z in 0..side {
            for y in 0..side {
                for x in 0..side {
                    let d2 = (z as f32 - c[0]).powi(2) + (y as f32 - c[1]).powi(2) + (x as f32 - c[2]).powi(2);
                    if d2 <= r * r {
                        let i = (z * side + y) * side + x;
                        img[i] = bright;
                        tgt[i] = 1.0;
                    }
                }
            }
        }
    }
    blur(&mut img, side);
    let noise = Normal::new(0.0f32, 0.05).unwrap();
    for v in &mut img {
        *v += noise.sample(&mut rng);
    }
    Sample {
        name: format!("blobs{seed}"),
        image: Vol::new([side; 3], img).unwrap(),
        target: Vol::new([side; 3], tgt).unwrap(),
        weight: None,
        z_step: 1.0,
    }
}

#[test]
fn small_nsn_learns_blobs() {
    learns_blobs(None);
}

#[test]
fn small_nsn_learns_blobs_with_separation_weights() {
    // The two-channel target (class, voxel weight) through `fit` on the
    // GPU: the blobs touch in places, so the map is not all ones.
    let sep = Separation { w0: 10.0, sigma: 3.0 };
    let most = (0..4)
        .flat_map(|s| qcanet_gpu::train::separation_weights(&blobs(24, s).target.data, [24; 3], &sep))
        .fold(0f32, f32::max);
    eprintln!("largest separation weight of the training blobs: {most}");
    assert!(most > 2.0, "the training blobs' separation weights peak at {most}");
    learns_blobs(Some(sep));
}

#[test]
fn validation_loss_is_the_training_loss_with_its_separation_map() {
    // One tile covers the volume, so the validation loss is the loss of one
    // forward pass on the whole target: with the separation map, the loss of
    // the two-channel target training builds ([`weighted_target`]).
    let ctx = ctx();
    let cfg = NetConfig { depth: 1, base: 4, kernel: 3, ..NetConfig::preset(Arch::Nsn) };
    // A fresh network's logits are near 0, every voxel's loss near ln 2, and
    // any weighting of equal losses leaves their mean unchanged: random
    // weights of a wide spread make the losses differ from voxel to voxel.
    let init = Net::<Gpu>::init(ctx, cfg.clone(), 5).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let params: Vec<CpuTensor> = (init.params_to_host(ctx).unwrap().into_iter())
        .map(|mut t| {
            t.data.iter_mut().for_each(|w| *w += rng.random_range(-1.0f32..1.0));
            t
        })
        .collect();
    let net = Net::<Gpu>::from_host(ctx, cfg, &params, &init.buffers_to_host(ctx).unwrap()).unwrap();
    let spec = LossSpec::Ce { class_weights: vec![1.0, 3.0] };
    let sep = Separation { w0: 10.0, sigma: 3.0 };
    // The first volume whose map weighs some gap (balls that overlap are
    // one object, and one object leaves every weight at 1).
    let v = (7..)
        .map(|seed| blobs(24, seed))
        .find(|v| qcanet_gpu::train::separation_weights(&v.target.data, [24; 3], &sep).iter().any(|&w| w > 2.0))
        .unwrap();
    let shape = Shape5::new(1, 1, 24, 24, 24);
    let target = CpuTensor::from_vec(shape, v.target.data.clone());
    let x = Gpu::upload(ctx, &CpuTensor::from_vec(shape, v.image.data.clone())).unwrap();
    let logits = net.logits(ctx, &x).unwrap();
    let direct = |t: &CpuTensor| {
        let (l, _) = net.loss(ctx, &spec, &logits, &Gpu::upload(ctx, t).unwrap()).unwrap();
        Gpu::scalar(ctx, &l).unwrap()
    };
    let (want_plain, want_sep) = (direct(&target), direct(&weighted_target(&target, Some(&sep), None)));
    // Object weights (as the small-nucleus map gives them: 1 off the
    // objects, more on some), varied voxel by voxel.
    let ow: Vec<f32> =
        v.target.data.iter().enumerate().map(|(i, &t)| if t > 0.5 { 1.0 + (i % 5) as f32 } else { 1.0 }).collect();
    let owt = CpuTensor::from_vec(shape, ow.clone());
    let want_both = direct(&weighted_target(&target, Some(&sep), Some(&owt)));
    let ow = Vol::new(v.image.dims, ow).unwrap();
    let (_, both) =
        predict_volume(&net, ctx, &v.image, 24, 0, Some((&v.target, &spec, Some(&sep), Some(&ow)))).unwrap();
    let both = both.unwrap();
    let want_only = direct(&weighted_target(&target, None, Some(&owt)));
    let (_, only) = predict_volume(&net, ctx, &v.image, 24, 0, Some((&v.target, &spec, None, Some(&ow)))).unwrap();
    let only = only.unwrap();
    let (_, plain) = predict_volume(&net, ctx, &v.image, 24, 0, Some((&v.target, &spec, None, None))).unwrap();
    let (_, with_sep) = predict_volume(&net, ctx, &v.image, 24, 0, Some((&v.target, &spec, Some(&sep), None))).unwrap();
    let (plain, with_sep) = (plain.unwrap(), with_sep.unwrap());
    eprintln!("loss without the map {plain:.6} (direct {want_plain:.6}), with it {with_sep:.6} (direct {want_sep:.6})");
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs().max(1.0);
    assert!(close(plain, want_plain), "validation loss {plain} against {want_plain}");
    assert!(close(with_sep, want_sep), "validation loss with the map {with_sep} against {want_sep}");
    assert!(close(both, want_both), "validation loss with the map and object weights {both} against {want_both}");
    assert!(!close(both, with_sep), "the object weights left the loss at {both}");
    assert!(close(only, want_only), "validation loss with object weights alone {only} against {want_only}");
    assert!(!close(only, plain), "the object weights alone left the loss at {only}");
    // The map must change the loss of this volume, or the second check
    // would hold even with a validation that ignored the map.
    assert!((with_sep - plain).abs() > 1e-3 * plain.abs(), "the map changed nothing: {with_sep} vs {plain}");
}

fn learns_blobs(separation: Option<Separation>) {
    let ctx = ctx();
    let train: Vec<Sample> = (0..4).map(|s| blobs(24, s)).collect();
    let val: Vec<Sample> = (100..102).map(|s| blobs(24, s)).collect();
    let cfg = NetConfig { depth: 1, base: 4, kernel: 3, ..NetConfig::preset(Arch::Nsn) };
    let mut net = Net::<Gpu>::init(ctx, cfg, 1).unwrap();
    let mut opt = Optimizer::new(
        ctx,
        OptimizerConfig::Adam(AdamConfig { lr: 1e-2, ..Default::default() }),
        &net.params.iter().collect::<Vec<_>>(),
    )
    .unwrap();
    let s = FitSettings {
        patch: 16,
        batch: 2,
        epochs: 4,
        time_limit: None,
        time_budget: None,
        elapsed_before: std::time::Duration::ZERO,
        steps_per_epoch: 25,
        loss: LossSpec::Ce { class_weights: vec![1.0, 1.0] },
        augment: Augment { flips: true, ..Augment::none() },
        object_patches: 0.0,
        separation,
        seed: 3,
        val_tile: 24,
        val_overlap: 0,
        bn_recalibration: 4,
        detection: false,
        lr: 1e-2,
        lr_final: 1e-3,
        progress: false,
        instances: None,
    };
    // lr falls from 1e-2 to 1e-3 along a cosine over the four epochs.
    let records = fit(&mut net, ctx, &mut opt, &train, &val, &s, 1, None, |_, _, _, _| Ok(())).unwrap();
    match opt.config() {
        OptimizerConfig::Adam(a) => assert!((a.lr - 1e-3).abs() < 1e-9, "last step's lr {} is not lr_final", a.lr),
        c => panic!("optimizer changed kind: {c:?}"),
    }
    for r in &records {
        eprintln!(
            "epoch {}: train loss {:.4} val loss {:.4} val IoU {:.4}",
            r.epoch, r.train_loss, r.val_loss, r.val_iou
        );
    }
    let last = records.last().unwrap();
    assert!(last.train_loss < records[0].train_loss, "training loss did not fall");
    assert!(last.val_iou > 0.9, "validation IoU {:.4} after {} steps", last.val_iou, last.step);
}
