//! Parameter counts and shape rules of the network family (no GPU needed).

use qcanet_gpu::model::{Arch, Layout, NetConfig};
use qcanet_gpu::tensor::Shape5;

fn count(arch: Arch, classes: usize) -> usize {
    NetConfig { classes, ..NetConfig::preset(arch) }.param_count()
}

#[test]
fn published_parameter_counts() {
    assert_eq!(count(Arch::Nsn, 2), 1_147_618);
    assert_eq!(count(Arch::Nsn, 1), 1_147_585);
    assert_eq!(count(Arch::Unet3d, 2), 19_073_730);
    assert_eq!(count(Arch::Unet3d, 1), 19_073_665);
    assert_eq!(count(Arch::Ndn, 2), 44_450_498);
    assert_eq!(count(Arch::Ndn, 1), 44_450_473);
}

#[test]
fn layout_names_are_unique_and_init_is_seeded() {
    let cfg = NetConfig { depth: 2, base: 4, ..NetConfig::preset(Arch::Nsn) };
    let l = Layout::new(&cfg);
    let mut names: Vec<&str> = l.params.iter().chain(&l.buffers).map(|p| p.name.as_str()).collect();
    let n = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n, "duplicate tensor names");
    let a = l.init_params(7);
    let b = l.init_params(7);
    let c = l.init_params(8);
    assert_eq!(a, b);
    assert_ne!(a, c);
    // Conv weight bound 1/sqrt(fan_in): enc0.0 has fan_in 1·27.
    let bound = 1.0 / 27f32.sqrt();
    assert!(a[0].data.iter().all(|v| v.abs() <= bound));
    assert!(a[0].data.iter().any(|v| v.abs() > bound * 0.5));
}

#[test]
fn input_sides_must_divide() {
    let cfg = NetConfig::preset(Arch::Ndn);
    assert_eq!(cfg.side_multiple(), 16);
    assert!(cfg.check_input(Shape5::new(1, 1, 32, 48, 64)).is_ok());
    let e = cfg.check_input(Shape5::new(1, 1, 32, 40, 64)).unwrap_err().to_string();
    assert!(e.contains("multiples of 16"), "{e}");
    let e = cfg.check_input(Shape5::new(1, 2, 32, 32, 32)).unwrap_err().to_string();
    assert!(e.contains("channels"), "{e}");
    assert_eq!(NetConfig::preset(Arch::Nsn).foreground_channel(), 1);
    assert_eq!(NetConfig { classes: 1, ..NetConfig::preset(Arch::Nsn) }.foreground_channel(), 0);
}

#[test]
fn forward_flops_count_every_convolution_at_its_level() {
    // The paper's NSN (depth 2, base 16, 3³) on 64³, written out level by level.
    let v = 64f64.powi(3);
    let k3 = 27.0;
    let expected = 2.0
        * (v * k3 * (1.0 * 16.0 + 16.0 * 32.0) // encoder level 0
            + v / 8.0 * k3 * (32.0 * 32.0 + 32.0 * 64.0) // level 1
            + v / 64.0 * k3 * (64.0 * 64.0 + 64.0 * 128.0) // level 2
            + v / 64.0 * (128.0 * 128.0 * 8.0) // up from level 2
            + v / 8.0 * k3 * (192.0 * 64.0 + 64.0 * 64.0) // decoder to level 1
            + v / 8.0 * (64.0 * 64.0 * 8.0) // up from level 1
            + v * k3 * (96.0 * 32.0 + 32.0 * 32.0) // decoder to level 0
            + v * 32.0 * 2.0); // head
    let got = NetConfig::preset(Arch::Nsn).forward_flops(Shape5::new(1, 1, 64, 64, 64));
    assert!((got - expected).abs() < 1e-9 * expected, "{got} vs {expected}");
}
