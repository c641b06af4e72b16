//! `qcanet-gpu synth`: writes synthetic embryo stacks with ground truth in
//! the QCANet dataset layout.

use std::path::PathBuf;

use anyhow::{bail, Context};
use qcanet_gpu::synth::{self, SynthConfig};

#[derive(clap::Args)]
pub struct Args {
    /// Output directory (created; must be empty unless --overwrite).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Number of stacks.
    #[arg(long, default_value_t = 8)]
    pub count: usize,
    /// How many of them (the last ones) go to split_list/validation.txt.
    #[arg(long, default_value_t = 2)]
    pub validation: usize,
    /// Nuclei per stack: N or MIN..MAX (2..64; drawn log-uniformly per stack) [default: 8..32, or the
    /// config file's].
    #[arg(long)]
    pub nuclei: Option<String>,
    /// Random seed (same seed and settings give the same files).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Stack size Z,Y,X in voxels [default: 51,120,122, or the config file's].
    #[arg(long)]
    pub dims: Option<String>,
    /// Voxel size X,Y,Z in µm [default: 0.8,0.8,1.75, or the config file's].
    #[arg(long)]
    pub voxel_size: Option<String>,
    /// Generator settings as a JSON file (a SynthConfig; missing fields take defaults).
    /// --dims, --voxel-size and --nuclei given explicitly override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Write into a non-empty directory, replacing files of the same names.
    #[arg(long)]
    pub overwrite: bool,
}

/// Nuclei per stack when neither --nuclei nor a config file says.
const DEFAULT_NUCLEI: &str = "8..32";

fn parse_nuclei(s: &str) -> anyhow::Result<[usize; 2]> {
    let parse = |t: &str| t.trim().parse::<usize>().with_context(|| format!("--nuclei '{s}': '{t}' is not a count"));
    let r = match s.split_once("..") {
        Some((a, b)) => [parse(a)?, parse(b.trim_start_matches('='))?],
        None => {
            let n = parse(s)?;
            [n, n]
        }
    };
    if r[0] < 2 || r[1] > 64 || r[0] > r[1] {
        bail!("--nuclei '{s}': need N or MIN..MAX within 2..64");
    }
    Ok(r)
}

fn parse_dims(s: &str) -> anyhow::Result<[usize; 3]> {
    let v: Vec<usize> = s
        .split([',', 'x'])
        .map(|t| t.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--dims '{s}': expected Z,Y,X voxel counts, e.g. 51,120,122"))?;
    match v[..] {
        [z, y, x] => Ok([z, y, x]),
        _ => bail!("--dims '{s}': expected three values Z,Y,X"),
    }
}

pub fn run(_g: &super::Global, a: Args) -> anyhow::Result<()> {
    let mut cfg = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("{}: cannot read", p.display()))?;
            serde_json::from_str::<SynthConfig>(&text)
                .with_context(|| format!("{}: not a synth config", p.display()))?
        }
        None => SynthConfig::default(),
    };
    // Given explicitly, these override the config file (SynthConfig's defaults without one).
    if let Some(d) = &a.dims {
        cfg.dims = parse_dims(d)?;
    }
    if let Some(v) = &a.voxel_size {
        cfg.voxel_um = qcanet_gpu::io::parse_voxel_size(v)?;
    }
    let nuclei = match (&a.nuclei, &a.config) {
        (Some(n), _) => Some(n.as_str()),
        (None, None) => Some(DEFAULT_NUCLEI),
        (None, Some(_)) => None,
    };
    if let Some(n) = nuclei {
        let r = parse_nuclei(n)?;
        cfg.nuclei = r[0];
        cfg.nuclei_range = Some(r);
    }
    cfg.validate()?;
    if a.output.exists() {
        if !a.output.is_dir() {
            bail!("{}: exists and is not a directory", a.output.display());
        }
        let non_empty = std::fs::read_dir(&a.output)
            .with_context(|| format!("{}: cannot list", a.output.display()))?
            .next()
            .is_some();
        if non_empty && !a.overwrite {
            bail!("{}: directory is not empty; pass --overwrite to write into it", a.output.display());
        }
    }
    std::fs::create_dir_all(&a.output).with_context(|| format!("{}: cannot create", a.output.display()))?;

    let bar = qcanet_gpu::progress::Progress::bar("synth", a.count as u64);
    let t0 = std::time::Instant::now();
    let names = synth::write_dataset_with_progress(&a.output, &cfg, a.count, a.validation, a.seed, &mut |i, n| {
        bar.set_message(n);
        bar.set_position(i as u64);
    })?;
    bar.finish();
    log::info!(
        "wrote {} stacks ({} train, {} validation) of {:?} voxels to {} in {:.1} s",
        names.len(),
        names.len() - a.validation,
        a.validation,
        cfg.dims,
        a.output.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
