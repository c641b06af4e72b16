//! `qcanet-gpu train`: train NSN, NDN or a 3-D U-Net on a QCANet dataset.

use std::path::PathBuf;

use anyhow::Context;
use qcanet_gpu::model::Arch;
use qcanet_gpu::train::config::{LossKind, NormKind, OptimizerKind, TrainConfig};

#[derive(clap::Args)]
#[command(after_help = "Dataset layout (as in QCANet): DIR/images_raw/, DIR/images_nsn/ (segmentation ground truth), \
DIR/images_ndn/ (detection ground truth), paired by file name; DIR/split_list/train.txt and validation.txt.\n\
Every setting can also come from a TOML file (--config); flags override it. The output folder receives \
last.safetensors (resumable checkpoint), best.safetensors and best_f16.safetensors (best validation epoch: \
instance F1 then SEG with --val-partner, else marker F1 then IoU for an NDN, else IoU), log.csv, curves.png and \
config.toml.")]
pub struct Args {
    /// TOML file with any of the settings below (snake_case keys, e.g. steps_per_epoch = 20).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Network: nsn, ndn or unet3d (ndn learns images_ndn/, the others images_nsn/).
    #[arg(long)]
    model: Option<String>,
    /// Dataset folder.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output folder (must be new or empty unless --resume or --overwrite).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Start from these weights (fine-tuning); the network settings come from the file.
    #[arg(long)]
    init: Option<PathBuf>,
    /// File listing the training names, one a line (default DATA/split_list/train.txt); a name listed k times is sampled k times as often.
    #[arg(long)]
    train_list: Option<PathBuf>,
    /// File listing the validation names (default DATA/split_list/validation.txt).
    #[arg(long)]
    val_list: Option<PathBuf>,
    /// The other QCANet network (an NDN when training an NSN or U-Net, an NSN when training an NDN):
    /// every validation volume then also goes through the instance stage and is scored against
    /// DATA/labels_instance/ (F1, SEG, IoU), and the best checkpoint is the one with the best F1.
    #[arg(long)]
    val_partner: Option<PathBuf>,
    /// Number of max-pool levels (default: the model's preset).
    #[arg(long)]
    depth: Option<usize>,
    /// Base width (channels of the first conv).
    #[arg(long)]
    base: Option<usize>,
    /// Conv kernel side (odd).
    #[arg(long)]
    kernel: Option<usize>,
    /// Output classes: 2 (softmax head) or 1 (sigmoid head).
    #[arg(long)]
    classes: Option<usize>,
    /// Training patch side in voxels (default 128; smaller for quick runs).
    #[arg(long)]
    patch: Option<usize>,
    #[arg(long)]
    epochs: Option<usize>,
    /// Stop after the first epoch that ends this many minutes after training started (a safety net;
    /// the learning-rate decay still spans --epochs, so size --epochs to it, or use --time-budget).
    #[arg(long, value_name = "MINUTES")]
    time_limit: Option<f64>,
    /// Train for this many minutes, validation included: the learning rate decays over the elapsed
    /// fraction of the budget rather than over the steps, the epoch in progress when it is spent ends
    /// there (validated and checkpointed), and --epochs becomes a maximum. For a machine lent for a
    /// fixed time whose step time is not known in advance.
    #[arg(long, value_name = "MINUTES")]
    time_budget: Option<f64>,
    #[arg(long)]
    steps_per_epoch: Option<usize>,
    #[arg(long)]
    batch: Option<usize>,
    /// Learning rate.
    #[arg(long)]
    lr: Option<f32>,
    /// Learning rate at the last step, reached along a cosine decay (default lr/100; equal to --lr: constant).
    #[arg(long)]
    lr_final: Option<f32>,
    /// adam or sgd.
    #[arg(long)]
    optimizer: Option<String>,
    /// SGD momentum.
    #[arg(long)]
    momentum: Option<f32>,
    #[arg(long)]
    weight_decay: Option<f32>,
    /// ce (2 classes), bce (1 class) or dice.
    #[arg(long)]
    loss: Option<String>,
    /// Cross-entropy class weights "BG,FG".
    #[arg(long)]
    class_weights: Option<String>,
    /// BCE foreground weight.
    #[arg(long)]
    pos_weight: Option<f32>,
    /// minmax or percentile (default percentile 1–99.8).
    #[arg(long)]
    normalization: Option<String>,
    /// Percentiles "LOW,HIGH" for percentile normalisation.
    #[arg(long)]
    percentiles: Option<String>,
    /// Voxel size "X,Y,Z" in µm, used when the TIFF does not say (default 0.8,0.8,1.75).
    #[arg(long)]
    voxel_size: Option<String>,
    /// Keep the z spacing as it is (no interpolation to isotropic voxels).
    #[arg(long)]
    no_isotropic: bool,
    /// Pixel size in µm of the grid the network learns on: every stack is resampled to it in x and y (and z, unless
    /// --no-isotropic), and the weights record it so that `infer` resamples stacks the same way (default: the --init
    /// network's, else 0.8, the BBBC050 pixel)
    #[arg(long)]
    pixel_size: Option<f64>,
    /// Dilate the ground truth by this many voxels, never joining two objects (default 2 for ndn, else 0; see `train::patch::dilate`).
    #[arg(long)]
    dilate: Option<usize>,
    /// Dilate each marker only into background and its own nucleus, never into another (reads DATA/labels_instance/
    /// for every volume; see `train::patch::dilate_within`): small nuclei's targets stay off their large neighbours.
    #[arg(long)]
    dilate_within_nuclei: bool,
    /// Learn each nucleus's centre map instead of the binary ground truth: its distance to its own boundary over its
    /// largest, 1 at the centre of every nucleus, small or large, near 0 where two touch (made from
    /// DATA/labels_instance/; see `train::centres`). Needs --classes 1 (BCE, positive weight 1 unless given); no dilation.
    #[arg(long)]
    centre_map: bool,
    /// NSN or U-Net: learn the nuclei of DATA/labels_instance/ with the contact layer between touching nuclei taken
    /// out (the larger of two gives it up; see `train::touching`) instead of images_nsn/, which joins them
    /// (`calibrate --label-unmarked on` then scores its components without a marker as nuclei).
    #[arg(long)]
    separate_touching: bool,
    /// Switch off intensity augmentation (blur, gamma, gain, depth ramp, offset, noise; see `augment` in a --config file).
    #[arg(long)]
    no_intensity_augment: bool,
    /// Share (0-1) of the training patches centred on an object of the targets (a nucleus, a marker), every object
    /// of the training set equally likely, so the few small nuclei of late stages are seen as often as the rest
    /// (default 0: every patch at a random position).
    #[arg(long, value_name = "SHARE")]
    object_patches: Option<f32>,
    /// Weigh each background voxel's loss by 1 + W0·exp(−(d1 + d2)²/2σ²), d1 and d2 its distances to the nearest and
    /// second-nearest object of the target (the U-Net paper's separation weight map; cross-entropy only): the gaps
    /// between neighbouring markers count more, so a small nucleus's marker is not merged into its neighbour's.
    #[arg(long, value_name = "W0")]
    separation_weight: Option<f32>,
    /// σ of --separation-weight (or of a --config file's [separation]), in voxels of the training grid (default 3).
    #[arg(long, value_name = "VOXELS")]
    separation_sigma: Option<f32>,
    /// NDN: weigh each voxel of the marker of a small nucleus (under --small-nucleus-volume in labels_instance/, read
    /// for every volume) by W in the loss (cross-entropy only): the crowded stages' tiny nuclei, few and faint, count
    /// as much as their neighbours.
    #[arg(long, value_name = "W")]
    small_nucleus_weight: Option<f32>,
    /// The volume under which --small-nucleus-weight (or a --config file's [small_nuclei]) counts a nucleus as
    /// small, in µm³ (default 250).
    #[arg(long, value_name = "UM3")]
    small_nucleus_volume: Option<f32>,
    /// With --val-partner: objects under this many µm³ are dropped by the instance stage that scores each epoch, as `infer --min-volume` (default: infer's, half the smallest nucleus annotated in BBBC050's training split; 0 keeps every object).
    #[arg(long, value_name = "UM3", value_parser = super::parse_min_volume)]
    min_volume: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Validation tile side (whole validation volumes are predicted in tiles; default 96).
    #[arg(long)]
    val_tile: Option<usize>,
    /// Overlap of validation tiles (default 16).
    #[arg(long)]
    val_overlap: Option<usize>,
    /// With --val-partner: the trained network's thresholds tried each epoch, comma-separated; the epoch is scored
    /// at the best, which the kept checkpoint records for `infer` (default 0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9, calibrate's grid).
    #[arg(long)]
    val_thresholds: Option<String>,
    /// With --val-partner, training an NDN: its markers' dynamics tried with each threshold (default 0,0.05,0.1,0.2,0.3;
    /// 0 alone: plain components above the threshold).
    #[arg(long)]
    val_dynamics: Option<String>,
    /// Re-estimate batch-norm statistics from this many random training batches (flips only, no intensity
    /// augmentation: the images inference sees) before each validation (default 16; 0: off).
    #[arg(long)]
    bn_recalibration: Option<usize>,
    /// Frozen batch norm, for fine-tuning (--init) with small batches: training normalises with the running
    /// statistics, as inference does, and never changes them (gamma and beta are still learnt; no
    /// --bn-recalibration). Best with --no-intensity-augment: frozen statistics do not follow the gain and
    /// offset augmentation moves the inputs by.
    #[arg(long)]
    freeze_bn: bool,
    /// Validate, and keep as the best checkpoint, a running average of the weights (an exponential moving
    /// average with this decay, warmed up over the first steps) instead of the last step's; training itself is
    /// unchanged (default 0: off; 0.99 averages over about 100 steps). Needs --bn-recalibration.
    #[arg(long, value_name = "DECAY")]
    weight_average: Option<f32>,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Replace the run in --out.
    #[arg(long)]
    overwrite: bool,
}

fn pair<T: std::str::FromStr>(s: &str, what: &str) -> anyhow::Result<[T; 2]> {
    let v: Vec<T> = super::numbers(s, what)?;
    let n = v.len();
    v.try_into().map_err(|_| anyhow::anyhow!("{what}: expected 2 values, got {n}"))
}

/// The settings: file, then flags.
pub fn settings(a: &Args) -> anyhow::Result<TrainConfig> {
    let mut c = match &a.config {
        Some(p) => TrainConfig::from_toml_file(p)?,
        None => TrainConfig::default(),
    };
    if let Some(m) = &a.model {
        c.model = Arch::parse(m)?;
    }
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = &a.$f { c.$f = v.clone().into(); } )* };
    }
    set!(
        data,
        out,
        patch,
        epochs,
        steps_per_epoch,
        batch,
        lr,
        momentum,
        weight_decay,
        seed,
        classes,
        val_tile,
        val_overlap,
        bn_recalibration,
        weight_average
    );
    for (f, v) in [
        (&mut c.init, &a.init),
        (&mut c.train_list, &a.train_list),
        (&mut c.val_list, &a.val_list),
        (&mut c.val_partner, &a.val_partner),
    ] {
        if v.is_some() {
            *f = v.clone();
        }
    }
    if a.depth.is_some() {
        c.depth = a.depth;
    }
    if a.time_limit.is_some() {
        c.time_limit_minutes = a.time_limit;
    }
    if a.time_budget.is_some() {
        c.time_budget_minutes = a.time_budget;
    }
    if a.base.is_some() {
        c.base = a.base;
    }
    if a.kernel.is_some() {
        c.kernel = a.kernel;
    }
    if a.dilate.is_some() {
        c.dilate = a.dilate;
    }
    if a.dilate_within_nuclei {
        c.dilate_within_nuclei = true;
    }
    if a.centre_map {
        c.centre_map = true;
    }
    if a.separate_touching {
        c.separate_touching = true;
    }
    if a.pos_weight.is_some() {
        c.pos_weight = a.pos_weight;
    }
    if a.lr_final.is_some() {
        c.lr_final = a.lr_final;
    }
    if let Some(o) = &a.optimizer {
        c.optimizer = match o.to_ascii_lowercase().as_str() {
            "adam" => OptimizerKind::Adam,
            "sgd" => OptimizerKind::Sgd,
            _ => anyhow::bail!("--optimizer '{o}': expected adam or sgd"),
        };
    }
    if let Some(l) = &a.loss {
        c.loss = Some(match l.to_ascii_lowercase().as_str() {
            "ce" => LossKind::Ce,
            "bce" => LossKind::Bce,
            "dice" => LossKind::Dice,
            _ => anyhow::bail!("--loss '{l}': expected ce, bce or dice"),
        });
    }
    if let Some(w) = &a.class_weights {
        c.class_weights = Some(pair::<f32>(w, "--class-weights")?.to_vec());
    }
    if let Some(n) = &a.normalization {
        c.normalization = match n.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "minmax" => NormKind::Minmax,
            "percentile" => NormKind::Percentile,
            _ => anyhow::bail!("--normalization '{n}': expected minmax or percentile"),
        };
    }
    if let Some(p) = &a.percentiles {
        c.percentiles = pair::<f32>(p, "--percentiles")?;
    }
    if let Some(v) = &a.voxel_size {
        c.voxel_size = qcanet_gpu::io::parse_voxel_size(v)?;
    }
    if a.no_isotropic {
        c.isotropic = false;
    }
    if let Some(p) = a.pixel_size {
        c.pixel_size = Some(p);
    }
    if a.no_intensity_augment {
        c.augment = c.augment.intensity_off();
    }
    if let Some(v) = &a.val_thresholds {
        c.val_thresholds = super::numbers(v, "--val-thresholds")?;
    }
    if let Some(v) = &a.val_dynamics {
        c.val_dynamics = super::numbers(v, "--val-dynamics")?;
    }
    if let Some(f) = a.object_patches {
        c.object_patches = f;
    }
    // A weight or width given on the command line replaces the --config file's; one not given keeps it, else
    // the default. A width alone needs a weight from one or the other.
    match a.separation_weight.or(c.separation.map(|s| s.w0)) {
        Some(w0) => {
            let sigma = a
                .separation_sigma
                .or(c.separation.map(|s| s.sigma))
                .unwrap_or(qcanet_gpu::train::Separation::DEFAULT_SIGMA);
            c.separation = Some(qcanet_gpu::train::Separation { w0, sigma });
        }
        None if a.separation_sigma.is_some() => {
            anyhow::bail!("--separation-sigma needs --separation-weight (or a [separation] table in --config)")
        }
        None => {}
    }
    match a.small_nucleus_weight.or(c.small_nuclei.map(|s| s.weight)) {
        Some(weight) => {
            let volume_um3 = a
                .small_nucleus_volume
                .or(c.small_nuclei.map(|s| s.volume_um3))
                .unwrap_or(qcanet_gpu::train::SmallNuclei::DEFAULT_VOLUME_UM3);
            c.small_nuclei = Some(qcanet_gpu::train::SmallNuclei { weight, volume_um3 });
        }
        None if a.small_nucleus_volume.is_some() => {
            anyhow::bail!("--small-nucleus-volume needs --small-nucleus-weight (or a [small_nuclei] table in --config)")
        }
        None => {}
    }
    if let Some(v) = a.min_volume {
        c.min_volume_um3 = v;
    }
    if a.freeze_bn {
        c.freeze_bn = true;
    }
    c.validate()?;
    Ok(c)
}

pub fn run(g: &super::Global, a: Args) -> anyhow::Result<()> {
    let cfg = settings(&a)?;
    let ctx = g.context()?;
    let s = qcanet_gpu::train::run::run(&ctx, &cfg, a.resume, a.overwrite, true).context("training failed")?;
    let best = s.best_epoch.and_then(|e| s.records.iter().find(|r| r.epoch == e));
    match best {
        Some(r) => println!(
            "done: best validation epoch {} (instance F1 {:.4}, SEG {:.4}, marker F1 {:.4}, IoU {:.4}; NaN: not measured); weights in {}",
            r.epoch,
            r.val_f1,
            r.val_seg,
            r.val_detection,
            r.val_iou,
            s.out.join(qcanet_gpu::train::run::BEST).display()
        ),
        _ => println!("done; checkpoint in {}", s.out.join(qcanet_gpu::train::run::LAST).display()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        a: super::Args,
    }

    fn try_settings(args: &[&str]) -> anyhow::Result<qcanet_gpu::train::config::TrainConfig> {
        use clap::Parser;
        super::settings(&Cli::try_parse_from(std::iter::once("train").chain(args.iter().copied())).unwrap().a)
    }

    fn settings(args: &[&str]) -> qcanet_gpu::train::config::TrainConfig {
        try_settings(args).unwrap()
    }

    #[test]
    fn a_weight_flag_keeps_the_config_files_width_and_volume() {
        use qcanet_gpu::train::{Separation, SmallNuclei};
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.toml");
        std::fs::write(
            &p,
            "model = \"ndn\"\n[separation]\nw0 = 5.0\nsigma = 2.0\n[small_nuclei]\nweight = 3.0\nvolume_um3 = 100.0\n",
        )
        .unwrap();
        let p = p.to_str().unwrap();
        let c = settings(&["--config", p, "--separation-weight", "7", "--small-nucleus-weight", "4"]);
        assert_eq!(c.separation, Some(Separation { w0: 7.0, sigma: 2.0 }));
        assert_eq!(c.small_nuclei, Some(SmallNuclei { weight: 4.0, volume_um3: 100.0 }));
        let c = settings(&["--config", p, "--separation-weight", "7", "--separation-sigma", "1.5"]);
        assert_eq!(c.separation, Some(Separation { w0: 7.0, sigma: 1.5 }));
        let c = settings(&["--model", "ndn", "--small-nucleus-weight", "4", "--separation-weight", "7"]);
        assert_eq!(c.small_nuclei, Some(SmallNuclei { weight: 4.0, volume_um3: SmallNuclei::DEFAULT_VOLUME_UM3 }));
        assert_eq!(c.separation, Some(Separation { w0: 7.0, sigma: Separation::DEFAULT_SIGMA }));
        // A width or volume alone changes the config file's, and needs a weight from one or the other.
        let c = settings(&["--config", p, "--separation-sigma", "1.5", "--small-nucleus-volume", "60"]);
        assert_eq!(c.separation, Some(Separation { w0: 5.0, sigma: 1.5 }));
        assert_eq!(c.small_nuclei, Some(SmallNuclei { weight: 3.0, volume_um3: 60.0 }));
        let c = settings(&["--config", p]);
        assert_eq!(c.separation, Some(Separation { w0: 5.0, sigma: 2.0 }));
        assert_eq!(c.small_nuclei, Some(SmallNuclei { weight: 3.0, volume_um3: 100.0 }));
        for (flag, name) in
            [("--separation-sigma", "--separation-weight"), ("--small-nucleus-volume", "--small-nucleus-weight")]
        {
            let e = try_settings(&["--model", "ndn", flag, "2"]).unwrap_err().to_string();
            assert!(e.contains(flag) && e.contains(name), "{e}");
        }
    }
}
