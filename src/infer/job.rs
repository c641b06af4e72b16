//! The batch side of inference: which files to read, which of them this shard
//! processes, what each writes, and which outputs are already complete.
//!
//! - Inputs are files or folders (every `.tif`/`.tiff` inside, sorted, minus
//!   files that are this program's own outputs).
//! - `--shard I/N` keeps every N-th unit starting at I: the units are the input
//!   files when there are several, the time points when there is one input
//!   (a 4-D T×Z×Y×X stack), so a job array spreads either kind of series.
//! - A unit's outputs are written to temporary names and renamed together, so
//!   an output under its final name is complete and its siblings are there
//!   too; a unit whose outputs all exist is skipped unless `overwrite`, and an
//!   interrupted run resumes where it stopped.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::is_tiff;
/// Suffixes (before `.tif` / `.csv`) of the files `infer` writes.
pub use crate::io::{CRITERIA_SUFFIX, LABELS_SUFFIX, NDN_PROB_SUFFIX, NSN_PROB_SUFFIX};
use crate::progress::Progress;

/// `I/N`: this job takes units I, I+N, I+2N, … (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 0, count: 1 }
    }
}

impl Shard {
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 || index >= count {
            return Err(Error::invalid(format!(
                "shard {index}/{count}: need 0 <= I < N (e.g. --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT with a 0-based array)"
            )));
        }
        Ok(Shard { index, count })
    }
    /// Parses `I/N`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::invalid(format!("--shard '{s}': expected I/N with 0 <= I < N, e.g. 0/4"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let i = i.trim().parse::<usize>().map_err(|_| bad())?;
        let n = n.trim().parse::<usize>().map_err(|_| bad())?;
        Shard::new(i, n)
    }
    pub fn selects(&self, unit: usize) -> bool {
        unit % self.count == self.index
    }
    /// The units of `0..n` this shard processes.
    pub fn units(&self, n: usize) -> Vec<usize> {
        (self.index..n).step_by(self.count).collect()
    }
}

impl std::str::FromStr for Shard {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Shard::parse(s)
    }
}

/// Whether `p` looks like a file `infer` wrote (so a folder run does not take
/// its own earlier outputs as inputs).
pub fn is_output_name(p: &Path) -> bool {
    let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    is_tiff(p) && [LABELS_SUFFIX, NSN_PROB_SUFFIX, NDN_PROB_SUFFIX].iter().any(|s| stem.ends_with(s))
}

/// Files named on the command line, folders expanded to their `.tif`/`.tiff`
/// files (sorted by name, this program's outputs left out). Errors name the
/// path that does not exist or the folder without stacks.
pub fn expand_inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if paths.is_empty() {
        return Err(Error::invalid("no input: give one or more TIFF stacks or folders"));
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Error::file(p, format!("cannot list folder: {e}")))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && is_tiff(f))
                .collect();
            let before = found.len();
            found.retain(|f| !is_output_name(f));
            if before > found.len() {
                log::info!("{}: leaving out {} earlier output file(s)", p.display(), before - found.len());
            }
            if found.is_empty() {
                return Err(Error::file(p, "folder holds no .tif/.tiff stacks"));
            }
            found.sort();
            out.extend(found);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(Error::file(p, "no such file or folder"));
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())));
    Ok(out)
}

/// The files written for one time point of one input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outputs {
    /// 16-bit label stack.
    pub labels: PathBuf,
    /// Per-nucleus criteria (with a time column for a series).
    pub criteria: PathBuf,
    /// NSN and NDN foreground probabilities (f32), when asked for.
    pub nsn_prob: Option<PathBuf>,
    pub ndn_prob: Option<PathBuf>,
}

impl Outputs {
    /// Output names for `input`: beside it, or in `out_dir`. `time` is
    /// `(t, T)` for time point t of a series of T (`stack_t003_labels.tif`).
    pub fn for_input(input: &Path, out_dir: Option<&Path>, time: Option<(usize, usize)>, probabilities: bool) -> Self {
        let base = base_name(input, out_dir, time);
        let with = |suffix: &str, ext: &str| {
            let mut s = base.clone().into_os_string();
            s.push(suffix);
            s.push(ext);
            PathBuf::from(s)
        };
        Outputs {
            labels: with(LABELS_SUFFIX, ".tif"),
            criteria: with(CRITERIA_SUFFIX, ".csv"),
            nsn_prob: probabilities.then(|| with(NSN_PROB_SUFFIX, ".tif")),
            ndn_prob: probabilities.then(|| with(NDN_PROB_SUFFIX, ".tif")),
        }
    }
    pub fn paths(&self) -> Vec<&Path> {
        let mut v = vec![self.labels.as_path(), self.criteria.as_path()];
        v.extend(self.nsn_prob.as_deref());
        v.extend(self.ndn_prob.as_deref());
        v
    }
    /// All outputs exist (they are written atomically, so existing = complete).
    pub fn complete(&self) -> bool {
        self.paths().iter().all(|p| p.is_file())
    }
}

/// Path prefix of an input's outputs: the input's stem (in `out_dir` if given),
/// plus `_tNNN` for time point t of a series of T (at least 3 digits).
pub fn base_name(input: &Path, out_dir: Option<&Path>, time: Option<(usize, usize)>) -> PathBuf {
    let stem = crate::io::stack_stem(input);
    let dir = match out_dir {
        Some(d) => d.to_path_buf(),
        None => input.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    let mut name = stem;
    if let Some((t, n)) = time {
        let width = n.saturating_sub(1).to_string().len().max(3);
        name.push(format!("_t{t:0width$}"));
    }
    dir.join(name)
}

/// The series-wide criteria CSV (`stack_criteria.csv`) gathered from the
/// per-time-point CSVs of a T-point series.
pub fn series_criteria(input: &Path, out_dir: Option<&Path>) -> PathBuf {
    let mut s = base_name(input, out_dir, None).into_os_string();
    s.push(CRITERIA_SUFFIX);
    s.push(".csv");
    PathBuf::from(s)
}

/// Refuses outputs that would overwrite an input.
pub fn check_not_input(outputs: &Outputs, inputs: &[PathBuf]) -> Result<()> {
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    outputs.paths().into_iter().try_for_each(|o| crate::io::refuse_input(o, &inputs))
}

/// Refuses inputs whose outputs would share names (`a/x.tif` and `b/x.tif`
/// with one `--out-dir`): one would skip or replace the other's, and two
/// shards would race for them. Checked on the whole list, so every shard
/// refuses alike; the error names both inputs.
pub fn check_distinct_outputs(inputs: &[PathBuf], out_dir: Option<&Path>) -> Result<()> {
    let mut seen: std::collections::HashMap<PathBuf, &PathBuf> = std::collections::HashMap::new();
    for input in inputs {
        if let Some(first) = seen.insert(base_name(input, out_dir, None), input) {
            return Err(Error::file(
                input,
                format!(
                    "would write the same outputs as {} ({}); rename one or segment them with different --out-dir",
                    first.display(),
                    Outputs::for_input(input, out_dir, None, false).labels.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Concatenates per-time-point CSVs (same header) into `dest`, once all exist.
/// Returns false (and writes nothing) while some are missing.
pub fn gather_csvs(parts: &[PathBuf], dest: &Path) -> Result<bool> {
    if parts.iter().any(|p| !p.is_file()) {
        return Ok(false);
    }
    let mut header: Option<String> = None;
    let mut body = String::new();
    for p in parts {
        let text = std::fs::read_to_string(p).map_err(|e| Error::file(p, format!("cannot read: {e}")))?;
        let mut lines = text.lines();
        let h = lines.next().unwrap_or("").to_string();
        match &header {
            None => header = Some(h),
            Some(prev) if *prev != h => return Err(Error::file(p, "CSV header differs from the other time points")),
            _ => {}
        }
        for l in lines.filter(|l| !l.is_empty()) {
            body.push_str(l);
            body.push('\n');
        }
    }
    crate::io::write_atomic(dest, |w| {
        writeln!(w, "{}", header.unwrap_or_default())
            .and_then(|_| w.write_all(body.as_bytes()))
            .map_err(|e| Error::file(dest, e))
    })?;
    Ok(true)
}

/// Settings of [`run_job`].
#[derive(Clone, Debug, Default)]
pub struct JobOptions {
    /// Write outputs here instead of beside each input (created if missing).
    pub out_dir: Option<PathBuf>,
    pub shard: Shard,
    /// Recompute and replace outputs that already exist.
    pub overwrite: bool,
    /// Also write the NSN and NDN foreground probabilities.
    pub save_probabilities: bool,
    /// The channel (from 1, as Fiji numbers them) to read from
    /// multi-channel inputs; `None` reads one-channel stacks only.
    pub channel: Option<usize>,
}

/// What a job did.
#[derive(Clone, Debug, Default)]
pub struct JobReport {
    /// Time points segmented and written.
    pub written: usize,
    /// Time points whose outputs were already complete.
    pub skipped: usize,
    /// (input, message) of every input or time point that failed.
    pub failed: Vec<(String, String)>,
}

impl JobReport {
    /// An error listing every failure, or Ok.
    pub fn into_result(self) -> Result<JobReport> {
        if self.failed.is_empty() {
            return Ok(self);
        }
        let list: Vec<String> = self.failed.iter().map(|(w, m)| format!("  {w}: {m}")).collect();
        Err(Error::invalid(format!(
            "{} of {} time point(s) or input(s) failed:\n{}",
            self.failed.len(),
            self.failed.len() + self.written + self.skipped,
            list.join("\n")
        )))
    }
}

/// Segments every input this shard owns and writes its outputs; see the
/// module documentation for inputs, shards and resuming. `segment` does the
/// work for one volume. A failing input or time point is reported and the job
/// goes on with the others ([`JobReport::into_result`] turns failures into an
/// error); nothing partial is ever left under an output's name.
pub fn run_job(
    inputs: &[PathBuf],
    opts: &JobOptions,
    segment: &mut dyn FnMut(&crate::io::Volume, &Progress) -> Result<super::pipeline::Segmentation>,
    pb: &Progress,
) -> Result<JobReport> {
    let inputs = expand_inputs(inputs)?;
    check_distinct_outputs(&inputs, opts.out_dir.as_deref())?;
    if let Some(d) = &opts.out_dir {
        std::fs::create_dir_all(d).map_err(|e| Error::file(d, format!("cannot create output folder: {e}")))?;
    }
    let by_file = inputs.len() > 1;
    let files: Vec<usize> = if by_file { opts.shard.units(inputs.len()) } else { vec![0] };
    if by_file {
        log::info!("{} inputs; shard {}/{} takes {}", inputs.len(), opts.shard.index, opts.shard.count, files.len());
    }
    let out_dir = opts.out_dir.as_deref();
    let mut report = JobReport::default();
    for &fi in &files {
        let input = &inputs[fi];
        let name = input.display().to_string();
        // A single-volume input whose outputs exist is skipped without reading it.
        let single = Outputs::for_input(input, out_dir, None, opts.save_probabilities);
        if !opts.overwrite && single.complete() {
            log::info!("{name}: skipped, outputs exist ({}; --overwrite to redo)", single.labels.display());
            report.skipped += 1;
            continue;
        }
        pb.set_message(format!("reading {name}"));
        let volumes = match crate::io::read_stack_channel(input, opts.channel) {
            Ok(v) if v.is_empty() => {
                report.failed.push((name, "holds no image".into()));
                continue;
            }
            Ok(v) => v,
            Err(e) => {
                log::error!("{e}");
                // The summary names the input once, not again in front of its own message.
                let message = match e {
                    Error::File { path, message } if path == *input => message,
                    e => e.to_string(),
                };
                report.failed.push((name, message));
                continue;
            }
        };
        if volumes[0].voxel_um.is_none() {
            // Not a warning: 2.0 µm slices taken for 1.75 cost nothing measurable (weights/README.md,
            // "Other pixel sizes"); a pixel size far from the default would.
            log::info!(
                "{name}: the file does not say its voxel size; --voxel-size applies (x,y,z µm; 0.8,0.8,1.75 unless given)"
            );
        }
        let n_t = volumes.len();
        let times: Vec<usize> = if by_file { (0..n_t).collect() } else { opts.shard.units(n_t) };
        if !by_file && n_t > 1 {
            log::info!(
                "{name}: {n_t} time points; shard {}/{} takes {}",
                opts.shard.index,
                opts.shard.count,
                times.len()
            );
        }
        let mut wrote_here = false;
        for &t in &times {
            let time = (n_t > 1).then_some((t, n_t));
            let what = if n_t > 1 { format!("{name} t={t}") } else { name.clone() };
            let outs = Outputs::for_input(input, out_dir, time, opts.save_probabilities);
            if let Err(e) = check_not_input(&outs, &inputs) {
                report.failed.push((what, e.to_string()));
                continue;
            }
            if !opts.overwrite && outs.complete() {
                log::info!("{what}: skipped, outputs exist ({}; --overwrite to redo)", outs.labels.display());
                report.skipped += 1;
                continue;
            }
            pb.set_message(what.clone());
            let r = segment(&volumes[t], pb).and_then(|s| {
                report_noise(&what, &volumes[t], s.voxel_um);
                write_outputs(&outs, &s, time.map(|(t, _)| t))
            });
            match r {
                Ok(n) => {
                    log::info!("{what}: {n} nuclei -> {}", outs.labels.display());
                    report.written += 1;
                    wrote_here = true;
                }
                Err(e) => {
                    log::error!("{what}: {e}");
                    report.failed.push((what, e.to_string()));
                }
            }
        }
        if n_t > 1 {
            let dest = series_criteria(input, out_dir);
            if wrote_here || opts.overwrite || !dest.is_file() {
                let parts: Vec<PathBuf> =
                    (0..n_t).map(|t| Outputs::for_input(input, out_dir, Some((t, n_t)), false).criteria).collect();
                match gather_csvs(&parts, &dest) {
                    Ok(true) => log::info!("{name}: all {n_t} time points -> {}", dest.display()),
                    Ok(false) => log::info!("{name}: {} gathered once every time point is done", dest.display()),
                    Err(e) => report.failed.push((name.clone(), e.to_string())),
                }
            }
        }
    }
    Ok(report)
}

/// Writes one time point's outputs, all or none: each goes to a temporary
/// file first and they are renamed into place together (see
/// [`crate::io::FileGroup`]), so a failure (a full disk, say) leaves none of
/// them. Returns the nucleus count.
pub fn write_outputs(outs: &Outputs, s: &super::pipeline::Segmentation, time: Option<usize>) -> Result<usize> {
    let voxel = Some(s.voxel_um);
    if (outs.nsn_prob.is_some() && s.nsn_prob.is_none()) || (outs.ndn_prob.is_some() && s.ndn_prob.is_none()) {
        return Err(Error::invalid("probability maps were asked for but the segmentation did not keep them"));
    }
    let mut group = crate::io::FileGroup::new();
    for (p, v) in [(&outs.nsn_prob, &s.nsn_prob), (&outs.ndn_prob, &s.ndn_prob)] {
        if let (Some(p), Some(v)) = (p, v) {
            group.add(p, |t| crate::io::write_f32(t, s.dims, v, voxel))?;
        }
    }
    group.add(&outs.criteria, |t| {
        crate::io::write_atomic(t, |w| crate::postprocess::criteria::write_csv(w, &s.criteria, time))
    })?;
    group.add(&outs.labels, |t| crate::io::write_labels(t, s.dims, &s.labels, voxel))?;
    group.commit()?;
    Ok(s.criteria.len())
}

/// Highest read-noise estimate ([`crate::preprocess::noise_sigma`],
/// percentile range) among the BBBC050 volumes the bundled networks were
/// trained and validated on, rounded up: Emb01-Emb11 range from 0.005 to
/// 0.056 (the crowded, dim stages highest: Emb08_t501;
/// `tests/accuracy_bbbc050.rs` checks that every one stays below). A stack
/// above it is noisier than anything the networks saw; on a simulated
/// noisier microscope they lost most nuclei at the crowded stages
/// (weights/HISTORY.md, "Robustness"; that simulation's t501 measures 0.061).
/// The converse does not hold: a crowded stage's texture weighs in the
/// estimate as much as noise, so a stack below it can still be too noisy
/// (the same simulation's t451 measures 0.041 and loses most nuclei), and
/// the estimate cannot decide whether to denoise (weights/HISTORY.md).
pub const NOISE_WARN: f32 = 0.06;

/// Logs the volume's read-noise estimate (its voxels `voxel_um` in size:
/// x, y, z µm), with a warning above [`NOISE_WARN`].
fn report_noise(what: &str, vol: &crate::io::Volume, voxel_um: [f64; 3]) {
    let um3 = voxel_um.iter().product::<f64>();
    let s = crate::preprocess::noise_sigma(&vol.data, vol.dims, crate::preprocess::Normalization::default(), Some(um3));
    if s > NOISE_WARN {
        log::warn!(
            "{what}: read noise about {s:.3} of the intensity range, above {NOISE_WARN}, which no BBBC050 volume \
             the networks learnt from reaches; expect missed and merged nuclei at crowded stages"
        );
    } else {
        log::info!("{what}: read noise about {s:.3} of the intensity range");
    }
}
