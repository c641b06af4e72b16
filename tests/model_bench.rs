//! Whole-network timings (ignored: run by hand with
//! `cargo test --release --test model_bench -- --ignored --nocapture`;
//! QCANET_BENCH_SIDE and QCANET_BENCH_BASE change the cube side and width).

mod common;

use qcanet_gpu::model::{bench_network, Arch, NetConfig};

fn env(k: &str, d: usize) -> usize {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

#[test]
#[ignore]
fn bench_reduced_networks() {
    let ctx = common::ctx();
    ctx.set_poison_new_tensors(false);
    let side = env("QCANET_BENCH_SIDE", 48);
    let base = env("QCANET_BENCH_BASE", 8);
    for (arch, kernel) in [(Arch::Nsn, 3), (Arch::Ndn, 3)] {
        let cfg = NetConfig { depth: 2, base, kernel, ..NetConfig::preset(arch) };
        let b = bench_network(ctx, &cfg, side, 1, 2).unwrap();
        eprintln!(
            "{arch} depth 2 base {base} k {kernel} at {side}³: forward {:.3} s ({:.2} GFLOP/s), fused {:.3} s ({:.2} GFLOP/s), train step {:.3} s ({:.2} GFLOP/s), {:.2} GFLOP/forward",
            b.forward_s,
            b.forward_gflops,
            b.fused_forward_s,
            b.fused_forward_gflops,
            b.train_step_s,
            b.train_step_gflops,
            b.forward_flops / 1e9
        );
    }
}
