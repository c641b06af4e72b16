//! Timings of the instance stage on the GPU against the CPU references
//! (ignored by default: `cargo test --release --test postprocess_bench -- --ignored --nocapture`;
//! sizes from `QCANET_BENCH_SIZES`, default "128").

mod common;
use common::*;
use qcanet_gpu::postprocess::bench;

#[test]
#[ignore]
fn bench_postprocess_stages() {
    let ctx = ctx();
    let sizes = std::env::var("QCANET_BENCH_SIZES").unwrap_or_else(|_| "128".into());
    for s in sizes.split(',').filter_map(|s| s.trim().parse::<usize>().ok()) {
        let r = bench::bench_stages(ctx, s, 5, 3).unwrap();
        println!("{}", serde_json::to_string_pretty(&r).unwrap());
        for t in &r.timings {
            println!("{:>34} {:?}: GPU {:>9.1} ms  CPU {:>9.1} ms", t.stage, t.dims, t.gpu_ms, t.cpu_ms);
        }
    }
}
