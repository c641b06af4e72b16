//! Tensors with an element type: f16 storage (upload, download, the cast
//! kernels) and f32 kernels refusing f16 tensors. The cast kernels' values
//! are checked against the reference in the op table (`ops_table.rs`).

mod common;
use common::*;
use qcanet_gpu::gpu::DType;
use qcanet_gpu::ops::variants::Need;
use qcanet_gpu::ops::{activation, cast, concat, conv3d};
use qcanet_gpu::tensor::{CpuTensor, Shape5};

/// lavapipe and the GPUs this project targets offer shader-f16; on an
/// adapter without it, the cast must say so (and these checks cannot run).
fn f16_or_its_error() -> bool {
    let c = ctx();
    if c.has_f16() {
        return true;
    }
    let x = up(c, &rand(Shape5::new(1, 1, 2, 3, 5), 1));
    let e = cast::to(c, &x, DType::F16).unwrap_err().to_string();
    assert!(e.contains("needs shader-f16"), "{e}");
    not_run_for_lack_of(c, Need::ShaderF16, "f16 storage");
    false
}

#[test]
fn f16_tensors_hold_half_the_bytes_and_round_trip() {
    if !f16_or_its_error() {
        return;
    }
    let c = ctx();
    // An odd element count: the last f16 ends mid-word.
    let s = Shape5::new(1, 3, 3, 5, 7);
    let x = CpuTensor::random(s, 2, -3.0, 3.0);
    let h = cast::to(c, &up(c, &x), DType::F16).unwrap();
    assert_eq!((h.dtype, h.bytes()), (DType::F16, (s.numel() * 2) as u64));
    assert!(h.buf.size() < (s.numel() * 4) as u64);
    // Host upload rounds as the reference; the GPU may round the other way
    // by one f16 step (2^-11 relative).
    let want = cast::reference::round_f16(&x);
    let got = down(c, &h);
    for (g, (w, v)) in got.data.iter().zip(want.data.iter().zip(&x.data)) {
        assert!((g - w).abs() <= v.abs() * 2f32.powi(-10), "{g} vs {w} (from {v})");
    }
    let hu = c.upload_as(&x, DType::F16).unwrap();
    assert_eq!(down(c, &hu).data, want.data);
    // Back to f32 is exact; a copy keeps the type.
    let back = cast::to(c, &hu, DType::F32).unwrap();
    assert_eq!(back.dtype, DType::F32);
    assert_eq!(down(c, &back).data, want.data);
    let copy = c.copy(&hu).unwrap();
    assert_eq!((copy.dtype, down(c, &copy).data), (DType::F16, want.data.clone()));
    // A new f16 tensor is poisoned with f16 NaN in tests, every element.
    let e = c.empty_as(s, DType::F16, "poisoned").unwrap();
    assert!(down(c, &e).data.iter().all(|v| v.is_nan()));
}

#[test]
fn f32_kernels_refuse_f16_tensors() {
    if !f16_or_its_error() {
        return;
    }
    let c = ctx();
    let s = Shape5::new(1, 2, 3, 4, 5);
    let h = c.upload_as(&rand(s, 3), DType::F16).unwrap();
    let f = up(c, &rand(s, 4));
    let e = activation::relu_forward(c, &h).unwrap_err().to_string();
    assert!(e.contains("f16 tensor") && e.contains("reads f32"), "{e}");
    let e = concat::forward(c, &f, &h).unwrap_err().to_string();
    assert!(e.contains("f16 tensor") && e.contains("f32"), "{e}");
    let w = up(c, &rand(Shape5::new(3, 2, 3, 3, 3), 5));
    let b = up(c, &rand(Shape5::new(1, 3, 1, 1, 1), 6));
    // The conv takes f16 activations (f16 storage, f32 sums; its values are
    // checked in the op table) but only f32 weights, and its input gradient
    // is f32 only.
    let y = conv3d::forward(c, &h, &w, &b).unwrap();
    assert_eq!((y.dtype, y.shape), (DType::F16, Shape5::new(1, 3, 3, 4, 5)));
    let w16 = c.upload_as(&rand(Shape5::new(3, 2, 3, 3, 3), 5), DType::F16).unwrap();
    let e = conv3d::forward(c, &f, &w16, &b).unwrap_err().to_string();
    assert!(e.contains("must be f32"), "{e}");
    let e = conv3d::forward(c, &h, &w16, &b).unwrap_err().to_string();
    assert!(e.contains("must be f32"), "{e}");
    let e = conv3d::forward_fused(c, &[&h, &f], &up(c, &rand(Shape5::new(3, 4, 3, 3, 3), 7)), &b, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("mix f16 and f32"), "{e}");
    let e = conv3d::backward_input(c, &y, &w).unwrap_err().to_string();
    assert!(e.contains("f32 only"), "{e}");
}
