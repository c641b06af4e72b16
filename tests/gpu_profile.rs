//! The kernel-time profile (`GpuContext::start_kernel_profile`): every
//! dispatch timed by device timestamps and summed; what `bench --only net`
//! prints beside the wall time. lavapipe has timestamp queries, so this
//! runs wherever the tests run.

mod common;

use std::time::Instant;

use common::*;
use qcanet_gpu::gpu::ContextOptions;
use qcanet_gpu::model::{bench_network, Arch, NetConfig};
use qcanet_gpu::ops::conv3d;
use qcanet_gpu::tensor::{CpuTensor, Shape5};

#[test]
fn dispatches_are_counted_and_their_time_fits_in_the_wall_time() {
    // Its own context: a profile counts every dispatch on its context, and
    // the tests of this file run at the same time.
    let ctx = &context(&ContextOptions::from_env(), true);
    assert!(ctx.has_timestamps(), "{}: no timestamp queries (lavapipe has them)", ctx.info.name);
    assert!(ctx.stop_kernel_profile().is_err(), "stop without a start");
    let x = ctx.upload(&CpuTensor::random(Shape5::new(1, 5, 13, 17, 19), 1, -1.0, 1.0)).unwrap();
    let w = ctx.upload(&CpuTensor::random(Shape5::new(7, 5, 3, 3, 3), 2, -1.0, 1.0)).unwrap();
    let b = ctx.upload(&CpuTensor::random(Shape5::new(1, 7, 1, 1, 1), 3, -1.0, 1.0)).unwrap();
    let run = |n: usize| {
        ctx.sync().unwrap();
        let t0 = Instant::now();
        ctx.start_kernel_profile().unwrap();
        assert!(ctx.start_kernel_profile().is_err(), "a second start while one runs");
        for _ in 0..n {
            drop(conv3d::forward(ctx, &x, &w, &b).unwrap());
        }
        let k = ctx.stop_kernel_profile().unwrap();
        (k, t0.elapsed().as_secs_f64())
    };
    let (k3, wall3) = run(3);
    let (k6, wall6) = run(6);
    println!(
        "3 convs: {} dispatches, {:.3} ms of {:.3} ms; 6: {} dispatches",
        k3.dispatches,
        k3.seconds * 1e3,
        wall3 * 1e3,
        k6.dispatches
    );
    // Each forward is the same dispatches (weight packing, the conv).
    assert!(k3.dispatches >= 6 && k3.dispatches % 3 == 0, "{k3:?}");
    assert_eq!(k6.dispatches, 2 * k3.dispatches);
    for (k, wall) in [(&k3, wall3), (&k6, wall6)] {
        assert!(k.seconds > 0.0 && k.seconds <= wall * 1.05, "{k:?} against {wall} s of wall time");
        // Split by kernel: each named once, the longest first, adding up
        // to the whole; one weight packing per forward.
        let names: Vec<&str> = k.by_kernel.iter().map(|s| s.kernel.as_str()).collect();
        assert!(names.iter().all(|n| n.contains("::")), "{names:?}");
        assert!(names.iter().enumerate().all(|(i, n)| !names[i + 1..].contains(n)), "{names:?}");
        assert!(k.by_kernel.windows(2).all(|p| p[0].seconds >= p[1].seconds), "{:?}", k.by_kernel);
        assert_eq!(k.by_kernel.iter().map(|s| s.dispatches).sum::<usize>(), k.dispatches);
        let sum: f64 = k.by_kernel.iter().map(|s| s.seconds).sum();
        assert!((sum - k.seconds).abs() <= 1e-9 * k.dispatches as f64 + 1e-12, "{sum} against {}", k.seconds);
        let pack =
            k.by_kernel.iter().find(|s| s.kernel.starts_with("conv3d::pack_weights")).expect("weight packing is timed");
        assert_eq!(pack.dispatches * (k3.dispatches / 3), k.dispatches, "{:?}", k.by_kernel);
    }
    // More than 512 queries (256 dispatches): a profile spans several query sets.
    let (k, wall) = run(300);
    assert_eq!(k.dispatches, 100 * k3.dispatches);
    assert!(k.seconds > 0.0 && k.seconds <= wall * 1.05, "{k:?} against {wall} s");
}

#[test]
fn network_benchmarks_report_the_kernels_own_time() {
    let ctx = &context(&ContextOptions::from_env(), true);
    let cfg = NetConfig { depth: 2, base: 4, ..NetConfig::preset(Arch::Nsn) };
    let b = bench_network(ctx, &cfg, 16, 1, 1).unwrap();
    let k = b.kernel_time.expect("lavapipe has timestamps");
    println!("{k:?}; wall {:.1} / {:.1} / {:.1} ms", b.forward_s * 1e3, b.fused_forward_s * 1e3, b.train_step_s * 1e3);
    for r in &k {
        assert!(r.kernels.dispatches > 0 && r.kernels.seconds > 0.0, "{r:?}");
        assert!(r.kernels.seconds <= r.wall_s * 1.05, "kernels longer than their run: {r:?}");
    }
    let n = k.each_ref().map(|r| r.kernels.dispatches);
    // Folding batch norm into the convs leaves fewer kernels; a training
    // step runs the forward and more.
    assert!(n[1] < n[0], "fused {} against op-by-op {}", n[1], n[0]);
    assert!(n[2] > n[0], "train step {} against forward {}", n[2], n[0]);
    // The step's split by kernel names the weight gradient's partial sums.
    let step = &k[2].kernels.by_kernel;
    assert!(
        step.iter().any(|s| s.kernel.ends_with("::weight_partials") || s.kernel.ends_with("::weight_unrolled")),
        "{step:?}"
    );
}
