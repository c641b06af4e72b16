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
        time("bn train", &mut || drop(Gpu::bn_train(ctx, &y, &g, &b, &rm, &rv, 2e-5, 0.1, true).unwrap()));
        let (_, saved, _, _) = Gpu::bn_train(ctx, &y, &g, &b, &rm, &rv, 2e-5, 0.1, true).unwrap();
        time("bn backward", &mut || drop(Gpu::bn_backward(ctx, &y, &g, &saved, Some(&y), &y).unwrap()));
        time("relu", &mut || drop(Gpu::relu(ctx, &y).unwrap()));
        time("pool", &mut || drop(Gpu::pool(ctx, &y).unwrap()));
        time("concat", &mut || drop(Gpu::concat(ctx, &y, &x).unwrap()));
    }
}

type T = qcanet_gpu::gpu::GpuTensor;

/// Where the inference forward pass of the bundled NSN and NDN spends its
/// time, op by op, at the 16-cell example's isotropic input (112×120×124 for
/// the NSN, ×128 for the NDN): each op timed alone (sync before and after).
/// With `FOLDED=1`, the path `infer` takes: batch norm folded into the convs
/// (`Net::fold_bn`), one fused conv + ReLU per CBR (`conv+`), no concatenation.
/// `[FOLDED=1] cargo test --release --test model_profile profile_infer -- --ignored --nocapture`
#[test]
#[ignore]
fn profile_infer() {
    use qcanet_gpu::model::{config::Cbr, unet::BN_EPS, Block, Layout, Network};
    let ctx = common::unpoisoned_ctx();
    let ctx = &ctx;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("weights");
    let folded = std::env::var("FOLDED").is_ok_and(|v| v == "1");
    for (file, w) in [("nsn.safetensors", 124usize), ("ndn.safetensors", 128)] {
        let net = Network::load(ctx, &root.join(file)).unwrap();
        let f = net.net.fold_bn(ctx).unwrap();
        let fp = folded.then(|| f.params());
        let p = &net.net.params;
        let bufs = &net.net.buffers;
        let l = Layout::new(net.config());
        let x = common::up(ctx, &common::rand(Shape5::new(1, 1, 112, 120, w), 7));
        let mut totals: std::collections::BTreeMap<&str, f64> = Default::default();
        let mut timed = |what: &'static str, detail: String, f: &mut dyn FnMut() -> T| {
            ctx.sync().unwrap();
            let t0 = Instant::now();
            let y = f();
            ctx.sync().unwrap();
            let s = t0.elapsed().as_secs_f64();
            *totals.entry(what).or_default() += s;
            eprintln!("{file} {what:8} {detail:40} {s:7.3} s");
            y
        };
        let t_all = Instant::now();
        type Timed<'a> = dyn FnMut(&'static str, String, &mut dyn FnMut() -> T) -> T + 'a;
        let cbr = |c: &Cbr, xs: &[&T], timed: &mut Timed| {
            let s = xs[0].shape;
            let detail =
                format!("{:?}->{} {:?}", xs.iter().map(|x| x.shape.c).collect::<Vec<_>>(), c.cout, [s.d, s.h, s.w]);
            if let Some(fp) = fp {
                if std::env::var("AB").is_ok_and(|v| v == "1") {
                    // The op-by-op CBR first, same contention, for the ratio.
                    let t0 = Instant::now();
                    let cat = (xs.len() == 2).then(|| Gpu::concat(ctx, xs[0], xs[1]).unwrap());
                    let x = cat.as_ref().unwrap_or(xs[0]);
                    let z = Gpu::conv(ctx, x, &p[c.w], &p[c.b]).unwrap();
                    let a = Gpu::bn_infer(ctx, &z, &p[c.gamma], &p[c.beta], &bufs[c.rm], &bufs[c.rv], BN_EPS, false)
                        .unwrap();
                    drop((z, cat));
                    let _ = Gpu::relu(ctx, &a).unwrap();
                    ctx.sync().unwrap();
                    let s = t0.elapsed().as_secs_f64();
                    eprintln!("{file} {:8} {detail:40} {s:7.3} s", "cbr");
                }
                return timed("conv+", detail, &mut || Gpu::conv_fused(ctx, xs, &fp[c.w], &fp[c.b], true).unwrap());
            }
            let cat = (xs.len() == 2).then(|| {
                timed("concat", format!("{}+{}", xs[0].shape.c, xs[1].shape.c), &mut || {
                    Gpu::concat(ctx, xs[0], xs[1]).unwrap()
                })
            });
            let x = cat.as_ref().unwrap_or(xs[0]);
            let z = timed("conv", detail, &mut || Gpu::conv(ctx, x, &p[c.w], &p[c.b]).unwrap());
            drop(cat);
            let a = timed("bn", format!("c{}", c.cout), &mut || {
                Gpu::bn_infer(ctx, &z, &p[c.gamma], &p[c.beta], &bufs[c.rm], &bufs[c.rv], BN_EPS, false).unwrap()
            });
            drop(z);
            timed("relu", format!("c{}", c.cout), &mut || Gpu::relu(ctx, &a).unwrap())
        };
        // The blocks of `Layout::blocks`, each op timed alone.
        let mut skips = Vec::new();
        let mut h = x;
        for blk in &l.blocks {
            h = match blk {
                Block::Cbr { cbr: c, concat: None } => cbr(c, &[&h], &mut timed),
                Block::Cbr { cbr: c, concat: Some(_) } => {
                    let skip: T = skips.pop().unwrap();
                    cbr(c, &[&h, &skip], &mut timed)
                }
                Block::Down => {
                    let pooled = timed("pool", format!("c{}", h.shape.c), &mut || Gpu::pool(ctx, &h).unwrap().0);
                    skips.push(h);
                    pooled
                }
                Block::Up { c, w, b } => {
                    timed("up", format!("c{c}"), &mut || Gpu::up(ctx, &h, &p[*w], &p[*b]).unwrap())
                }
                Block::Head { w, b } => {
                    timed("head", String::new(), &mut || Gpu::conv(ctx, &h, &p[*w], &p[*b]).unwrap())
                }
            };
        }
        let z = h;
        let _ = timed("softmax", String::new(), &mut || Gpu::softmax(ctx, &z).unwrap());
        eprintln!("{file}: total {:.2} s; by op: {totals:?}", t_all.elapsed().as_secs_f64());
    }
}
