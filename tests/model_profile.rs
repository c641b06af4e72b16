//! Per-op timings inside one NSN layer stack (ignored; by hand).

mod common;

use std::time::Instant;

use qcanet_gpu::model::{Backend, Gpu};
use qcanet_gpu::tensor::Shape5;

#[test]
#[ignore]
fn profile_ops_48() {
    let ctx = common::ctx();
    ctx.set_poison_new_tensors(false);
    let s = std::env::var("S").ok().and_then(|v| v.parse().ok()).unwrap_or(48usize);
    let time = |what: &str, f: &mut dyn FnMut()| {
        f();
        ctx.sync().unwrap();
        let t0 = Instant::now();
        f();
        ctx.sync().unwrap();
        eprintln!("{what}: {:.3} s", t0.elapsed().as_secs_f64());
    };
    for (ci, co, side) in [(1, 8, s), (8, 16, s), (48, 16, s), (16, 16, s), (16, 32, s / 2), (64, 32, s / 4)] {
        let x = common::up(ctx, &common::rand(Shape5::new(1, ci, side, side, side), 1));
        let w = common::up(ctx, &common::rand(Shape5::new(co, ci, 3, 3, 3), 2));
        let b = common::up(ctx, &common::rand(Shape5::new(1, co, 1, 1, 1), 3));
        let y = Gpu::conv(ctx, &x, &w, &b).unwrap();
        let gf = 2.0 * (ci * co * 27 * side * side * side) as f64 / 1e9;
        eprintln!("-- conv {ci}->{co} at {side}^3: {gf:.2} GFLOP");
        time("conv forward", &mut || drop(Gpu::conv(ctx, &x, &w, &b).unwrap()));
        time("conv backward_input", &mut || drop(qcanet_gpu::ops::conv3d::backward_input(ctx, &y, &w).unwrap()));
        time("conv backward_weight", &mut || drop(qcanet_gpu::ops::conv3d::backward_weight(ctx, &x, &y, 3).unwrap()));
        time("conv backward_bias", &mut || drop(qcanet_gpu::ops::conv3d::backward_bias(ctx, &y).unwrap()));
        let g = common::up(ctx, &common::rand(Shape5::new(1, co, 1, 1, 1), 4));
        let rm = ctx.zeros(Shape5::new(1, co, 1, 1, 1), "rm").unwrap();
        let rv = ctx.filled(Shape5::new(1, co, 1, 1, 1), 1.0, "rv").unwrap();
        time("bn train", &mut || drop(Gpu::bn_train(ctx, &y, &g, &b, &rm, &rv, 2e-5, 0.1).unwrap()));
        let (_, saved, _, _) = Gpu::bn_train(ctx, &y, &g, &b, &rm, &rv, 2e-5, 0.1).unwrap();
        time("bn backward", &mut || drop(Gpu::bn_backward(ctx, &y, &g, &saved, &y).unwrap()));
        time("relu", &mut || drop(Gpu::relu(ctx, &y).unwrap()));
        time("pool", &mut || drop(Gpu::pool(ctx, &y).unwrap()));
        time("concat", &mut || drop(Gpu::concat(ctx, &y, &x).unwrap()));
    }
}
