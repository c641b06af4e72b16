//! Timings of the instance stage on the GPU against the CPU references
//! (ignored by default: `cargo test --release --test postprocess_bench -- --ignored --nocapture`;
//! sizes from `QCANET_BENCH_SIZES`, default "128"; repetitions from
//! `QCANET_BENCH_REPS`, default 5 on the GPU and 3 on the CPU).

mod common;
use common::*;
use qcanet_gpu::postprocess::bench;

#[test]
#[ignore]
fn bench_postprocess_stages() {
    let ctx = ctx();
    let sizes = std::env::var("QCANET_BENCH_SIZES").unwrap_or_else(|_| "128".into());
    for s in sizes.split(',').filter_map(|s| s.trim().parse::<usize>().ok()) {
        let reps = std::env::var("QCANET_BENCH_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
        let r = bench::bench_stages(ctx, s, reps, reps.min(3)).unwrap();
        println!("{}", serde_json::to_string_pretty(&r).unwrap());
        for t in &r.timings {
            println!("{:>34} {:?}: GPU {:>9.1} ms  CPU {:>9.1} ms", t.stage, t.dims, t.gpu_ms, t.cpu_ms);
        }
    }
}
