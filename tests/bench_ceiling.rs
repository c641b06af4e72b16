//! The FMA-ceiling kernel of `bench`: it computes the chains it claims to
//! (so the compiler cannot have removed the work the rate counts), and the
//! measurement returns a finite rate. No timing is asserted.

mod common;

use qcanet_gpu::bench::{ceiling_reference_value, fma_ceiling, fma_ceiling_values};

#[test]
fn ceiling_kernel_matches_its_f64_reference() {
    let ctx = common::ctx();
    let groups = 5; // 320 invocations: every value of gid & 255 and a wrap-around
    let got = fma_ceiling_values(ctx, groups).unwrap();
    assert_eq!(got.len(), 320);
    for (i, &g) in got.iter().enumerate() {
        let r = ceiling_reference_value(i as u32);
        let rel = ((g as f64) - r).abs() / r.abs();
        assert!(rel < 1e-3, "invocation {i}: GPU {g}, reference {r} (relative error {rel:.2e}, tolerance 1e-3)");
    }
}

#[test]
fn ceiling_measurement_is_a_finite_rate() {
    let ctx = common::ctx();
    let c = fma_ceiling(ctx, 1).unwrap();
    assert!(c.gflops.is_finite() && c.gflops > 0.0, "rate {c:?}");
    assert!(c.workgroups >= 64 && c.run_ms > 0.0, "{c:?}");
}
