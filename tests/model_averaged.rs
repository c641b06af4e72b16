//! Averaged networks (ensembles): the file holds every member, loading gives
//! them back bit for bit, prediction is the mean of the members', networks
//! prepared differently are refused, and training will not start from one.

mod common;

use std::path::Path;

use qcanet_gpu::infer::predictors::{load_averaged, NetPredictor};
use qcanet_gpu::infer::tiles::Predictor;
use qcanet_gpu::model::weights::{read_weights, MEMBERS_KEY};
use qcanet_gpu::model::{Arch, NetConfig, Network, WeightsMeta};
use qcanet_gpu::preprocess::Normalization;
use qcanet_gpu::tensor::Shape5;

fn meta(arch: Arch, base: usize) -> WeightsMeta {
    WeightsMeta {
        config: NetConfig { arch, depth: 1, base, kernel: 3, in_channels: 1, classes: 2 },
        normalization: Normalization::default(),
        isotropic: true,
        pixel_um: None,
        trained_on: format!("nothing (random init, base {base}, test)"),
        epochs: 0,
        val_iou: None,
        threshold: None,
        marker_dynamic: None,
        extent_threshold: None,
        min_volume_um3: None,
        label_unmarked: None,
    }
}

/// Three NSNs of different widths and seeds saved in `dir`; returns their paths.
fn three(dir: &Path) -> Vec<std::path::PathBuf> {
    let ctx = common::ctx();
    [(4, 1), (6, 2), (4, 3)]
        .iter()
        .map(|&(base, seed)| {
            let p = dir.join(format!("nsn-{base}-{seed}.safetensors"));
            Network::new(ctx, meta(Arch::Nsn, base), seed).unwrap().save(ctx, &p).unwrap();
            p
        })
        .collect()
}

#[test]
fn an_averaged_network_round_trips_and_predicts_the_mean_of_its_members() {
    let ctx = common::ctx();
    let dir = tempfile::tempdir().unwrap();
    let paths = three(dir.path());
    let mut avg = load_averaged(ctx, &paths, Arch::Nsn).unwrap();
    assert_eq!(avg.members.len(), 2);
    avg.meta.threshold = Some(0.37);
    let file = dir.path().join("avg.safetensors");
    avg.save(ctx, &file).unwrap();

    // Every member's tensors come back as they were saved, the metadata too.
    let back = Network::load(ctx, &file).unwrap();
    assert_eq!(back.members.len(), 2);
    assert_eq!(back.meta.threshold, Some(0.37));
    for (a, b) in avg.all().zip(back.all()) {
        assert_eq!(a.config(), b.config());
        assert_eq!(a.net.params_to_host(ctx).unwrap(), b.net.params_to_host(ctx).unwrap());
        assert_eq!(a.net.buffers_to_host(ctx).unwrap(), b.net.buffers_to_host(ctx).unwrap());
    }
    let host = read_weights(&file).unwrap();
    assert!(host.rest.metadata.contains_key(MEMBERS_KEY));
    assert!(host.rest.tensors.is_empty(), "no tensor left over: {:?}", host.rest.tensors.keys());

    // The ensemble's tile is the mean of the members' own predictions
    // (op by op, batch norm not folded) on a random input of an odd size.
    let shape = Shape5::new(1, 1, 6, 10, 14);
    let x = common::rand(shape, 5);
    let xg = common::up(ctx, &x);
    let mut mean = vec![0f64; 2 * shape.d * shape.h * shape.w];
    for n in back.all() {
        let y = common::down(ctx, &n.predict(ctx, &xg).unwrap());
        mean.iter_mut().zip(&y.data).for_each(|(m, v)| *m += *v as f64 / 3.0);
    }
    let mut pred = NetPredictor::new(ctx, &back);
    assert_eq!(pred.side_multiple(), 2);
    let got = pred.predict_tile(&x).unwrap();
    assert_eq!(got.shape, Shape5::new(1, 2, 6, 10, 14));
    let err = got.data.iter().zip(&mean).map(|(g, m)| (*g as f64 - m).abs()).fold(0.0, f64::max);
    assert!(err < 1e-4, "ensemble tile differs from the members' mean by {err}");
    // Not just one member: the mean differs from the first network's own output.
    let first = common::down(ctx, &back.predict(ctx, &xg).unwrap());
    let diff = first.data.iter().zip(&mean).map(|(g, m)| (*g as f64 - m).abs()).fold(0.0, f64::max);
    assert!(diff > 1e-3, "the members did not change the prediction ({diff})");
}

#[test]
fn networks_prepared_differently_are_not_averaged() {
    let ctx = common::ctx();
    let dir = tempfile::tempdir().unwrap();
    let nsn = dir.path().join("nsn.safetensors");
    Network::new(ctx, meta(Arch::Nsn, 4), 1).unwrap().save(ctx, &nsn).unwrap();
    let mut other = meta(Arch::Nsn, 4);
    other.isotropic = false;
    let aniso = dir.path().join("aniso.safetensors");
    Network::new(ctx, other, 2).unwrap().save(ctx, &aniso).unwrap();
    let ndn = dir.path().join("ndn.safetensors");
    Network::new(ctx, meta(Arch::Ndn, 4), 3).unwrap().save(ctx, &ndn).unwrap();

    let e = load_averaged(ctx, &[nsn.clone(), aniso.clone()], Arch::Nsn).err().expect("refused").to_string();
    assert!(e.contains("aniso.safetensors") && e.contains("anisotropic"), "{e}");
    // Trained on another pixel size: another grid (an unrecorded size is the default, 0.8 µm).
    let mut fine = meta(Arch::Nsn, 4);
    fine.pixel_um = Some(0.4);
    let fine_path = dir.path().join("fine.safetensors");
    Network::new(ctx, fine, 4).unwrap().save(ctx, &fine_path).unwrap();
    let e = load_averaged(ctx, &[nsn.clone(), fine_path], Arch::Nsn).err().expect("refused").to_string();
    assert!(e.contains("fine.safetensors") && e.contains("0.4 µm"), "{e}");
    let mut same = meta(Arch::Nsn, 4);
    same.pixel_um = Some(0.8);
    let same_path = dir.path().join("same.safetensors");
    Network::new(ctx, same, 5).unwrap().save(ctx, &same_path).unwrap();
    assert!(load_averaged(ctx, &[nsn.clone(), same_path], Arch::Nsn).is_ok());
    // An NDN among NSNs is refused by the architecture check, naming it.
    let e = load_averaged(ctx, &[nsn.clone(), ndn.clone()], Arch::Nsn).err().expect("refused").to_string();
    assert!(e.contains("ndn.safetensors") && e.contains("NDN"), "{e}");
}

#[test]
fn training_does_not_start_from_an_averaged_file() {
    let ctx = common::ctx();
    let dir = tempfile::tempdir().unwrap();
    let paths = three(dir.path());
    let file = dir.path().join("avg.safetensors");
    load_averaged(ctx, &paths[..2], Arch::Nsn).unwrap().save(ctx, &file).unwrap();
    let exe = env!("CARGO_BIN_EXE_qcanet-gpu");
    let data = dir.path().join("data");
    let synth = std::process::Command::new(exe)
        .args(["synth", "--count", "3", "--validation", "1", "--nuclei", "2..3", "--seed", "1", "-o"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(synth.status.success(), "{}", String::from_utf8_lossy(&synth.stderr));
    let out = std::process::Command::new(exe)
        .args(["train", "--model", "nsn", "--epochs", "1", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("run"))
        .arg("--init")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("avg.safetensors") && err.contains("ensemble"), "{err}");
}
