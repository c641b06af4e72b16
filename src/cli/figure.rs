//! `qcanet-gpu figure`: the method comparison of the QCANet paper's Figure 3
//! for one stack (NSN + CCL, 3-D U-Net + CCL when its weights exist, QCANet).

use std::path::PathBuf;

use anyhow::Context;
use qcanet_gpu::infer::figure::{compose, write_png, Row};
use qcanet_gpu::infer::pipeline::{compare_methods, components, method_rows, voxel_of, SegmentOptions};
use qcanet_gpu::infer::predictors::{load_checked, locate_weights, stage, weights_path};
use qcanet_gpu::model::Arch;
use qcanet_gpu::postprocess::Connectivity;
use qcanet_gpu::progress::Progress;

use super::check_output;

#[derive(clap::Args)]
pub struct Args {
    /// The TIFF stack to show (3-D; for a time series see --time).
    input: PathBuf,
    /// The PNG to write (an existing file is replaced only with --overwrite).
    #[arg(short = 'o', long, default_value = "figure.png")]
    out: PathBuf,
    /// NSN weights (default: weights/nsn.safetensors).
    #[arg(long)]
    nsn: Option<PathBuf>,
    /// NDN weights (default: weights/ndn.safetensors).
    #[arg(long)]
    ndn: Option<PathBuf>,
    /// 3-D U-Net weights (default: weights/unet3d.safetensors if it exists; the row is left out otherwise).
    #[arg(long)]
    unet: Option<PathBuf>,
    /// Ground truth to show as the last row: a label stack, or a 0/255 mask (labelled by connected components).
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Time point of a 4-D stack.
    #[arg(long, default_value_t = 0)]
    time: usize,
    /// The nuclear channel of a multi-channel ImageJ hyperstack or OME-TIFF, numbered from 1 as in Fiji.
    #[arg(long, value_name = "C")]
    channel: Option<usize>,
    /// Voxel size X,Y,Z in µm when the file does not carry one.
    #[arg(long, value_parser = |s: &str| qcanet_gpu::io::parse_voxel_size(s).map_err(|e| e.to_string()), default_value = "0.8,0.8,1.75")]
    voxel_size: [f64; 3],
    /// Tile side (voxels of the network's grid).
    #[arg(long, default_value_t = qcanet_gpu::infer::pipeline::DEFAULT_TILE)]
    tile: usize,
    /// Tile stride.
    #[arg(long, default_value_t = qcanet_gpu::infer::pipeline::DEFAULT_STRIDE)]
    stride: usize,
    /// Pixels per voxel in the figure (1 to 16).
    #[arg(long, default_value_t = 2, value_parser = parse_scale)]
    scale: usize,
    /// Also write each method's labels as 16-bit TIFFs into this folder
    /// (STACK_nsn_ccl_labels.tif, STACK_unet_ccl_labels.tif, STACK_qcanet_labels.tif), e.g. for `qcanet-gpu eval`.
    #[arg(long)]
    save_labels: Option<PathBuf>,
    /// Replace an existing PNG or label file instead of refusing to.
    #[arg(long)]
    overwrite: bool,
}

fn parse_scale(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(k) if (1..=16).contains(&k) => Ok(k),
        _ => Err(format!("'{s}': expected pixels per voxel from 1 to 16")),
    }
}

pub fn run(g: &super::Global, a: Args) -> anyhow::Result<()> {
    if a.stride == 0 || a.stride > a.tile {
        anyhow::bail!("--stride {} must be between 1 and the tile side {}", a.stride, a.tile);
    }
    let mut vols = qcanet_gpu::io::read_stack_channel(&a.input, a.channel)?;
    let n_t = vols.len();
    if a.time >= n_t {
        anyhow::bail!("{}: --time {} but the stack has {n_t} time point(s)", a.input.display(), a.time);
    }
    let vol = vols.swap_remove(a.time);
    // At most four rows (NSN, U-Net, QCANet, truth): refused before any prediction.
    qcanet_gpu::infer::figure::size(vol.dims, 4, a.scale)?;
    let truth = match &a.truth {
        Some(p) => {
            let t = qcanet_gpu::io::read_volume(p)?;
            if t.dims != vol.dims {
                anyhow::bail!("{}: ground truth is {:?} (z,y,x) but the stack is {:?}", p.display(), t.dims, vol.dims);
            }
            Some(t)
        }
        None => None,
    };
    let nsn_path = weights_path(a.nsn.as_deref(), "nsn.safetensors").context("NSN weights")?;
    let ndn_path = weights_path(a.ndn.as_deref(), "ndn.safetensors").context("NDN weights")?;
    let unet_path = match &a.unet {
        Some(p) => Some(p.clone()),
        None => locate_weights("unet3d.safetensors").ok(),
    };
    if unet_path.is_none() {
        log::info!("no 3-D U-Net weights (weights/unet3d.safetensors): that row is left out");
    }
    // Neither the figure nor the labels may replace what was read.
    let mut inputs = vec![a.input.as_path(), nsn_path.as_path(), ndn_path.as_path()];
    inputs.extend(a.truth.as_deref());
    inputs.extend(unet_path.as_deref());
    // Every output is checked before any prediction, so a refusal costs nothing.
    let stem = qcanet_gpu::io::stack_stem(&a.input).to_string_lossy().into_owned();
    let stem = if n_t > 1 { format!("{stem}_t{:03}", a.time) } else { stem };
    let label_path =
        |name: &str| a.save_labels.as_ref().map(|d| d.join(format!("{stem}_{}_labels.tif", method_slug(name))));
    let mut outputs = vec![a.out.clone()];
    outputs.extend(method_rows(unet_path.is_some()).filter_map(label_path));
    for o in &outputs {
        check_output(o, &inputs, a.overwrite)?;
    }
    let ctx = g.context()?;
    let nsn = load_checked(&ctx, &nsn_path, Arch::Nsn).context("--nsn")?;
    let ndn = load_checked(&ctx, &ndn_path, Arch::Ndn).context("--ndn")?;
    let unet = match &unet_path {
        Some(p) => Some(load_checked(&ctx, p, Arch::Unet3d).context("--unet")?),
        None => None,
    };
    let opts =
        SegmentOptions { tile: [a.tile; 3], stride: [a.stride; 3], voxel_um: a.voxel_size, ..Default::default() };
    let (mut sn, mut sd) = (stage(&ctx, &nsn, "NSN"), stage(&ctx, &ndn, "NDN"));
    let mut su = unet.as_ref().map(|u| stage(&ctx, u, "3-D U-Net"));
    let pb = Progress::counter("tiles");
    let mut rows = compare_methods(&ctx, &mut sn, &mut sd, su.as_mut(), &vol, &opts, &pb)?;
    pb.finish();
    if let Some(t) = truth {
        let max = t.data.iter().cloned().fold(0.0, f32::max);
        let binary = t.data.iter().all(|&v| v == 0.0 || v == max);
        let labels = if binary {
            let m: Vec<u8> = t.data.iter().map(|&v| u8::from(v > 0.0)).collect();
            components(&ctx, &m, t.dims, Connectivity::TwentySix)?
        } else {
            t.data.iter().map(|&v| v.max(0.0) as u32).collect()
        };
        rows.push((TRUTH_ROW.to_string(), labels));
    }
    for (name, l) in &rows {
        let n = l.iter().copied().max().unwrap_or(0);
        log::info!("{name}: {n} objects");
    }
    if let Some(dir) = &a.save_labels {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create the folder", dir.display()))?;
        for (name, l) in rows.iter().filter(|(n, _)| n != TRUTH_ROW) {
            let path = label_path(name).expect("--save-labels is given");
            qcanet_gpu::io::write_labels(&path, vol.dims, l, Some(voxel_of(&vol, opts.voxel_um)?))?;
            log::info!("{name}: labels written to {}", path.display());
        }
    }
    let rows: Vec<Row> = rows.iter().map(|(n, l)| Row { name: n.clone(), labels: l }).collect();
    let fig = compose(&vol.data, vol.dims, &rows, a.scale)?;
    write_png(&fig, &a.out)?;
    log::info!("wrote {} ({}×{} px)", a.out.display(), fig.width, fig.height);
    Ok(())
}

const TRUTH_ROW: &str = "ground truth";

/// File-name part for a figure row: "NSN + CCL" -> "nsn_ccl".
fn method_slug(name: &str) -> String {
    let s = name.to_lowercase().replace("3-d ", "").replace("u-net", "unet");
    let s: String = s.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    s.split('_').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("_")
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs() {
        let slugs: Vec<_> = super::method_rows(true).map(super::method_slug).collect();
        assert_eq!(slugs, ["nsn_ccl", "unet_ccl", "qcanet"]);
        assert_eq!(super::method_rows(false).collect::<Vec<_>>(), ["NSN + CCL", "QCANet"]);
    }
}
