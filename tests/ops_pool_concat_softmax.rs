//! Max-pool, channel concatenation and channel softmax beyond the op table
//! (`tests/ops_table.rs` holds forward and backward to the references, exact
//! for pool and concat, on odd sides, ties, flat windows, large logits and the
//! split paths): that the table's pool inputs really have ties and flat
//! windows, the tie order, the adjoint of concat, softmax's shift
//! invariance, and bad shapes (the reference gradients of pool and softmax
//! against finite differences are in the table's `grad_cases`).

mod common;
use common::*;
use qcanet_gpu::ops::table::{flat_windows, with_ties};
use qcanet_gpu::ops::{concat, pool, softmax};
use qcanet_gpu::tensor::{CpuTensor, Shape5};

const SHAPE: Shape5 = Shape5::new(2, 3, 7, 9, 11);

#[test]
fn pool_table_inputs_have_ties_and_flat_windows() {
    // The op table's pool cases compare the GPU's argmax with the
    // reference's (through the exact backward); these inputs make that
    // comparison about ties.
    // 7x9x11 pools to 3x4x5 (floor): the last plane, row and column are dropped.
    assert_eq!(pool::output_shape(SHAPE).unwrap(), Shape5::new(2, 3, 3, 4, 5));
    let (_, idx) = pool::reference::forward(&with_ties(SHAPE, 5));
    assert!(idx.iter().any(|&t| t != 0), "ties test needs maxima off the first tap too");
    let flat = flat_windows(Shape5::new(1, 2, 4, 4, 4), 5);
    assert!(flat.data.iter().filter(|&&v| v == 0.5).count() >= 64);
    // All-equal windows (planes z = 0, 1 of every channel): the first tap (0) wins.
    let (_, idx) = pool::reference::forward(&flat);
    assert!(idx.chunks(8).all(|c| c[..4].iter().all(|&t| t == 0)));
}

#[test]
fn pool_ties_follow_z_y_x_order() {
    // One window, two maxima at taps 3 (z0, y1, x1) and 4 (z1, y0, x0): tap 3 wins.
    let x = CpuTensor::from_vec(Shape5::new(1, 1, 2, 2, 2), vec![0.1, -0.2, 0.3, 0.9, 0.9, 0.0, -0.5, 0.2]);
    let (_, i_ref) = pool::reference::forward(&x);
    assert_eq!(i_ref, vec![3]);
    let ctx = ctx();
    let (_, idx) = pool::forward(ctx, &up(ctx, &x)).unwrap();
    assert_eq!(ctx.read_u32(&idx.buf, 0, 1).unwrap(), vec![3]);
}

#[test]
fn pool_bad_shapes() {
    let ctx = ctx();
    for s in [Shape5::new(1, 1, 1, 4, 4), Shape5::new(1, 1, 4, 1, 4), Shape5::new(1, 1, 4, 4, 1)] {
        let e = pool::forward(ctx, &up(ctx, &rand(s, 10))).unwrap_err().to_string();
        assert!(e.contains(">= 2"), "{e}");
    }
    let (_, idx) = pool::forward(ctx, &up(ctx, &rand(SHAPE, 11))).unwrap();
    let e = pool::backward(ctx, &idx, &up(ctx, &rand(SHAPE, 12))).unwrap_err().to_string();
    assert!(e.contains("does not match"), "{e}");
    // 1 KiB bindings: one 7x9x11 volume (2772 bytes) is too large for one binding.
    let small = capped_ctx(1024);
    let err = pool::forward(&small, &up(&small, &rand(SHAPE, 6))).unwrap_err().to_string();
    assert!(err.contains("storage binding"), "{err}");
}

#[test]
fn concat_reference_backward_is_the_adjoint() {
    // <[a, b], dy> = <a, da> + <b, db>.
    let a = rand(SHAPE, 20);
    let b = rand(SHAPE.with_c(5), 21);
    let y = concat::reference::forward(&a, &b);
    assert_eq!(y.shape, SHAPE.with_c(8));
    let dy = rand(y.shape, 22);
    let (da, db) = concat::reference::backward(&dy, 3);
    let dot =
        |p: &CpuTensor, q: &CpuTensor| p.data.iter().zip(&q.data).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>();
    let lhs = dot(&y, &dy);
    let rhs = dot(&a, &da) + dot(&b, &db);
    assert!((lhs - rhs).abs() < 1e-9 * lhs.abs().max(1.0), "{lhs} vs {rhs}");
}

#[test]
fn concat_bad_shapes() {
    let ctx = ctx();
    let a = up(ctx, &rand(SHAPE, 25));
    let b = up(ctx, &rand(Shape5::new(2, 3, 7, 9, 10), 26));
    assert!(concat::forward(ctx, &a, &b).unwrap_err().to_string().contains("differ"));
    for c_a in [0, 3, 4] {
        assert!(concat::backward(ctx, &a, c_a).is_err(), "c_a = {c_a} must be rejected for 3 channels");
    }
}

#[test]
fn softmax_is_shift_invariant() {
    // Shifted logits (all near 100) give the same probabilities as unshifted ones.
    let ctx = ctx();
    let x = CpuTensor::random(SHAPE.with_c(3), 34, -2.0, 2.0);
    let mut shifted = x.clone();
    shifted.data.iter_mut().for_each(|v| *v += 100.0);
    let a = down(ctx, &softmax::forward(ctx, &up(ctx, &x)).unwrap());
    let b = down(ctx, &softmax::forward(ctx, &up(ctx, &shifted)).unwrap());
    assert_close("shift invariance", &b, &a, 1e-4);
}

#[test]
fn softmax_bad_shapes() {
    let ctx = ctx();
    let y = up(ctx, &rand(SHAPE, 40));
    let dy = up(ctx, &rand(SHAPE.with_c(2), 41));
    assert!(softmax::backward(ctx, &y, &dy).unwrap_err().to_string().contains("must match"));
    let big = capped_ctx(1024);
    let x = up(&big, &rand(SHAPE, 42));
    assert!(softmax::forward(&big, &x).unwrap_err().to_string().contains("storage binding"));
}
