//! `cargo bench`: the same op table as `qcanet-gpu bench` (default sizes).
//! Extra arguments after `--` are ignored except `--full`.

use qcanet_gpu::bench::{self, BenchOptions};
use qcanet_gpu::gpu::{ContextOptions, GpuContext};

fn main() {
    let full = std::env::args().any(|a| a == "--full");
    let ctx = match GpuContext::new(&ContextOptions::from_env()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("no GPU adapter, skipping the benchmark: {e}");
            return;
        }
    };
    let mut opts = BenchOptions { full, ..Default::default() };
    if full {
        opts.sizes.push(128);
    }
    println!("adapter: {}", ctx.describe());
    println!("{}", bench::table_header());
    match bench::run_ops(&ctx, &opts, |r| println!("{}", bench::format_row(r))) {
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
        Ok(rows) if rows.iter().any(|r| !r.ok) => {
            eprintln!("op cases over their tolerance (marked FAIL)");
            std::process::exit(1);
        }
        Ok(_) => {}
    }
}
