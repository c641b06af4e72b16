//! `qcanet-gpu eval`: scores predicted labels against ground truth, one pair
//! of files or two folders paired by name. Either image may be a label image
//! or a binary mask (then labelled by connected components).

use std::path::PathBuf;

use anyhow::bail;
use qcanet_gpu::metrics::{self, dataset, Evaluation};
use qcanet_gpu::postprocess::Connectivity;

#[derive(clap::Args)]
pub struct Args {
    /// Predicted labels (or a binary mask), or a folder of them
    /// (NAME_labels.tif as `infer` writes, or NAME.tif).
    #[arg(long)]
    pred: PathBuf,
    /// Ground-truth labels (or a binary mask), or a folder of NAME.tif.
    #[arg(long)]
    gt: PathBuf,
    /// Neighbourhood for labelling binary masks: 6 or 26.
    #[arg(long, default_value_t = 26)]
    connectivity: u8,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Folders: only the volumes named in this file, one a line (e.g. split_list/validation.txt).
    #[arg(long)]
    list: Option<PathBuf>,
    /// Folders: the per-volume CSV [default: PRED/eval.csv].
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Folders: F1 and SEG against true nuclei, PNG [default: the CSV's name with .png].
    #[arg(long)]
    plot: Option<PathBuf>,
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

fn run_folders(a: &Args, conn: Connectivity) -> anyhow::Result<()> {
    let pairs = dataset::pair_folders(&a.pred, &a.gt, a.list.as_deref())?;
    let (csv, plot) = dataset::report_paths(&a.pred, a.csv.as_deref(), a.plot.as_deref());
    dataset::check_report_paths(&csv, &plot, &pairs)?;
    let e = dataset::evaluate_pairs(&pairs, conn)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print!("{}", e.table());
    }
    e.write_csv(&csv)?;
    e.plot(&plot)?;
    log::info!("wrote {} and {}", csv.display(), plot.display());
    Ok(())
}

pub fn run(_g: &super::Global, a: Args) -> anyhow::Result<()> {
    let conn = match a.connectivity {
        6 => Connectivity::Six,
        26 => Connectivity::TwentySix,
        c => bail!("--connectivity must be 6 or 26, not {c}"),
    };
    match (a.pred.is_dir(), a.gt.is_dir()) {
        (true, true) => return run_folders(&a, conn),
        (false, false) => {}
        (p, _) => {
            let (dir, file) = if p { (&a.pred, &a.gt) } else { (&a.gt, &a.pred) };
            bail!("{} is a folder but {} is not: give two files or two folders", dir.display(), file.display());
        }
    }
    if a.list.is_some() || a.csv.is_some() || a.plot.is_some() {
        bail!("--list, --csv and --plot apply to folders; --pred and --gt are files");
    }
    let e = metrics::evaluate_files(&a.pred, &a.gt, conn)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print_table(&e);
    }
    Ok(())
}
