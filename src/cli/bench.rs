//! `qcanet-gpu bench`: each op forward and backward on the GPU against the
//! CPU reference, as a table or JSON.

use qcanet_gpu::bench::{self, BenchOptions};

#[derive(clap::Args)]
pub struct Args {
    /// Also run 128³ and the widest NDN layers.
    #[arg(long)]
    full: bool,
    /// Cube sides to run at (default 32,64; with --full 32,64,128).
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// GPU repetitions per case (median reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Only cases whose name contains this text.
    #[arg(long)]
    filter: Option<String>,
    /// CPU reference budget per run in GFLOP (or GB); beyond it the reference runs at a smaller check shape.
    #[arg(long, default_value_t = 4.0)]
    cpu_budget: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(g: &super::Global, a: Args) -> anyhow::Result<()> {
    let ctx = g.context()?;
    let sizes = a.sizes.unwrap_or(if a.full { vec![32, 64, 128] } else { vec![32, 64] });
    let opts =
        BenchOptions { sizes, repeats: a.repeats, cpu_budget: a.cpu_budget * 1e9, filter: a.filter, full: a.full };
    if !a.json {
        println!("adapter: {}", ctx.describe());
        println!("{}", bench::table_header());
    }
    let rows = bench::run_ops(&ctx, &opts, |r| {
        if !a.json {
            println!("{}", bench::format_row(r));
        }
    })?;
    if a.json {
        let out = serde_json::json!({ "adapter": ctx.describe(), "rows": rows });
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}
