//! `qcanet-gpu postprocess`: the QCANet instance stage on any pair of masks:
//! `watershed(-EDT(seg), markers = components(det), mask = seg)` (priority
//! flood on the CPU, or on the GPU with `--watershed gpu`), then the
//! per-nucleus criteria.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use qcanet_gpu::io;
use qcanet_gpu::postprocess::{criteria, instances, Connectivity, Grid, InstanceOptions, Watershed};

#[derive(clap::Args)]
pub struct Args {
    /// Segmentation mask (any non-zero voxel is nucleus).
    #[arg(long)]
    seg: PathBuf,
    /// Detection mask: one blob per nucleus centre (any non-zero voxel).
    #[arg(long)]
    det: PathBuf,
    /// Output label TIFF (16-bit).
    #[arg(short, long)]
    out: PathBuf,
    /// Per-nucleus criteria CSV (default: OUT with `_criteria.csv`).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Raw image for mean and integrated intensity per nucleus.
    #[arg(long)]
    image: Option<PathBuf>,
    /// Voxel size X,Y,Z in µm; overrides the files' (default when neither says: 0.8,0.8,1.75).
    #[arg(long)]
    voxel_size: Option<String>,
    /// Watershed neighbourhood: 6 or 26.
    #[arg(long, default_value_t = 6)]
    connectivity: u8,
    /// Give segmentation components without a marker (e.g. nuclei cut by the stack's edge) their own labels instead of dropping them.
    #[arg(long)]
    label_unmarked: bool,
    /// Jump-flooding EDT (approximate, faster on large GPUs) instead of the exact one (with --watershed gpu).
    #[arg(long)]
    jfa: bool,
    /// flood (priority flood on the CPU, exact; what `calibrate` and `train` choose settings with) or gpu (EDT and a relaxation watershed on the GPU; ties on flood plateaus broken differently).
    #[arg(long, default_value = "flood")]
    watershed: Watershed,
    /// Drop objects smaller than this many µm³ (0 keeps every object). Default: half the smallest nucleus annotated in BBBC050's training split; no object that small can match a nucleus at IoU 0.5.
    #[arg(long, value_name = "UM3", default_value_t = qcanet_gpu::postprocess::MIN_NUCLEUS_UM3, value_parser = super::parse_min_volume)]
    min_volume: f64,
    /// Replace existing outputs.
    #[arg(long)]
    overwrite: bool,
}

/// Voxel size (x, y, z µm): the flag, else the file, else the microscope default.
pub fn voxel_size(flag: Option<&str>, from_file: Option<[f64; 3]>, file: &Path) -> anyhow::Result<[f64; 3]> {
    if let Some(s) = flag {
        return Ok(io::parse_voxel_size(s)?);
    }
    if let Some(v) = from_file {
        return Ok(v);
    }
    log::warn!("{} carries no voxel size; using 0.8,0.8,1.75 µm (set --voxel-size)", file.display());
    Ok([0.8, 0.8, 1.75])
}

fn connectivity(c: u8) -> anyhow::Result<Connectivity> {
    match c {
        6 => Ok(Connectivity::Six),
        26 => Ok(Connectivity::TwentySix),
        _ => bail!("--connectivity must be 6 or 26, not {c}"),
    }
}

pub fn run(g: &super::Global, a: Args) -> anyhow::Result<()> {
    let csv = a.csv.clone().unwrap_or_else(|| {
        let stem = a.out.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "labels".into());
        let stem = stem.strip_suffix("_labels").unwrap_or(&stem).to_string();
        a.out.with_file_name(format!("{stem}_criteria.csv"))
    });
    let mut inputs: Vec<&Path> = vec![&a.seg, &a.det];
    if let Some(i) = &a.image {
        inputs.push(i);
    }
    super::check_output(&a.out, &inputs, a.overwrite)?;
    super::check_output(&csv, &inputs, a.overwrite)?;
    if io::same_file(&csv, &a.out) {
        bail!("--csv and --out are both {}: the criteria would replace the labels", csv.display());
    }
    let seg = io::read_volume(&a.seg)?;
    let det = io::read_volume(&a.det)?;
    if seg.dims != det.dims {
        bail!(
            "{} is {:?} (z, y, x) but {} is {:?}: the masks must have the same shape",
            a.seg.display(),
            seg.dims,
            a.det.display(),
            det.dims
        );
    }
    let image = match &a.image {
        Some(p) => {
            let v = io::read_volume(p)?;
            if v.dims != seg.dims {
                bail!("{} is {:?} but the masks are {:?}", p.display(), v.dims, seg.dims);
            }
            Some(v)
        }
        None => None,
    };
    let voxel = voxel_size(a.voxel_size.as_deref(), seg.voxel_um.or(det.voxel_um), &a.seg)?;
    let grid = Grid::new(seg.dims, [voxel[2] as f32, voxel[1] as f32, voxel[0] as f32]);
    let to_mask = |v: &io::Volume| v.data.iter().map(|&x| (x != 0.0) as u8).collect::<Vec<u8>>();
    let (seg_mask, det_mask) = (to_mask(&seg), to_mask(&det));
    let opts = InstanceOptions {
        connectivity: connectivity(a.connectivity)?,
        label_unmarked_components: a.label_unmarked,
        exact_edt: !a.jfa,
        watershed: a.watershed,
        min_volume_um3: a.min_volume,
        ..InstanceOptions::default()
    };
    if a.jfa && a.watershed == Watershed::Flood {
        log::warn!("--jfa applies to --watershed gpu only; the flood uses the exact distance transform");
    }
    let ctx = g.context()?;
    let t0 = std::time::Instant::now();
    let labels = instances(&ctx, &seg_mask, &det_mask, &grid, &opts)
        .with_context(|| format!("labelling {} with markers from {}", a.seg.display(), a.det.display()))?;
    log::info!("instance stage took {:.2} s", t0.elapsed().as_secs_f64());
    let rows = criteria::measure(&labels, &grid, image.as_ref().map(|v| v.data.as_slice()))?;
    io::write_labels(&a.out, seg.dims, &labels, Some(voxel))?;
    io::write_atomic(&csv, |w| criteria::write_csv(w, &rows, None))?;
    let s = criteria::summary(&rows);
    println!(
        "{}: {} nuclei, volume mean {:.1} µm³, s.d. {:.1} µm³ -> {}, {}",
        a.seg.display(),
        s.count,
        s.mean_volume_um3,
        s.sd_volume_um3,
        a.out.display(),
        csv.display()
    );
    Ok(())
}
