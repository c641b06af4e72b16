//! `qcanet-gpu eval`: scores predicted labels against ground truth. Either
//! image may be a label image or a binary mask (then labelled by connected
//! components).

use std::path::{Path, PathBuf};

use anyhow::bail;
use qcanet_gpu::io;
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

/// Labels of a TIFF: kept as they are, or, for a binary mask (one non-zero
/// value), its connected components.
pub fn read_labels(path: &Path, conn: Connectivity) -> anyhow::Result<(Vec<u32>, [usize; 3], bool)> {
    let v = io::read_volume(path)?;
    if let Some(bad) = v.data.iter().find(|&&x| x < 0.0 || x.fract() != 0.0 || x > u32::MAX as f32) {
        bail!("{}: value {bad} is not a label (labels are non-negative integers)", path.display());
    }
    let mut distinct = v.data.iter().filter(|&&x| x != 0.0).map(|&x| x as u32);
    let first = distinct.next();
    let binary = first.is_some_and(|f| distinct.all(|x| x == f));
    if binary {
        let mask: Vec<u8> = v.data.iter().map(|&x| (x != 0.0) as u8).collect();
        Ok((metrics::labels_from_mask(&mask, v.dims, conn)?, v.dims, true))
    } else {
        Ok((v.data.iter().map(|&x| x as u32).collect(), v.dims, false))
    }
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
    let (pred, pdims, pbin) = read_labels(&a.pred, conn)?;
    let (gt, gdims, gbin) = read_labels(&a.gt, conn)?;
    if pdims != gdims {
        bail!("{} is {:?} (z, y, x) but {} is {:?}", a.pred.display(), pdims, a.gt.display(), gdims);
    }
    for (p, b) in [(&a.pred, pbin), (&a.gt, gbin)] {
        if b {
            log::info!("{} is a binary mask: labelled by connected components", p.display());
        }
    }
    let e = metrics::evaluate(&pred, &gt, pdims)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print_table(&e);
    }
    Ok(())
}
