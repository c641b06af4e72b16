//! `qcanet-gpu calibrate`: choose the NSN's and NDN's thresholds on validation volumes.

use std::path::PathBuf;

use anyhow::Context;
use qcanet_gpu::infer::calibrate::{check_f1_tolerance, check_grid, choose, predict, search};
use qcanet_gpu::infer::pipeline::SegmentOptions;
use qcanet_gpu::infer::predictors::{load_averaged, stage, weights_path};
use qcanet_gpu::metrics::instances::{grid_edge, DEFAULT_DYNAMICS, DEFAULT_THRESHOLDS};
use qcanet_gpu::model::Arch;
use qcanet_gpu::train::dataset::{names_of, read_instance_labels};

#[derive(clap::Args)]
#[command(after_help = "Predicts every listed volume once with both networks (as `infer` does), scores the whole \
instance stage against DATA/labels_instance/ over a grid of thresholds (the NSN's first, then the NDN's) and marker dynamics, and \
writes copies of the weights (f16) with the chosen thresholds and dynamic in their metadata, where `infer` reads them, plus \
calibration.csv with every trial's mean scores and calibration_volumes.csv with its scores on each volume (to hold a floor \
per stage, not only on the mean). Use validation volumes only: a volume that chose a threshold is no longer held out.")]
pub struct Args {
    /// NSN weights (default: the bundled ones). Given more than once, the networks' probabilities are
    /// averaged (an ensemble: calibrated as one, written as one file that `infer` averages the same way).
    #[arg(long)]
    nsn: Vec<PathBuf>,
    /// NDN weights (default: the bundled ones); more than once, averaged as for --nsn.
    #[arg(long)]
    ndn: Vec<PathBuf>,
    /// Dataset folder (images_raw/, labels_instance/, split_list/).
    #[arg(long)]
    data: PathBuf,
    /// File listing the volumes to calibrate on (default DATA/split_list/validation.txt).
    #[arg(long)]
    list: Option<PathBuf>,
    /// Thresholds to try, comma-separated, each strictly between 0 and 1 [default: 0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9].
    #[arg(long)]
    thresholds: Option<String>,
    /// Dynamics of the NDN's markers to try with each pair, comma-separated, in [0, 1) (0: every component
    /// above the threshold is a marker, as the original QCANet) [default: 0,0.05,0.1,0.2,0.3].
    #[arg(long)]
    dynamics: Option<String>,
    /// Lower thresholds the NSN's nuclei may grow to after the watershed (hysteresis: split where the NSN is
    /// sure, outlined where it is less so), comma-separated, e.g. 0.3,0.4,0.5,0.6,0.7: each NSN threshold is
    /// then tried without growth and grown to every one below it [default: none, no growth]. Growth chosen
    /// on clean volumes lost nuclei under read noise (weights/HISTORY.md): calibrate on volumes that look
    /// like the ones you will segment.
    #[arg(long, value_name = "LIST")]
    extents: Option<String>,
    /// Objects under this many µm³ are dropped, as `infer --min-volume` (calibrate with the value you will infer with).
    #[arg(long, value_name = "UM3", default_value_t = qcanet_gpu::postprocess::MIN_NUCLEUS_UM3, value_parser = super::parse_min_volume)]
    min_volume: f64,
    /// Whether components of the NSN's mask that no marker reaches count as nuclei (on or off), as `infer
    /// --label-unmarked`; recorded in the NSN written, which `infer` then follows. Default: the NSN's own record,
    /// else off. Polar bodies are such components: calibrate both ways and compare.
    #[arg(long, value_name = "on|off", value_parser = clap::builder::BoolishValueParser::new())]
    label_unmarked: Option<bool>,
    /// Tile side for prediction, as `infer --tile`.
    #[arg(long, default_value_t = qcanet_gpu::infer::pipeline::DEFAULT_TILE)]
    tile: usize,
    /// Distance between tile origins, as `infer --stride`.
    #[arg(long, default_value_t = qcanet_gpu::infer::pipeline::DEFAULT_STRIDE)]
    stride: usize,
    /// Keep the best mean SEG among the settings whose mean F1 is within this of the best (0: the best F1,
    /// then SEG). Weighs masks against single nuclei: over six volumes, 0.005 is about one nucleus at the
    /// 50-nucleus stage.
    #[arg(long, value_name = "F1", default_value_t = 0.0)]
    f1_tolerance: f64,
    /// Test-time augmentation views, as `infer --tta` (calibrate with the setting you will infer with).
    #[arg(long, default_value_t = 1)]
    tta: usize,
    /// Folder for nsn.safetensors, ndn.safetensors, calibration.csv and calibration_volumes.csv.
    #[arg(long, short)]
    out_dir: PathBuf,
    /// Replace existing files in --out-dir.
    #[arg(long)]
    overwrite: bool,
}

pub fn run(g: &super::Global, a: Args) -> anyhow::Result<()> {
    let grid = match &a.thresholds {
        Some(s) => super::numbers(s, "--thresholds")?,
        None => DEFAULT_THRESHOLDS.to_vec(),
    };
    let dynamics = match &a.dynamics {
        Some(s) => super::numbers(s, "--dynamics")?,
        None => DEFAULT_DYNAMICS.to_vec(),
    };
    let extents = match a.extents.as_deref().map(str::trim) {
        None | Some("none") => Vec::new(),
        Some(s) => super::numbers(s, "--extents")?,
    };
    check_f1_tolerance(a.f1_tolerance).context("--f1-tolerance")?;
    check_grid(&grid, &dynamics, &extents).context("--thresholds, --dynamics or --extents")?;
    let names = names_of(&a.data, "validation", a.list.as_deref())?;
    let paths = |given: &[PathBuf], file: &str| -> anyhow::Result<Vec<PathBuf>> {
        if given.is_empty() {
            Ok(vec![weights_path(None, file)?])
        } else {
            given.iter().map(|p| Ok(weights_path(Some(p), file)?)).collect()
        }
    };
    let nsn_paths = paths(&a.nsn, "nsn.safetensors").context("NSN weights")?;
    let ndn_paths = paths(&a.ndn, "ndn.safetensors").context("NDN weights")?;
    let outs = [
        a.out_dir.join("nsn.safetensors"),
        a.out_dir.join("ndn.safetensors"),
        a.out_dir.join("calibration.csv"),
        a.out_dir.join("calibration_volumes.csv"),
    ];
    for o in &outs {
        if nsn_paths.iter().chain(&ndn_paths).any(|p| qcanet_gpu::io::same_file(p, o)) {
            anyhow::bail!("{}: is one of the input weights; choose another --out-dir", o.display());
        }
        if o.exists() && !a.overwrite {
            anyhow::bail!("{}: exists (use --overwrite to replace it)", o.display());
        }
    }
    let ctx = g.context()?;
    let mut nsn = load_averaged(&ctx, &nsn_paths, Arch::Nsn).context("--nsn")?;
    let mut ndn = load_averaged(&ctx, &ndn_paths, Arch::Ndn).context("--ndn")?;
    qcanet_gpu::infer::tta::flips(a.tta).context("--tta")?;
    let mut opts = SegmentOptions { tile: [a.tile; 3], stride: [a.stride; 3], tta: a.tta, ..Default::default() };
    opts.instance.min_volume_um3 = a.min_volume;
    // As the NSN's weights say (`infer` follows them), unless told.
    opts.instance.label_unmarked_components = a.label_unmarked.unwrap_or(nsn.meta.label_unmarked_or_default());
    if opts.instance.label_unmarked_components {
        log::info!("components of the NSN's mask with no marker count as nuclei");
    }
    let pb = qcanet_gpu::progress::Progress::counter("tiles");
    let mut vols = Vec::new();
    {
        let mut sn = stage(&ctx, &nsn, "NSN");
        let mut sd = stage(&ctx, &ndn, "NDN");
        for (i, name) in names.iter().enumerate() {
            let raw_path = a.data.join("images_raw").join(name);
            let vol = qcanet_gpu::io::read_volume(&raw_path)?;
            let gt =
                read_instance_labels(&a.data.join("labels_instance").join(name), "calibration", &raw_path, vol.dims)?;
            log::info!("{name} ({}/{}): predicting", i + 1, names.len());
            vols.push(predict(&mut sn, &mut sd, name, &vol, gt.labels, &opts, &pb)?);
        }
    }
    pb.finish();
    let found = search(&vols, &grid, &dynamics, &extents, &opts.instance)?;
    let (top, all) = (found.best, &found.trials);
    let best = choose(all, a.f1_tolerance).context("--f1-tolerance")?;
    if best != top {
        log::info!(
            "best F1 {:.4} at NSN {:.2} (grown to {:.2}), NDN {:.2}, dynamic {:.2} (SEG {:.4}); within --f1-tolerance {} of it, the best SEG",
            top.f1,
            top.nsn,
            top.extent,
            top.ndn,
            top.dynamic,
            top.seg,
            a.f1_tolerance
        );
    }
    let csv = found.trials_csv();
    let per_volume = found.volumes_csv();
    std::fs::create_dir_all(&a.out_dir).with_context(|| format!("{}: cannot create", a.out_dir.display()))?;
    nsn.meta.threshold = Some(best.nsn);
    nsn.meta.extent_threshold = (best.extent < best.nsn).then_some(best.extent);
    ndn.meta.threshold = Some(best.ndn);
    ndn.meta.marker_dynamic = Some(best.dynamic);
    ndn.meta.min_volume_um3 = Some(a.min_volume);
    if a.label_unmarked.is_some() || nsn.meta.label_unmarked.is_some() {
        nsn.meta.label_unmarked = Some(opts.instance.label_unmarked_components);
    }
    nsn.save_f16(&ctx, &outs[0])?;
    ndn.save_f16(&ctx, &outs[1])?;
    qcanet_gpu::model::safetensors_file::write_atomic(&outs[2], csv.as_bytes())?;
    qcanet_gpu::model::safetensors_file::write_atomic(&outs[3], per_volume.as_bytes())?;
    // A best value on the grid's edge may be beaten beyond it (a dynamic of 0 is the natural floor).
    let mut chosen =
        vec![("NSN threshold", best.nsn, &grid, "--thresholds"), ("NDN threshold", best.ndn, &grid, "--thresholds")];
    if best.dynamic > 0.0 {
        chosen.push(("marker dynamic", best.dynamic, &dynamics, "--dynamics"));
    }
    if best.extent < best.nsn {
        chosen.push(("NSN extent", best.extent, &extents, "--extents"));
    }
    for (what, v, g, flag) in chosen {
        if let Some(edge) = grid_edge(v, g) {
            log::warn!("the chosen {what}, {v:.2}, is the grid's {edge}: a wider {flag} may score higher");
        }
    }
    let first = all[0];
    println!(
        "{} volumes; at 0.5/0.5: F1 {:.4}, SEG {:.4}, IoU {:.4}\nchosen NSN {:.2}{}, NDN {:.2}, marker dynamic {:.2}: F1 {:.4}, SEG {:.4}, IoU {:.4}\nwrote {}, {}, {}, {}",
        vols.len(),
        first.f1,
        first.seg,
        first.iou,
        best.nsn,
        if best.extent < best.nsn { format!(" (nuclei grown to {:.2})", best.extent) } else { String::new() },
        best.ndn,
        best.dynamic,
        best.f1,
        best.seg,
        best.iou,
        outs[0].display(),
        outs[1].display(),
        outs[2].display(),
        outs[3].display()
    );
    Ok(())
}
