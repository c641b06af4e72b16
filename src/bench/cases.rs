//! The op benchmark cases: layer shapes of the NSN (3×3×3, 16–64 channels)
//! and the NDN (5×5×5, 12–192 channels).

use super::{Case, Unit};
use crate::ops::{activation, reduce};
use crate::tensor::{CpuTensor, Shape5};

fn cube(n: usize, c: usize, s: usize) -> Shape5 {
    Shape5::new(n, c, s, s, s)
}

fn rnd(shape: Shape5, seed: u64) -> CpuTensor {
    CpuTensor::random(shape, seed, -1.0, 1.0)
}

/// Every op case; `full` adds the widest NDN layers.
pub fn op_cases(full: bool) -> Vec<Case> {
    let _ = full;
    let mut v = Vec::new();
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
