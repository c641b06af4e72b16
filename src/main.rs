//! `qcanet-gpu` command line: parses arguments and hands each command to its
//! module under `src/cli/`. All work is done by the library.

mod cli;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "qcanet-gpu",
    version,
    about = "QCANet 3-D nuclear instance segmentation on any Vulkan/Metal/DX12 GPU"
)]
struct Cli {
    /// GPU adapter by index or name substring (see `qcanet-gpu devices`); also QCANET_ADAPTER.
    #[arg(long, global = true)]
    adapter: Option<String>,
    /// Force a kernel variant for an op, OP=VARIANT (e.g. conv3d=f32-4x8;
    /// repeatable or comma-separated; `qcanet-gpu devices` lists them); also
    /// QCANET_GPU_KERNEL. Default: the first variant the adapter supports.
    #[arg(long = "gpu-kernel", global = true, value_name = "OP=VARIANT")]
    gpu_kernel: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the GPU adapters and the limits that matter.
    Devices(cli::devices::Args),
    /// Benchmark every op (GPU against the CPU reference) and whole networks.
    Bench(cli::bench::Args),
    /// Label nuclei in a segmentation mask using detection markers (marker watershed).
    Postprocess(cli::postprocess::Args),
    /// Score predicted labels against ground truth (IoU, SEG, MUCov, F1, AP).
    Eval(cli::eval::Args),
    /// Generate synthetic embryo stacks with ground truth.
    Synth(cli::synth::Args),
    /// Train NSN, NDN or a 3-D U-Net.
    Train(Box<cli::train::Args>),
    /// Segment and label nuclei in fluorescence stacks end to end.
    Infer(cli::infer::Args),
    /// Draw the method-comparison figure for one stack.
    Figure(cli::figure::Args),
    /// Choose the NSN's and NDN's thresholds on validation volumes and store them in the weights.
    Calibrate(cli::calibrate::Args),
}

fn main() {
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,wgpu_hal=off,wgpu_core=warn,naga=warn"),
    )
    .format_timestamp(None)
    .init();
    let cli = Cli::parse();
    let g = cli::Global { adapter: cli.adapter, gpu_kernel: cli.gpu_kernel };
    let result = match cli.command {
        Command::Devices(a) => cli::devices::run(&g, a),
        Command::Bench(a) => cli::bench::run(&g, a),
        Command::Postprocess(a) => cli::postprocess::run(&g, a),
        Command::Eval(a) => cli::eval::run(&g, a),
        Command::Synth(a) => cli::synth::run(&g, a),
        Command::Train(a) => cli::train::run(&g, *a),
        Command::Infer(a) => cli::infer::run(&g, a),
        Command::Figure(a) => cli::figure::run(&g, a),
        Command::Calibrate(a) => cli::calibrate::run(&g, a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
