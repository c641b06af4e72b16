//! A whole training run from files: output folder protection, checkpoints,
//! CSV log, plot, best weights loadable for inference, and --resume.

mod common;

use std::path::Path;

use qcanet_gpu::io;
use qcanet_gpu::model::{Arch, Network};
use qcanet_gpu::train::config::TrainConfig;
use qcanet_gpu::train::run::{read_log, run, BEST, BEST_F16, LAST, LOG, PLOT};

const DIMS: [usize; 3] = [8, 16, 12];

fn dataset(dir: &Path) {
    for sub in ["images_raw", "images_nsn", "images_ndn", "split_list"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let n: usize = DIMS.iter().product();
    for (name, seed) in [("a.tif", 1u32), ("b.tif", 2)] {
        let gt: Vec<u8> = (0..n)
            .map(|i| {
                let (z, y, x) = (i / 192, i / 12 % 16, i % 12);
                let c = 4 + seed as usize * 2;
                (((z as i32 - 4).pow(2) + (y as i32 - c as i32).pow(2) + (x as i32 - 6).pow(2)) < 12) as u8 * 255
            })
            .collect();
        let img: Vec<u16> =
            gt.iter().enumerate().map(|(i, &g)| 200 + g as u16 * 8 + ((i as u32 * 7919 + seed) % 50) as u16).collect();
        io::write_u16(&dir.join("images_raw").join(name), DIMS, &img, None).unwrap();
        io::write_u8(&dir.join("images_nsn").join(name), DIMS, &gt, None).unwrap();
        io::write_u8(&dir.join("images_ndn").join(name), DIMS, &gt, None).unwrap();
    }
    std::fs::write(dir.join("split_list/train.txt"), "a.tif\n").unwrap();
    std::fs::write(dir.join("split_list/validation.txt"), "b.tif\n").unwrap();
}

/// A one-epoch NSN run of two steps on [`dataset`] (written into `dir/data`), into `dir/run`.
fn tiny_nsn_run(dir: &Path) -> TrainConfig {
    dataset(&dir.join("data"));
    TrainConfig {
        model: Arch::Nsn,
        data: Some(dir.join("data")),
        out: Some(dir.join("run")),
        depth: Some(1),
        base: Some(2),
        patch: 8,
        epochs: 1,
        steps_per_epoch: 2,
        batch: 2,
        isotropic: false,
        val_tile: 16,
        val_overlap: 4,
        ..TrainConfig::default()
    }
}

#[test]
fn run_checkpoints_and_resumes() {
    let ctx = common::ctx();
    let d = tempfile::tempdir().unwrap();
    let cfg = tiny_nsn_run(d.path());
    let out = d.path().join("run");
    let s = run(ctx, &cfg, false, false, false).unwrap();
    assert_eq!(s.records.len(), 1);
    for f in [LAST, BEST, BEST_F16, LOG, PLOT, "config.toml"] {
        assert!(out.join(f).exists(), "{f} missing");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(out.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o644, "{f}: finished files are readable by all");
        }
    }
    // A second run into the same folder is refused unless asked.
    let e = run(ctx, &cfg, false, false, false).unwrap_err().to_string();
    assert!(e.contains("--resume") && e.contains("--overwrite"), "{e}");
    // Resume to epoch 2: the log continues.
    let cfg2 = TrainConfig { epochs: 2, ..cfg.clone() };
    let s2 = run(ctx, &cfg2, true, false, false).unwrap();
    // The summary holds the whole run: epoch 1 from the log, epoch 2 new.
    assert_eq!(s2.records.iter().map(|r| r.epoch).collect::<Vec<_>>(), vec![1, 2]);
    let log = read_log(&out.join(LOG)).unwrap();
    assert_eq!(log.iter().map(|r| r.epoch).collect::<Vec<_>>(), vec![1, 2]);
    // The best weights load for inference with their metadata, f32 and f16.
    for f in [BEST, BEST_F16] {
        let net = Network::load(ctx, &out.join(f)).unwrap();
        assert_eq!(net.meta.config.base, 2);
        assert!(net.meta.val_iou.is_some());
        assert!(net.meta.trained_on.contains("a.tif"));
        // The grid it learnt on, for infer: the default pixel.
        assert_eq!(net.meta.pixel_um, Some(qcanet_gpu::preprocess::DEFAULT_PIXEL_UM));
    }
    // --overwrite replaces the run.
    let s3 = run(ctx, &cfg, false, true, false).unwrap();
    assert_eq!(read_log(&out.join(LOG)).unwrap().len(), 1);
    assert_eq!(s3.records[0].epoch, 1);
    // A time limit stops after the first epoch that ends past it, with the
    // checkpoints of a finished epoch; a resume without it finishes the run.
    let timed = TrainConfig { epochs: 3, time_limit_minutes: Some(0.0), ..cfg.clone() };
    let s4 = run(ctx, &timed, false, true, false).unwrap();
    assert_eq!(s4.records.iter().map(|r| r.epoch).collect::<Vec<_>>(), vec![1]);
    assert!(out.join(BEST).exists() && out.join(LAST).exists());
    let s5 = run(ctx, &TrainConfig { time_limit_minutes: None, ..timed.clone() }, true, false, false).unwrap();
    assert_eq!(s5.records.iter().map(|r| r.epoch).collect::<Vec<_>>(), vec![1, 2, 3]);
    let e = run(ctx, &TrainConfig { time_limit_minutes: Some(-1.0), ..timed }, false, true, false).unwrap_err();
    assert!(e.to_string().contains("time limit"), "{e}");
    // A time budget already spent after the first step (a microsecond) ends
    // that epoch after one of its 4 steps, validated and checkpointed, and
    // runs no more of the 5 epochs; a resume counts that epoch's time, so it
    // runs one step of one more epoch.
    let budget = TrainConfig { epochs: 5, steps_per_epoch: 4, time_budget_minutes: Some(1e-6 / 60.0), ..cfg.clone() };
    let s6 = run(ctx, &budget, false, true, false).unwrap();
    assert_eq!(s6.records.iter().map(|r| (r.epoch, r.step)).collect::<Vec<_>>(), vec![(1, 1)]);
    assert!(s6.records[0].train_loss.is_finite() && s6.records[0].val_iou.is_finite(), "{:?}", s6.records[0]);
    assert!(out.join(BEST).exists() && out.join(LAST).exists());
    let s7 = run(ctx, &budget, true, false, false).unwrap();
    assert_eq!(s7.records.iter().map(|r| (r.epoch, r.step)).collect::<Vec<_>>(), vec![(1, 1), (2, 5)]);
    for m in [0.0, -1.0, f64::NAN] {
        let e =
            run(ctx, &TrainConfig { time_budget_minutes: Some(m), ..budget.clone() }, false, true, false).unwrap_err();
        assert!(e.to_string().contains("time budget"), "{m}: {e}");
    }
}

#[test]
fn a_failing_overwrite_or_resume_leaves_the_old_run_as_it_was() {
    let ctx = common::ctx();
    let d = tempfile::tempdir().unwrap();
    let cfg = tiny_nsn_run(d.path());
    let out = d.path().join("run");
    run(ctx, &cfg, false, false, false).unwrap();
    let files = [LAST, BEST, BEST_F16, LOG, PLOT, "config.toml"];
    let read = || files.map(|f| std::fs::read(out.join(f)).unwrap());
    let before = read();
    // --overwrite with weights that cannot be read, or a list naming a volume that is not there: refused, and
    // the run it would have replaced is still there.
    let missing = d.path().join("missing.safetensors");
    let e = run(ctx, &TrainConfig { init: Some(missing), ..cfg.clone() }, false, true, false).unwrap_err();
    assert!(e.to_string().contains("missing.safetensors"), "{e}");
    let list = d.path().join("list.txt");
    std::fs::write(&list, "not_there.tif\n").unwrap();
    let e = run(ctx, &TrainConfig { train_list: Some(list), ..cfg.clone() }, false, true, false).unwrap_err();
    assert!(e.to_string().contains("not_there.tif"), "{e}");
    assert!(read() == before, "the old run changed");
    // A resume whose log cannot be read is refused, naming it, instead of starting the history again.
    std::fs::write(out.join(LOG), "epoch,step\nnot,a,log\n").unwrap();
    let e = run(ctx, &TrainConfig { epochs: 2, ..cfg.clone() }, true, false, false).unwrap_err().to_string();
    assert!(e.contains("log.csv"), "{e}");
    assert_eq!(std::fs::read(out.join(LAST)).unwrap(), before[0]);
}

#[test]
fn weights_file_errors_name_tensor_and_file() {
    let ctx = common::ctx();
    let d = tempfile::tempdir().unwrap();
    // Not a safetensors file.
    let p = d.path().join("junk.safetensors");
    std::fs::write(&p, b"junk").unwrap();
    let e = Network::load(ctx, &p).err().unwrap().to_string();
    assert!(e.contains("junk.safetensors"), "{e}");
    // A weights file missing one tensor.
    let meta = qcanet_gpu::model::WeightsMeta {
        config: qcanet_gpu::model::NetConfig { depth: 1, base: 2, ..qcanet_gpu::model::NetConfig::preset(Arch::Nsn) },
        normalization: qcanet_gpu::preprocess::Normalization::MinMax,
        isotropic: true,
        pixel_um: None,
        trained_on: "test".into(),
        epochs: 0,
        val_iou: None,
        threshold: None,
        marker_dynamic: None,
        extent_threshold: None,
        min_volume_um3: None,
        label_unmarked: None,
    };
    let net = Network::new(ctx, meta.clone(), 0).unwrap();
    let good = d.path().join("good.safetensors");
    net.save(ctx, &good).unwrap();
    let mut f = qcanet_gpu::model::safetensors_file::read(&good).unwrap();
    f.tensors.remove("dec1.0.conv.weight");
    let layout = qcanet_gpu::model::Layout::new(&meta.config);
    let mut params = Vec::new();
    for s in &layout.params {
        if let Some((dims, data)) = f.tensors.get(&s.name) {
            let _ = dims;
            params.push((s.name.clone(), qcanet_gpu::tensor::CpuTensor::from_vec(s.shape, data.clone())));
        }
    }
    let bad = d.path().join("bad.safetensors");
    let named: Vec<(String, &qcanet_gpu::tensor::CpuTensor)> = params.iter().map(|(n, t)| (n.clone(), t)).collect();
    qcanet_gpu::model::safetensors_file::write(&bad, &named, false, f.metadata.clone()).unwrap();
    let e = Network::load(ctx, &bad).err().unwrap().to_string();
    assert!(e.contains("bad.safetensors") && e.contains("dec1.0.conv.weight"), "{e}");
    // Metadata no run writes and no network could use: refused on reading, naming the file.
    for (name, m, what) in [
        ("threshold.safetensors", qcanet_gpu::model::WeightsMeta { threshold: Some(5.0), ..meta.clone() }, "threshold"),
        ("pixel.safetensors", qcanet_gpu::model::WeightsMeta { pixel_um: Some(1e-4), ..meta.clone() }, "pixel size"),
        (
            "percent.safetensors",
            qcanet_gpu::model::WeightsMeta {
                normalization: qcanet_gpu::preprocess::Normalization::Percentile { low: 150.0, high: -3.0 },
                ..meta.clone()
            },
            "percentiles",
        ),
        ("floor.safetensors", qcanet_gpu::model::WeightsMeta { min_volume_um3: Some(-1.0), ..meta.clone() }, "volume"),
    ] {
        let p = d.path().join(name);
        Network::new(ctx, m, 0).unwrap().save(ctx, &p).unwrap();
        let e = Network::load(ctx, &p).err().unwrap().to_string();
        assert!(e.contains(name) && e.contains(what), "{what}: {e}");
    }
    // Round trip: saved and reloaded weights predict the same.
    let back = Network::load(ctx, &good).unwrap();
    let x = common::up(ctx, &common::rand(qcanet_gpu::tensor::Shape5::new(1, 1, 4, 6, 8), 3));
    let a = common::down(ctx, &net.predict(ctx, &x).unwrap());
    let b = common::down(ctx, &back.predict(ctx, &x).unwrap());
    assert_eq!(a, b);
}

#[test]
fn ndn_runs_score_marker_detection_and_old_logs_still_read() {
    let ctx = common::ctx();
    let d = tempfile::tempdir().unwrap();
    dataset(&d.path().join("data"));
    let out = d.path().join("run");
    let cfg = TrainConfig {
        model: Arch::Ndn,
        data: Some(d.path().join("data")),
        out: Some(out.clone()),
        depth: Some(1),
        base: Some(2),
        kernel: Some(3),
        patch: 8,
        epochs: 1,
        steps_per_epoch: 2,
        batch: 2,
        isotropic: false,
        dilate: Some(0),
        val_tile: 16,
        val_overlap: 4,
        ..TrainConfig::default()
    };
    let s = run(ctx, &cfg, false, false, false).unwrap();
    let det = s.records[0].val_detection;
    assert!((0.0..=1.0).contains(&det), "marker F1 {det}");
    let log = read_log(&out.join(LOG)).unwrap();
    assert!((log[0].val_detection - det).abs() < 1e-6, "{} vs {det}", log[0].val_detection);
    // A log of an earlier version (no detection column) still reads.
    let old = out.join("old.csv");
    std::fs::write(&old, "epoch,step,train_loss,val_loss,val_iou,seconds\n1,2,0.5,0.4,0.3,1.00\n").unwrap();
    let r = read_log(&old).unwrap();
    assert!(r[0].val_detection.is_nan() && (r[0].val_iou - 0.3).abs() < 1e-12, "{r:?}");
    // One with the instance columns but not the chosen setting's.
    std::fs::write(
        &old,
        "epoch,step,train_loss,val_loss,val_iou,seconds,val_detection_f1,val_f1,val_seg,val_inst_iou\n1,2,0.5,0.4,0.3,1.00,0.6,0.7,0.8,0.9\n",
    )
    .unwrap();
    let r = read_log(&old).unwrap();
    assert!((r[0].val_seg - 0.8).abs() < 1e-12 && r[0].val_threshold.is_nan(), "{r:?}");
}

/// The dataset above plus `labels_instance/` (one nucleus per volume).
fn dataset_with_instances(dir: &Path) {
    dataset(dir);
    std::fs::create_dir_all(dir.join("labels_instance")).unwrap();
    for name in ["a.tif", "b.tif"] {
        let v = io::read_volume(&dir.join("images_nsn").join(name)).unwrap();
        let l: Vec<u8> = v.data.iter().map(|&x| (x > 0.0) as u8).collect();
        io::write_u8(&dir.join("labels_instance").join(name), DIMS, &l, None).unwrap();
    }
}

#[test]
fn fine_tuning_starts_from_the_file_and_validates_by_instances() {
    let ctx = common::ctx();
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    dataset_with_instances(&data);
    let base = TrainConfig {
        data: Some(data.clone()),
        depth: Some(1),
        base: Some(2),
        patch: 8,
        epochs: 1,
        steps_per_epoch: 2,
        batch: 1,
        isotropic: false,
        val_tile: 16,
        val_overlap: 4,
        bn_recalibration: 0,
        ..TrainConfig::default()
    };
    // A small NSN and NDN to start from and to pair with.
    let nsn0 = d.path().join("nsn0");
    run(ctx, &TrainConfig { model: Arch::Nsn, out: Some(nsn0.clone()), ..base.clone() }, false, false, false).unwrap();
    let ndn0 = d.path().join("ndn0");
    run(ctx, &TrainConfig { model: Arch::Ndn, out: Some(ndn0.clone()), ..base.clone() }, false, false, false).unwrap();

    // Fine-tune the NSN with a negligible learning rate: it starts from the
    // file (the weights stay equal to it) and every epoch is scored through
    // the instance stage with the NDN.
    let out = d.path().join("ft");
    let ft = TrainConfig {
        model: Arch::Nsn,
        out: Some(out.clone()),
        init: Some(nsn0.join(LAST)),
        val_partner: Some(ndn0.join(BEST)),
        depth: None,
        base: None,
        lr: 1e-12,
        lr_final: Some(1e-12),
        ..base.clone()
    };
    let s = run(ctx, &ft, false, false, false).unwrap();
    let r = &s.records[0];
    for v in [r.val_f1, r.val_seg, r.val_inst_iou] {
        assert!((0.0..=1.0).contains(&v), "instance scores must be measured: {r:?}");
    }
    assert_eq!(r.key(), (r.val_f1, r.val_seg), "instance F1 ranks epochs");
    let log = read_log(&out.join(LOG)).unwrap();
    assert_eq!(log[0].val_f1.to_bits(), r.val_f1.to_bits(), "the log keeps the instance columns");
    // Scored at the best threshold of the grid (an NSN: no dynamic), which
    // the log and the kept checkpoint record.
    let grid = TrainConfig::default().val_thresholds;
    assert!(grid.iter().any(|&t| (t as f64 - r.val_threshold).abs() < 1e-6), "{r:?}");
    assert_eq!(r.val_dynamic, 0.0);
    assert!((log[0].val_threshold - r.val_threshold).abs() < 1e-6);
    let kept = Network::load(ctx, &out.join(BEST)).unwrap();
    assert_eq!(kept.meta.threshold, Some(r.val_threshold as f32));
    assert_eq!(kept.meta.marker_dynamic, None, "an NSN records no dynamic");
    assert_eq!(kept.meta.min_volume_um3, None, "nor a floor on object volume");
    // An NDN validated with the NSN records its dynamic and the floor it was chosen with.
    let ndn_ft = d.path().join("ndn-ft");
    let c = TrainConfig {
        model: Arch::Ndn,
        out: Some(ndn_ft.clone()),
        init: Some(ndn0.join(LAST)),
        val_partner: Some(nsn0.join(BEST)),
        min_volume_um3: 5.0,
        ..ft.clone()
    };
    run(ctx, &c, false, false, false).unwrap();
    let kept_ndn = Network::load(ctx, &ndn_ft.join(BEST)).unwrap();
    assert!(kept_ndn.meta.marker_dynamic.is_some());
    assert_eq!(kept_ndn.meta.min_volume_um3, Some(5.0));
    // Validated at one threshold: scored and recorded at it.
    let one = d.path().join("ft1");
    let s1 =
        run(ctx, &TrainConfig { out: Some(one.clone()), val_thresholds: vec![0.7], ..ft.clone() }, false, false, false)
            .unwrap();
    assert_eq!(s1.records[0].val_threshold, 0.7f32 as f64);
    assert_eq!(Network::load(ctx, &one.join(BEST)).unwrap().meta.threshold, Some(0.7));
    let a = Network::load(ctx, &nsn0.join(LAST)).unwrap().net.params_to_host(ctx).unwrap();
    let b = Network::load(ctx, &out.join(LAST)).unwrap().net.params_to_host(ctx).unwrap();
    for (x, y) in a.iter().zip(&b) {
        let m = x.data.iter().zip(&y.data).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        assert!(m < 1e-6, "weights moved by {m}: not started from --init");
    }

    // Refusals, each naming the problem.
    let e = |c: TrainConfig| run(ctx, &c, false, true, false).unwrap_err().to_string();
    let msg = e(TrainConfig { val_thresholds: vec![0.5, 1.2], ..ft.clone() });
    assert!(msg.contains("validation grid") && msg.contains("1.2"), "{msg}");
    let msg = e(TrainConfig { depth: Some(2), ..ft.clone() });
    assert!(msg.contains("depth") && msg.contains("--init"), "{msg}");
    let msg = e(TrainConfig { val_partner: Some(nsn0.join(BEST)), ..ft.clone() });
    assert!(msg.contains("--val-partner") && msg.contains("NDN"), "{msg}");
    let both = d.path().join("both.txt");
    std::fs::write(&both, "b.tif\n").unwrap();
    let msg = e(TrainConfig { train_list: Some(both.clone()), val_list: Some(both), ..ft.clone() });
    assert!(msg.contains("b.tif") && msg.contains("validation"), "{msg}");
    std::fs::remove_dir_all(data.join("labels_instance")).unwrap();
    let msg = e(ft.clone());
    assert!(msg.contains("labels_instance"), "{msg}");
}

#[test]
fn frozen_bn_fine_tuning_keeps_the_running_statistics() {
    let ctx = common::ctx();
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    dataset(&data);
    let base = TrainConfig {
        model: Arch::Nsn,
        data: Some(data.clone()),
        depth: Some(1),
        base: Some(2),
        patch: 8,
        epochs: 1,
        steps_per_epoch: 3,
        batch: 1,
        isotropic: false,
        val_tile: 16,
        val_overlap: 4,
        ..TrainConfig::default()
    };
    let n0 = d.path().join("n0");
    run(ctx, &TrainConfig { out: Some(n0.clone()), ..base.clone() }, false, false, false).unwrap();
    // Fine-tune with frozen batch norm: the weights move, the statistics
    // (which training and re-estimation would both change) stay bit for bit.
    let out = d.path().join("frozen");
    let ft = TrainConfig {
        out: Some(out.clone()),
        init: Some(n0.join(LAST)),
        depth: None,
        base: None,
        lr: 1e-2,
        bn_recalibration: 4,
        freeze_bn: true,
        ..base.clone()
    };
    run(ctx, &ft, false, false, false).unwrap();
    let a = Network::load(ctx, &n0.join(LAST)).unwrap().net;
    let b = Network::load(ctx, &out.join(LAST)).unwrap().net;
    let moved = a
        .params_to_host(ctx)
        .unwrap()
        .iter()
        .zip(&b.params_to_host(ctx).unwrap())
        .map(|(x, y)| x.data.iter().zip(&y.data).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max))
        .fold(0f32, f32::max);
    assert!(moved > 1e-4, "the weights did not move ({moved})");
    let (sa, sb) = (a.buffers_to_host(ctx).unwrap(), b.buffers_to_host(ctx).unwrap());
    assert!(sa.iter().any(|t| t.data.iter().any(|&v| v != 0.0 && v != 1.0)), "statistics never trained");
    for (x, y) in sa.iter().zip(&sb) {
        assert_eq!(x.data, y.data, "frozen batch norm changed the running statistics");
    }
}

#[test]
fn weight_average_is_validated_checkpointed_and_resumed() {
    use qcanet_gpu::model::weights::read_weights;
    use qcanet_gpu::train::run::{CheckpointInfo, AVERAGE_PREFIX, CHECKPOINT_KEY};
    let ctx = common::ctx();
    let d = tempfile::tempdir().unwrap();
    dataset(&d.path().join("data"));
    let base = TrainConfig {
        model: Arch::Nsn,
        data: Some(d.path().join("data")),
        out: Some(d.path().join("plain")),
        depth: Some(1),
        base: Some(2),
        patch: 8,
        epochs: 1,
        steps_per_epoch: 3,
        batch: 2,
        isotropic: false,
        val_tile: 16,
        val_overlap: 4,
        bn_recalibration: 2,
        seed: 5,
        ..TrainConfig::default()
    };
    let avg_out = d.path().join("averaged");
    let averaged = TrainConfig { out: Some(avg_out.clone()), weight_average: 0.5, ..base.clone() };
    run(ctx, &base, false, false, false).unwrap();
    run(ctx, &averaged, false, false, false).unwrap();
    let info = |p: &Path| -> CheckpointInfo {
        serde_json::from_str(&read_weights(p).unwrap().rest.metadata[CHECKPOINT_KEY]).unwrap()
    };
    let plain_last = read_weights(&d.path().join("plain").join(LAST)).unwrap();
    let last = read_weights(&avg_out.join(LAST)).unwrap();
    let best = read_weights(&avg_out.join(BEST)).unwrap();
    // Training is unchanged by the average: the same weights after the same steps.
    assert_eq!(last.params.len(), plain_last.params.len());
    for (a, b) in last.params.iter().zip(&plain_last.params) {
        assert_eq!(a.data, b.data, "the averaged run's training weights differ from the plain run's");
    }
    // The checkpoint keeps the average beside them; the best weights are the average.
    assert_eq!(info(&avg_out.join(LAST)).average_updates, Some(3));
    assert_eq!(info(&d.path().join("plain").join(LAST)).average_updates, None);
    assert!(plain_last.rest.tensors.keys().all(|k| !k.starts_with(AVERAGE_PREFIX)));
    let mut differs = false;
    for (i, (b, t)) in best.params.iter().zip(&last.params).enumerate() {
        let (dims, data) = &last.rest.tensors[&format!("{AVERAGE_PREFIX}{i}")];
        assert_eq!(dims.iter().product::<usize>(), b.data.len());
        assert_eq!(&b.data, data, "best.safetensors holds the average ({AVERAGE_PREFIX}{i})");
        differs |= b.data != t.data;
    }
    assert!(differs, "after 3 steps at decay 0.5 the average differs from the weights");
    // A resume continues the average from the checkpoint: 3 more updates.
    run(ctx, &TrainConfig { epochs: 2, ..averaged.clone() }, true, false, false).unwrap();
    assert_eq!(info(&avg_out.join(LAST)).average_updates, Some(6));
    // Bad settings are refused before anything runs.
    for (c, want) in [
        (TrainConfig { weight_average: 1.0, ..averaged.clone() }, "decay in [0, 1)"),
        (TrainConfig { weight_average: f32::NAN, ..averaged.clone() }, "decay in [0, 1)"),
        (TrainConfig { bn_recalibration: 0, ..averaged.clone() }, "bn_recalibration"),
    ] {
        let e = run(ctx, &c, false, true, false).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
}
