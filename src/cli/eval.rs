//! `qcanet-gpu eval`: scores predicted labels against ground truth. Either
//! image may be a label image or a binary mask (then labelled by connected
//! components).

use std::path::PathBuf;

use anyhow::bail;
use qcanet_gpu::metrics::{self, Evaluation};
use qcanet_gpu::postprocess::Connectivity;

#[derive(clap::Args)]
pub struct Args {
    /// Predicted labels (or a binary mask).
    #[arg(long)]
    pred: PathBuf,
    /// Ground-truth labels (or a binary mask).
    #[arg(long)]
    gt: PathBuf,
    /// Neighbourhood for labelling binary masks: 6 or 26.
    #[arg(long, default_value_t = 26)]
    connectivity: u8,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn print_table(e: &Evaluation) {
    println!("predicted objects   {}", e.pred_objects);
    println!("ground-truth objects {}", e.gt_objects);
    println!("foreground IoU      {:.4}", e.foreground_iou);
    println!("foreground Dice     {:.4}", e.foreground_dice);
    println!("SEG                 {:.4}", e.seg);
    println!("MUCov               {:.4}", e.mucov);
    let m = &e.matching;
    println!(
        "IoU >= 0.5          TP {} FP {} FN {}  precision {:.4} recall {:.4} F1 {:.4}",
        m.tp, m.fp, m.fn_, m.precision, m.recall, m.f1
    );
    println!("AP (IoU 0.5:0.95)   {:.4}", e.average_precision);
}

pub fn run(_g: &super::Global, a: Args) -> anyhow::Result<()> {
    let conn = match a.connectivity {
        6 => Connectivity::Six,
        26 => Connectivity::TwentySix,
        c => bail!("--connectivity must be 6 or 26, not {c}"),
    };
    let e = metrics::evaluate_files(&a.pred, &a.gt, conn)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print_table(&e);
    }
    Ok(())
}
