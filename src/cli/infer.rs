//! `qcanet-gpu infer`: segment and label nuclei in TIFF stacks end to end.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use qcanet_gpu::infer::job::{run_job, JobOptions};
use qcanet_gpu::infer::pipeline::{segment, SegmentOptions, DEFAULT_STRIDE, DEFAULT_TILE, DEFAULT_VOXEL_UM};
use qcanet_gpu::infer::predictors::{load_checked, stage, weights_path};
use qcanet_gpu::infer::Shard;
use qcanet_gpu::model::Arch;
use qcanet_gpu::postprocess::Watershed;
use qcanet_gpu::progress::Progress;

#[derive(clap::Args)]
#[command(after_help = "\
Outputs, beside each input unless --out-dir: STACK_labels.tif (16-bit labels, input's shape and voxel size),
STACK_criteria.csv (one row per nucleus); a 4-D (T,Z,Y,X) stack gives STACK_tNNN_labels.tif and
STACK_tNNN_criteria.csv per time point and STACK_criteria.csv with a time column once all are done.
STACK is the input's name without .tif/.tiff (and without .ome before it: x.ome.tif gives x_labels.tif).
Existing complete outputs are skipped (resume) unless --overwrite.

Cluster job arrays: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT (0-based) processes every N-th input
(several inputs) or time point (one 4-D input).")]
pub struct Args {
    /// TIFF stacks (3-D, or 4-D time series) or folders of them.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Folder for the outputs (default: beside each input).
    #[arg(short = 'o', long)]
    out_dir: Option<PathBuf>,
    /// NSN weights (default: weights/nsn.safetensors; see QCANET_WEIGHTS). A file `calibrate` wrote from several
    /// networks predicts the mean of their probabilities.
    #[arg(long)]
    nsn: Option<PathBuf>,
    /// NDN weights (default: weights/ndn.safetensors).
    #[arg(long)]
    ndn: Option<PathBuf>,
    /// Voxel size X,Y,Z in µm when the file does not carry one. Every stack is resampled to each network's grid
    /// (the pixel size it was trained at, 0.8 µm for the bundled networks, in x, y and z) and the labels are
    /// returned on the stack's own voxels.
    #[arg(long, value_parser = parse_voxel, default_value = "0.8,0.8,1.75")]
    voxel_size: [f64; 3],
    /// Tile side in voxels of the network's grid: one value or Z,Y,X; rounded up to a multiple of each network's
    /// side multiple
    /// [default: 160; a volume that fits is predicted in one pass].
    #[arg(long, value_parser = parse_triple)]
    tile: Option<[usize; 3]>,
    /// Distance between tile origins (at most the tile side): one value or Z,Y,X [default: 128, or four fifths
    /// of a --tile given].
    #[arg(long, value_parser = parse_triple)]
    stride: Option<[usize; 3]>,
    /// Reflected context added around the volume before tiling, in voxels (costs extra tiles).
    #[arg(long, default_value_t = 0)]
    margin: usize,
    /// Foreground probability threshold for both networks (default: each network's own, chosen on
    /// validation volumes by `qcanet-gpu calibrate` and stored in its weights, else 0.5).
    #[arg(long, value_parser = parse_fraction)]
    threshold: Option<f32>,
    /// Dynamic of the NDN's markers: only summits of its probability at least this far above the saddle
    /// to a higher summit seed a nucleus, so touching centres stay apart (default: the NDN's own, chosen by
    /// `qcanet-gpu calibrate`, else 0: every component above the threshold, as the original QCANet).
    #[arg(long, value_parser = parse_fraction)]
    marker_dynamic: Option<f32>,
    /// A lower NSN threshold each nucleus grows to after the watershed: nuclei are split on the NSN's mask
    /// above its threshold, then outlined where its probability is above this one (default: the NSN's own,
    /// chosen by `qcanet-gpu calibrate`, else none; at or above the NSN's threshold: no growth).
    #[arg(long, value_name = "T", value_parser = parse_extent)]
    extent_threshold: Option<f32>,
    /// Also write the NSN and NDN foreground probabilities (f32 TIFF, STACK_nsn_prob.tif, STACK_ndn_prob.tif).
    #[arg(long)]
    save_probabilities: bool,
    /// The nuclear channel of multi-channel ImageJ hyperstacks and OME-TIFFs, numbered from 1 as in Fiji
    /// (default: inputs must have one channel).
    #[arg(long, value_name = "C")]
    channel: Option<usize>,
    /// Process only shard I of N (0 <= I < N): every N-th input or time point starting at I.
    #[arg(long, value_parser = |s: &str| Shard::parse(s).map_err(|e| e.to_string()), default_value = "0/1")]
    shard: Shard,
    /// Recompute and replace outputs that already exist.
    #[arg(long)]
    overwrite: bool,
    /// Give segmented components without a detection marker their own label instead of dropping them (always on
    /// with an NSN whose weights say so: `calibrate --label-unmarked on`).
    #[arg(long)]
    label_unmarked: bool,
    /// Approximate (jump-flooding) distance transform instead of the exact one (with --watershed gpu).
    #[arg(long)]
    fast_edt: bool,
    /// Instance stage: flood (priority flood on the CPU, exact: what `calibrate` and `train` choose settings with) or gpu (EDT and a relaxation watershed on the GPU: faster on real GPUs; breaks ties on flood plateaus differently).
    #[arg(long, default_value = "flood")]
    watershed: Watershed,
    /// Drop objects smaller than this many µm³ (0 keeps every object). Default: the NDN's own (the floor
    /// `calibrate` or training chose its threshold and dynamic with), else 18: half the smallest nucleus annotated
    /// in BBBC050's training split; no object that small can match a nucleus at IoU 0.5.
    #[arg(long, value_name = "UM3", value_parser = super::parse_min_volume)]
    min_volume: Option<f64>,
    /// Test-time augmentation: predict each tile in this many mirror images and average them
    /// (1: off; 2: x; 4: x and y; 8: x, y and z mirrors). N times the prediction time.
    #[arg(long, default_value_t = 1)]
    tta: usize,
}

fn parse_voxel(s: &str) -> Result<[f64; 3], String> {
    qcanet_gpu::io::parse_voxel_size(s).map_err(|e| e.to_string())
}

/// A probability threshold or marker dynamic: 0 up to (not including) 1.
fn parse_fraction(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(h) if (0.0..1.0).contains(&h) => Ok(h),
        _ => Err(format!("'{s}': expected a number from 0 up to (not including) 1")),
    }
}

fn parse_extent(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(t) if t > 0.0 && t < 1.0 => Ok(t),
        _ => Err(format!("'{s}': expected a threshold strictly between 0 and 1")),
    }
}

/// The largest tile or stride side: far above what a GPU holds (a 1024³
/// tile of the bundled NSN needs hundreds of GiB), so no rounding overflows.
const MAX_TILE: usize = 1024;

fn parse_triple(s: &str) -> Result<[usize; 3], String> {
    let bad = || format!("'{s}': expected N or Z,Y,X (integers from 1 to {MAX_TILE})");
    let v: Vec<usize> = s.split(',').map(|p| p.trim().parse::<usize>().map_err(|_| bad())).collect::<Result<_, _>>()?;
    if v.iter().any(|&n| n == 0 || n > MAX_TILE) {
        return Err(bad());
    }
    match v.as_slice() {
        [a] => Ok([*a; 3]),
        [z, y, x] => Ok([*z, *y, *x]),
        _ => Err(bad()),
    }
}

pub fn run(g: &super::Global, a: Args) -> anyhow::Result<()> {
    let t0 = Instant::now();
    // Check the inputs before opening the GPU and loading weights.
    let inputs = qcanet_gpu::infer::job::expand_inputs(&a.inputs)?;
    qcanet_gpu::infer::job::check_distinct_outputs(&inputs, a.out_dir.as_deref())?;
    qcanet_gpu::infer::tta::flips(a.tta).context("--tta")?;
    let tile = a.tile.unwrap_or([DEFAULT_TILE; 3]);
    // A tile given alone keeps the default overlap (a fifth of the tile).
    let stride = a.stride.unwrap_or(tile.map(|t| (t * DEFAULT_STRIDE / DEFAULT_TILE).max(1)));
    if stride.iter().zip(&tile).any(|(s, t)| s > t) {
        bail!("--stride {stride:?} is longer than the tile {tile:?} (z, y, x): tiles would leave gaps");
    }
    let nsn_path = weights_path(a.nsn.as_deref(), "nsn.safetensors").context("NSN weights")?;
    let ndn_path = weights_path(a.ndn.as_deref(), "ndn.safetensors").context("NDN weights")?;
    let ctx = g.context()?;
    let nsn = load_checked(&ctx, &nsn_path, Arch::Nsn).context("--nsn")?;
    let ndn = load_checked(&ctx, &ndn_path, Arch::Ndn).context("--ndn")?;
    let mut sn = stage(&ctx, &nsn, "NSN");
    let mut sd = stage(&ctx, &ndn, "NDN");
    let mut opts = SegmentOptions {
        tile,
        stride,
        margin: a.margin,
        threshold: a.threshold,
        marker_dynamic: a.marker_dynamic,
        extent_threshold: a.extent_threshold,
        voxel_um: a.voxel_size,
        keep_probabilities: a.save_probabilities,
        tta: a.tta,
        ..Default::default()
    };
    opts.instance.label_unmarked_components = a.label_unmarked || nsn.meta.label_unmarked_or_default();
    opts.instance.exact_edt = !a.fast_edt;
    opts.instance.watershed = a.watershed;
    opts.instance.min_volume_um3 = a.min_volume.unwrap_or(ndn.meta.min_volume_or_default());
    if a.fast_edt && a.watershed == Watershed::Flood {
        log::warn!("--fast-edt applies to --watershed gpu only; the flood uses the exact distance transform");
    }
    if a.voxel_size != DEFAULT_VOXEL_UM {
        log::info!("voxel size {:?} µm for files that do not carry one", a.voxel_size);
    }
    let job = JobOptions {
        out_dir: a.out_dir.clone(),
        shard: a.shard,
        overwrite: a.overwrite,
        save_probabilities: a.save_probabilities,
        channel: a.channel,
    };
    let pb = Progress::counter("tiles");
    let mut seg = |v: &qcanet_gpu::io::Volume, pb: &Progress| segment(&ctx, &mut sn, &mut sd, v, &opts, pb);
    let report = run_job(&inputs, &job, &mut seg, &pb)?;
    pb.finish();
    log::info!(
        "done in {:.1} s: {} written, {} skipped (complete), {} failed",
        t0.elapsed().as_secs_f64(),
        report.written,
        report.skipped,
        report.failed.len()
    );
    report.into_result()?;
    Ok(())
}
