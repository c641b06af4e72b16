//! `qcanet-gpu bench`: each op forward and backward on the GPU against the
//! CPU reference (the op table's benchmark cases, each held to its
//! tolerance: the command fails if one is over), the instance stage, and
//! whole networks; a table or JSON.

use qcanet_gpu::bench::{self, BenchOptions};

#[derive(clap::Args)]
pub struct Args {
    /// Also run 128³ op shapes, the widest NDN layers, and 512³ for the instance stage.
    #[arg(long)]
    full: bool,
    /// Cube sides for the op table (default 32,64; with --full 32,64,128).
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// Cube sides for the instance stage (default 128,256; with --full 128,256,512).
    #[arg(long, value_delimiter = ',')]
    post_sizes: Option<Vec<usize>>,
    /// Which parts to run: ops, post, net (comma-separated; default all).
    #[arg(long, value_delimiter = ',', default_value = "ops,post,net")]
    only: Vec<String>,
    /// GPU repetitions per case (median reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Only op cases whose name contains one of these comma-separated texts.
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
    const PARTS: [&str; 3] = ["ops", "post", "net"];
    if let Some(o) = a.only.iter().find(|o| !PARTS.contains(&o.trim())) {
        anyhow::bail!("--only '{o}': expected ops, post or net (comma-separated)");
    }
    let ctx = g.context()?;
    let want = |p: &str| a.only.iter().any(|o| o.trim() == p);
    let sizes = a.sizes.unwrap_or(if a.full { vec![32, 64, 128] } else { vec![32, 64] });
    let post_sizes = a.post_sizes.unwrap_or(if a.full { vec![128, 256, 512] } else { vec![128, 256] });
    let opts =
        BenchOptions { sizes, repeats: a.repeats, cpu_budget: a.cpu_budget * 1e9, filter: a.filter, full: a.full };
    let say = |s: &str| {
        if !a.json {
            println!("{s}");
        }
    };
    say(&format!("adapter: {}", ctx.describe()));
    let kernels = qcanet_gpu::ops::variants::chosen(&ctx)?;
    let list: Vec<String> = kernels.iter().map(|(op, v)| format!("{op} {v}")).collect();
    say(&format!("kernel variants: {} (rows marked [NAME] time one variant each)", list.join(", ")));
    let mut json = serde_json::json!({ "adapter": ctx.describe(), "kernel_variants": kernels });
    if want("net") || want("ops") {
        // At least 3 runs (a quarter of a second): one reading on a busy
        // host can be half the others.
        let runs = a.repeats.max(3);
        let c = bench::fma_ceiling(&ctx, runs)?;
        say(&format!(
            "f32 FMA ceiling: {:.1} GFLOP/s (median of {runs} runs of {} workgroups, {:.0} ms each; each network is \
             also held to the ceiling measured beside it)",
            c.gflops, c.workgroups, c.run_ms
        ));
        json["fma_ceiling"] = serde_json::to_value(c)?;
    }
    let mut failed = Vec::new();
    if want("ops") {
        say(&bench::table_header());
        let rows = bench::run_ops(&ctx, &opts, |r| say(&bench::format_row(r)))?;
        if rows.is_empty() {
            anyhow::bail!("--filter {:?}: no op case matches", opts.filter.as_deref().unwrap_or(""));
        }
        failed = rows.iter().filter(|r| !r.ok).map(|r| format!("{} {}", r.case, r.shape)).collect();
        json["ops"] = serde_json::to_value(rows)?;
    }
    if want("post") {
        say(&format!(
            "\n{:<34} {:<24} {:>10} {:>12} {:>21}\n{}",
            "instance stage",
            "field",
            "GPU ms",
            "CPU ref ms",
            "speed-up",
            "-".repeat(105)
        ));
        let reports = bench::run_post(&ctx, &post_sizes, a.repeats.min(5), say)?;
        json["post"] = serde_json::to_value(reports)?;
    }
    if want("net") {
        let rows = bench::run_networks(&ctx, &opts, say)?;
        json["networks"] = serde_json::to_value(rows)?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    if !failed.is_empty() {
        anyhow::bail!("op cases over their tolerance: {}", failed.join(", "));
    }
    Ok(())
}
