//! The op benchmark cases: layer shapes of the NSN (3×3×3, 16–64 channels)
//! and the NDN (5×5×5, 12–192 channels).

use super::{Case, Unit};
use crate::ops::batchnorm::{self, BnConfig};
use crate::ops::optim::{AdamConfig, Optimizer, OptimizerConfig};
use crate::ops::{activation, concat, conv3d, conv_transpose3d, loss, pool, reduce, softmax};
use crate::tensor::{CpuTensor, Shape5};

fn cube(n: usize, c: usize, s: usize) -> Shape5 {
    Shape5::new(n, c, s, s, s)
}

fn rnd(shape: Shape5, seed: u64) -> CpuTensor {
    CpuTensor::random(shape, seed, -1.0, 1.0)
}

/// Forward and the three backward passes of a k×k×k convolution c_in → c_out.
fn conv_cases(v: &mut Vec<Case>, net: &str, k: usize, ci: usize, co: usize) {
    let xs = move |s: usize| cube(1, ci, s);
    let ws = Shape5::new(co, ci, k, k, k);
    let shape = move |s: usize| format!("{ci}->{co} k{k} {s}^3");
    let work = move |s: usize| conv3d::flops(cube(1, ci, s), co, k);
    let b = Shape5::new(1, co, 1, 1, 1);
    v.push(Case {
        name: format!("conv3d fwd {net}"),
        unit: Unit::Flop,
        shape: Box::new(shape),
        work: Box::new(work),
        inputs: Box::new(move |s| vec![rnd(xs(s), 1), rnd(ws, 2), rnd(b, 3)]),
        gpu: Box::new(|ctx, t| Ok(vec![conv3d::forward(ctx, &t[0], &t[1], &t[2])?])),
        cpu: Box::new(|t| vec![conv3d::reference::forward(&t[0], &t[1], &t[2])]),
        min_side: 4,
    });
    v.push(Case {
        name: format!("conv3d bwd-input {net}"),
        unit: Unit::Flop,
        shape: Box::new(shape),
        work: Box::new(work),
        inputs: Box::new(move |s| vec![rnd(cube(1, co, s), 4), rnd(ws, 2)]),
        gpu: Box::new(|ctx, t| Ok(vec![conv3d::backward_input(ctx, &t[0], &t[1])?])),
        cpu: Box::new(|t| vec![conv3d::reference::backward_input(&t[0], &t[1])]),
        min_side: 4,
    });
    v.push(Case {
        name: format!("conv3d bwd-weight {net}"),
        unit: Unit::Flop,
        shape: Box::new(shape),
        work: Box::new(work),
        inputs: Box::new(move |s| vec![rnd(xs(s), 1), rnd(cube(1, co, s), 4)]),
        gpu: Box::new(move |ctx, t| Ok(vec![conv3d::backward_weight(ctx, &t[0], &t[1], k)?])),
        cpu: Box::new(move |t| vec![conv3d::reference::backward_weight(&t[0], &t[1], k)]),
        min_side: 4,
    });
}

/// The 2×2×2 stride-2 transposed convolution c → c from side s/2 to s.
fn conv_t_cases(v: &mut Vec<Case>, c: usize) {
    let xs = move |s: usize| cube(1, c, s / 2);
    let ws = Shape5::new(c, c, 2, 2, 2);
    let b = Shape5::new(1, c, 1, 1, 1);
    let shape = move |s: usize| format!("{c}->{c} {}^3->{s}^3", s / 2);
    let work = move |s: usize| conv_transpose3d::flops(xs(s), c);
    v.push(Case {
        name: format!("convT fwd c{c}"),
        unit: Unit::Flop,
        shape: Box::new(shape),
        work: Box::new(work),
        inputs: Box::new(move |s| vec![rnd(xs(s), 1), rnd(ws, 2), rnd(b, 3)]),
        gpu: Box::new(|ctx, t| Ok(vec![conv_transpose3d::forward(ctx, &t[0], &t[1], &t[2])?])),
        cpu: Box::new(|t| vec![conv_transpose3d::reference::forward(&t[0], &t[1], &t[2])]),
        min_side: 4,
    });
    v.push(Case {
        name: format!("convT bwd-input c{c}"),
        unit: Unit::Flop,
        shape: Box::new(shape),
        work: Box::new(work),
        inputs: Box::new(move |s| vec![rnd(cube(1, c, s), 4), rnd(ws, 2)]),
        gpu: Box::new(|ctx, t| Ok(vec![conv_transpose3d::backward_input(ctx, &t[0], &t[1])?])),
        cpu: Box::new(|t| vec![conv_transpose3d::reference::backward_input(&t[0], &t[1])]),
        min_side: 4,
    });
    v.push(Case {
        name: format!("convT bwd-weight c{c}"),
        unit: Unit::Flop,
        shape: Box::new(shape),
        work: Box::new(work),
        inputs: Box::new(move |s| vec![rnd(xs(s), 1), rnd(cube(1, c, s), 4)]),
        gpu: Box::new(|ctx, t| Ok(vec![conv_transpose3d::backward_weight(ctx, &t[0], &t[1])?])),
        cpu: Box::new(|t| vec![conv_transpose3d::reference::backward_weight(&t[0], &t[1])]),
        min_side: 4,
    });
}

/// Every op case; `full` adds the widest NDN layers.
pub fn op_cases(full: bool) -> Vec<Case> {
    let mut v = Vec::new();
    // NSN (3×3×3, 16–64 channels) and NDN (5×5×5, 12–192 channels) layers.
    for (ci, co) in [(16, 16), (32, 32), (64, 64)] {
        conv_cases(&mut v, &format!("NSN {ci}->{co}"), 3, ci, co);
    }
    let ndn: &[(usize, usize)] =
        if full { &[(12, 12), (24, 24), (48, 48), (96, 96), (192, 192)] } else { &[(12, 12), (24, 24), (48, 48)] };
    for &(ci, co) in ndn {
        conv_cases(&mut v, &format!("NDN {ci}->{co}"), 5, ci, co);
    }
    for c in [64, 128] {
        conv_t_cases(&mut v, c);
    }
    v.push(Case {
        name: "maxpool fwd c32".into(),
        unit: Unit::Byte,
        shape: Box::new(|s| cube(1, 32, s).to_string()),
        work: Box::new(|s| 4.0 * 1.125 * cube(1, 32, s).numel() as f64),
        inputs: Box::new(|s| vec![rnd(cube(1, 32, s), 5)]),
        gpu: Box::new(|ctx, t| Ok(vec![pool::forward(ctx, &t[0])?.0])),
        cpu: Box::new(|t| vec![pool::reference::forward(&t[0]).0]),
        min_side: 4,
    });
    v.push(Case {
        name: "concat fwd 64+32".into(),
        unit: Unit::Byte,
        shape: Box::new(|s| format!("64+32 {s}^3")),
        work: Box::new(|s| 8.0 * cube(1, 96, s).numel() as f64),
        inputs: Box::new(|s| vec![rnd(cube(1, 64, s), 6), rnd(cube(1, 32, s), 7)]),
        gpu: Box::new(|ctx, t| Ok(vec![concat::forward(ctx, &t[0], &t[1])?])),
        cpu: Box::new(|t| vec![concat::reference::forward(&t[0], &t[1])]),
        min_side: 4,
    });
    // Batch norm over 32 channels (training forward; forward + backward).
    let c = 32usize;
    let p = Shape5::new(1, c, 1, 1, 1);
    let bn_inputs = move |s: usize| {
        vec![
            rnd(cube(1, c, s), 10),
            CpuTensor::random(p, 11, 0.5, 1.5),
            rnd(p, 12),
            rnd(p, 13),
            CpuTensor::random(p, 14, 0.5, 1.5),
            rnd(cube(1, c, s), 15),
        ]
    };
    v.push(Case {
        name: "batchnorm fwd-train c32".into(),
        unit: Unit::Byte,
        shape: Box::new(move |s| cube(1, c, s).to_string()),
        work: Box::new(move |s| 12.0 * cube(1, c, s).numel() as f64),
        inputs: Box::new(bn_inputs),
        gpu: Box::new(|ctx, t| {
            Ok(vec![batchnorm::forward_train(ctx, &t[0], &t[1], &t[2], &t[3], &t[4], &BnConfig::default())?.0])
        }),
        cpu: Box::new(|t| {
            vec![batchnorm::reference::forward_train(&t[0], &t[1], &t[2], &t[3], &t[4], &BnConfig::default()).0]
        }),
        min_side: 4,
    });
    v.push(Case {
        name: "batchnorm fwd+bwd c32".into(),
        unit: Unit::Byte,
        shape: Box::new(move |s| cube(1, c, s).to_string()),
        work: Box::new(move |s| 28.0 * cube(1, c, s).numel() as f64),
        inputs: Box::new(bn_inputs),
        gpu: Box::new(|ctx, t| {
            let (_, saved) = batchnorm::forward_train(ctx, &t[0], &t[1], &t[2], &t[3], &t[4], &BnConfig::default())?;
            let (dx, dg, db) = batchnorm::backward(ctx, &t[0], &t[1], &saved, &t[5])?;
            Ok(vec![dx, dg, db])
        }),
        cpu: Box::new(|t| {
            let (_, m, is, _, _) =
                batchnorm::reference::forward_train(&t[0], &t[1], &t[2], &t[3], &t[4], &BnConfig::default());
            let (dx, dg, db) = batchnorm::reference::backward(&t[0], &t[1], &m, &is, &t[5]);
            vec![dx, dg, db]
        }),
        min_side: 4,
    });
    v.push(Case {
        name: "relu bwd c32".into(),
        unit: Unit::Byte,
        shape: Box::new(|s| cube(1, 32, s).to_string()),
        work: Box::new(|s| 12.0 * cube(1, 32, s).numel() as f64),
        inputs: Box::new(|s| vec![rnd(cube(1, 32, s), 16), rnd(cube(1, 32, s), 17)]),
        gpu: Box::new(|ctx, t| Ok(vec![activation::relu_backward(ctx, &t[0], &t[1])?])),
        cpu: Box::new(|t| vec![activation::reference::relu_backward(&t[0], &t[1])]),
        min_side: 4,
    });
    v.push(Case {
        name: "sigmoid fwd c1".into(),
        unit: Unit::Byte,
        shape: Box::new(|s| cube(1, 1, s).to_string()),
        work: Box::new(|s| 8.0 * cube(1, 1, s).numel() as f64),
        inputs: Box::new(|s| vec![rnd(cube(1, 1, s), 18)]),
        gpu: Box::new(|ctx, t| Ok(vec![activation::sigmoid_forward(ctx, &t[0])?])),
        cpu: Box::new(|t| vec![activation::reference::sigmoid_forward(&t[0])]),
        min_side: 4,
    });
    v.push(Case {
        name: "maxpool fwd+bwd c32".into(),
        unit: Unit::Byte,
        shape: Box::new(|s| cube(1, 32, s).to_string()),
        work: Box::new(|s| 4.0 * 2.5 * cube(1, 32, s).numel() as f64),
        inputs: Box::new(|s| vec![rnd(cube(1, 32, s), 5), rnd(cube(1, 32, s / 2), 19)]),
        gpu: Box::new(|ctx, t| {
            let (_, idx) = pool::forward(ctx, &t[0])?;
            Ok(vec![pool::backward(ctx, &idx, &t[1])?])
        }),
        cpu: Box::new(|t| {
            let (_, idx) = pool::reference::forward(&t[0]);
            vec![pool::reference::backward(&idx, t[0].shape, &t[1])]
        }),
        min_side: 4,
    });
    v.push(Case {
        name: "concat bwd 64+32".into(),
        unit: Unit::Byte,
        shape: Box::new(|s| format!("64+32 {s}^3")),
        work: Box::new(|s| 8.0 * cube(1, 96, s).numel() as f64),
        inputs: Box::new(|s| vec![rnd(cube(1, 96, s), 20)]),
        gpu: Box::new(|ctx, t| {
            let (a, b) = concat::backward(ctx, &t[0], 64)?;
            Ok(vec![a, b])
        }),
        cpu: Box::new(|t| {
            let (a, b) = concat::reference::backward(&t[0], 64);
            vec![a, b]
        }),
        min_side: 4,
    });
    // Losses on a 2-class output (value and gradient).
    let target = |s: usize| {
        let mut t = CpuTensor::random(cube(1, 1, s), 21, 0.0, 1.0);
        t.data.iter_mut().for_each(|v| *v = if *v > 0.9 { 1.0 } else { 0.0 });
        t
    };
    v.push(Case {
        name: "softmax cross-entropy c2".into(),
        unit: Unit::Byte,
        shape: Box::new(|s| cube(1, 2, s).to_string()),
        work: Box::new(|s| 20.0 * cube(1, 1, s).numel() as f64),
        inputs: Box::new(move |s| vec![rnd(cube(1, 2, s), 22), target(s)]),
        gpu: Box::new(|ctx, t| {
            let (l, g) = loss::softmax_cross_entropy(ctx, &t[0], &t[1], &[1.0, 4.0])?;
            Ok(vec![l, g])
        }),
        cpu: Box::new(|t| {
            let (l, g) = loss::reference::softmax_cross_entropy(&t[0], &t[1], &[1.0, 4.0]).expect("valid targets");
            vec![CpuTensor::from_vec(Shape5::new(1, 1, 1, 1, 1), vec![l as f32]), g]
        }),
        min_side: 4,
    });
    v.push(Case {
        name: "soft dice c2".into(),
        unit: Unit::Byte,
        shape: Box::new(|s| cube(1, 2, s).to_string()),
        work: Box::new(|s| 20.0 * cube(1, 1, s).numel() as f64),
        inputs: Box::new(move |s| vec![CpuTensor::random(cube(1, 2, s), 23, 0.0, 1.0), target(s)]),
        gpu: Box::new(|ctx, t| {
            let (l, g) = loss::soft_dice(ctx, &t[0], &t[1], 1, 1.0)?;
            Ok(vec![l, g])
        }),
        cpu: Box::new(|t| {
            let (l, g) = loss::reference::soft_dice(&t[0], &t[1], 1, 1.0);
            vec![CpuTensor::from_vec(Shape5::new(1, 1, 1, 1, 1), vec![l as f32]), g]
        }),
        min_side: 4,
    });
    // One Adam step over a parameter tensor of s³ values (weight decay on).
    let adam = OptimizerConfig::Adam(AdamConfig { weight_decay: 1e-4, ..AdamConfig::default() });
    let adam_cpu = adam.clone();
    v.push(Case {
        name: "adam step".into(),
        unit: Unit::Byte,
        shape: Box::new(|s| format!("{} params", s * s * s)),
        work: Box::new(|s| 28.0 * (s * s * s) as f64),
        inputs: Box::new(|s| vec![rnd(cube(1, 1, s), 24), rnd(cube(1, 1, s), 25)]),
        gpu: Box::new(move |ctx, t| {
            let p = ctx.upload(&ctx.download(&t[0])?)?;
            let mut opt = Optimizer::new(ctx, adam.clone(), &[&p])?;
            opt.step(ctx, &[&p], &[&t[1]])?;
            Ok(vec![p])
        }),
        cpu: Box::new(move |t| {
            let mut p = vec![t[0].clone()];
            let mut opt = crate::ops::optim::reference::CpuOptimizer::new(adam_cpu.clone(), &[&t[0]]);
            opt.step(&mut p, &t[1..2]);
            p
        }),
        min_side: 4,
    });
    for (pass, bwd) in [("fwd", false), ("bwd", true)] {
        v.push(Case {
            name: format!("softmax {pass} c2"),
            unit: Unit::Byte,
            shape: Box::new(|s| cube(1, 2, s).to_string()),
            work: Box::new(move |s| (if bwd { 12.0 } else { 8.0 }) * cube(1, 2, s).numel() as f64),
            inputs: Box::new(|s| vec![rnd(cube(1, 2, s), 8), rnd(cube(1, 2, s), 9)]),
            gpu: Box::new(move |ctx, t| {
                Ok(vec![if bwd { softmax::backward(ctx, &t[0], &t[1])? } else { softmax::forward(ctx, &t[0])? }])
            }),
            cpu: Box::new(move |t| {
                vec![if bwd { softmax::reference::backward(&t[0], &t[1]) } else { softmax::reference::forward(&t[0]) }]
            }),
            min_side: 4,
        });
    }
    for c in [16usize, 64] {
        v.push(Case {
            name: format!("relu fwd c{c}"),
            unit: Unit::Byte,
            shape: Box::new(move |s| cube(1, c, s).to_string()),
            work: Box::new(move |s| 8.0 * cube(1, c, s).numel() as f64),
            inputs: Box::new(move |s| vec![rnd(cube(1, c, s), 1)]),
            gpu: Box::new(|ctx, x| Ok(vec![activation::relu_forward(ctx, &x[0])?])),
            cpu: Box::new(|x| vec![activation::reference::relu_forward(&x[0])]),
            min_side: 4,
        });
        v.push(Case {
            name: format!("channel_sum c{c}"),
            unit: Unit::Byte,
            shape: Box::new(move |s| cube(1, c, s).to_string()),
            work: Box::new(move |s| 4.0 * cube(1, c, s).numel() as f64),
            inputs: Box::new(move |s| vec![rnd(cube(1, c, s), 2)]),
            gpu: Box::new(|ctx, x| Ok(vec![reduce::channel_sum(ctx, &x[0])?])),
            cpu: Box::new(|x| vec![reduce::reference::channel_sum(&x[0])]),
            min_side: 4,
        });
    }
    v
}
