//! Max-pool (with ties and odd sides), channel concatenation and channel
//! softmax (with large logits): forward and backward against the CPU
//! references, finite-difference checks of the reference gradients, the split
//! path for tensors larger than one binding, and bad shapes.

mod common;
use common::*;
use qcanet_gpu::gpu::GpuContext;
use qcanet_gpu::ops::{concat, pool, softmax};
use qcanet_gpu::tensor::{CpuTensor, Shape5};

const SHAPE: Shape5 = Shape5::new(2, 3, 7, 9, 11);
const TOL: f64 = 1e-6;

/// Random values with ties: about a third of the values are drawn from
/// {-0.5, 0, 0.25, 0.5}, so many windows have several equal maxima.
fn with_ties(shape: Shape5, seed: u64) -> CpuTensor {
    let mut t = rand(shape, seed);
    let levels = [-0.5f32, 0.0, 0.25, 0.5];
    for (i, v) in t.data.iter_mut().enumerate() {
        let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(seed) >> 40;
        if h % 3 == 0 {
            *v = levels[(h / 3 % 4) as usize];
        }
    }
    t
}

fn check_pool(ctx: &GpuContext, x: &CpuTensor, what: &str) {
    let (y_ref, i_ref) = pool::reference::forward(x);
    let (y, idx) = pool::forward(ctx, &up(ctx, x)).unwrap();
    assert_eq!(idx.in_shape, x.shape);
    assert_eq!(idx.out_shape, y_ref.shape);
    assert_close(&format!("{what} pool forward"), &down(ctx, &y), &y_ref, TOL);
    let i_gpu = ctx.read_u32(&idx.buf, 0, y_ref.shape.numel()).unwrap();
    assert_eq!(i_gpu, i_ref, "{what}: argmax differs");
    let dy = rand(y_ref.shape, 99);
    let dx = down(ctx, &pool::backward(ctx, &idx, &up(ctx, &dy)).unwrap());
    let dx_ref = pool::reference::backward(&i_ref, x.shape, &dy);
    assert_close(&format!("{what} pool backward"), &dx, &dx_ref, TOL);
    // Exactly the argmax voxels are non-zero (dy has no zeros).
    let nz = |t: &CpuTensor| t.data.iter().filter(|&&v| v != 0.0).count();
    assert_eq!(nz(&dx), y_ref.shape.numel());
    assert_eq!(dx.data.iter().zip(&dx_ref.data).filter(|(a, b)| a != b).count(), 0, "{what}: pool backward not exact");
}

#[test]
fn pool_matches_reference_with_odd_sides_and_ties() {
    let ctx = ctx();
    // 7x9x11 pools to 3x4x5 (floor): the last plane, row and column are dropped.
    assert_eq!(pool::output_shape(SHAPE).unwrap(), Shape5::new(2, 3, 3, 4, 5));
    check_pool(ctx, &rand(SHAPE, 1), "random");
    let tied = with_ties(SHAPE, 2);
    let (_, idx) = pool::reference::forward(&tied);
    assert!(idx.iter().any(|&t| t != 0), "ties test needs maxima off the first tap too");
    check_pool(ctx, &tied, "ties");
    // All-equal windows (planes z = 0, 1 of every channel): the first tap (0) wins.
    let mut flat = rand(Shape5::new(1, 2, 4, 4, 4), 3);
    flat.data.iter_mut().enumerate().for_each(|(i, v)| *v = if i % 64 < 32 { 0.5 } else { *v });
    let (_, idx) = pool::reference::forward(&flat);
    assert!(idx.chunks(8).all(|c| c[..4].iter().all(|&t| t == 0)));
    check_pool(ctx, &flat, "flat");
    // Even sides and the smallest legal one.
    check_pool(ctx, &rand(Shape5::new(1, 5, 2, 6, 4), 4), "even");
    check_pool(ctx, &rand(Shape5::new(3, 1, 2, 3, 2), 5), "tiny");
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
fn pool_split_path() {
    // 1 KiB bindings: one 7x9x11 volume (2772 bytes) is too large for one
    // binding, a 4x5x6 one (480 bytes) fits two at a time.
    let ctx = capped_ctx(1024);
    let err = pool::forward(&ctx, &up(&ctx, &rand(SHAPE, 6))).unwrap_err().to_string();
    assert!(err.contains("storage binding"), "{err}");
    let x = with_ties(Shape5::new(2, 5, 4, 5, 6), 7);
    assert!(x.shape.bytes() > ctx.binding_limit());
    check_pool(&ctx, &x, "split");
}

#[test]
fn pool_reference_backward_matches_finite_differences() {
    // Distinct values (no ties), so the max is differentiable.
    let xs = Shape5::new(1, 2, 3, 4, 5);
    let mut x = rand(xs, 8);
    x.data.iter_mut().enumerate().for_each(|(i, v)| *v += i as f32 * 1e-3);
    let (y, idx) = pool::reference::forward(&x);
    let g = rand(y.shape, 9);
    let loss = |x: &CpuTensor| -> f64 {
        let (y, _) = pool::reference::forward(x);
        y.data.iter().zip(&g.data).map(|(&a, &b)| a as f64 * b as f64).sum()
    };
    let step = 1e-4; // below half the smallest gap between values of a window
    fd_check("pool fd", &pool::reference::backward(&idx, xs, &g), &x, step, 1e-3, loss);
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
}

#[test]
fn concat_matches_reference() {
    let ctx = ctx();
    let a = rand(SHAPE, 20);
    let b = rand(SHAPE.with_c(5), 21);
    let y_ref = concat::reference::forward(&a, &b);
    assert_eq!(y_ref.shape, SHAPE.with_c(8));
    let y = down(ctx, &concat::forward(ctx, &up(ctx, &a), &up(ctx, &b)).unwrap());
    assert_eq!(y.data, y_ref.data);
    let dy = rand(y_ref.shape, 22);
    let (da, db) = concat::backward(ctx, &up(ctx, &dy), 3).unwrap();
    let (da_ref, db_ref) = concat::reference::backward(&dy, 3);
    // Copies: exact.
    assert_eq!(down(ctx, &da), da_ref);
    assert_eq!(down(ctx, &db), db_ref);
    // The reference backward is the adjoint of the forward: <[a,b], dy> = <a, da> + <b, db>.
    let dot =
        |p: &CpuTensor, q: &CpuTensor| p.data.iter().zip(&q.data).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>();
    let lhs = dot(&y_ref, &dy);
    let rhs = dot(&a, &da_ref) + dot(&b, &db_ref);
    assert!((lhs - rhs).abs() < 1e-9 * lhs.abs().max(1.0), "{lhs} vs {rhs}");
}

#[test]
fn concat_larger_than_one_binding() {
    // Copies have no binding limit: check it under a 1 KiB cap anyway.
    let ctx = capped_ctx(1024);
    let a = rand(SHAPE.with_c(2), 23);
    let b = rand(SHAPE.with_c(3), 24);
    let y = down(&ctx, &concat::forward(&ctx, &up(&ctx, &a), &up(&ctx, &b)).unwrap());
    assert_eq!(y.data, concat::reference::forward(&a, &b).data);
    let (da, db) = concat::backward(&ctx, &up(&ctx, &y), 2).unwrap();
    assert_eq!(down(&ctx, &da).data, a.data);
    assert_eq!(down(&ctx, &db).data, b.data);
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

fn check_softmax(ctx: &GpuContext, x: &CpuTensor, what: &str) {
    let y_ref = softmax::reference::forward(x);
    let gy = softmax::forward(ctx, &up(ctx, x)).unwrap();
    let y = down(ctx, &gy);
    assert_close(&format!("{what} softmax forward"), &y, &y_ref, 1e-5);
    let dy = rand(x.shape, 31);
    let dx_ref = softmax::reference::backward(&y_ref, &dy);
    let dx = down(ctx, &softmax::backward(ctx, &up(ctx, &y_ref), &up(ctx, &dy)).unwrap());
    assert_close(&format!("{what} softmax backward"), &dx, &dx_ref, 1e-5);
}

#[test]
fn softmax_matches_reference() {
    let ctx = ctx();
    check_softmax(ctx, &CpuTensor::random(SHAPE.with_c(5), 30, -4.0, 4.0), "5 channels");
    check_softmax(ctx, &CpuTensor::random(SHAPE.with_c(2), 32, -4.0, 4.0), "2 channels");
    // Large-magnitude logits: naive exp would overflow to inf.
    let big = CpuTensor::random(SHAPE.with_c(5), 33, -1e4, 1e4);
    check_softmax(ctx, &big, "logits +-1e4");
    let y = down(ctx, &softmax::forward(ctx, &up(ctx, &big)).unwrap());
    assert!(y.data.iter().all(|v| v.is_finite()));
    // Shifted logits (all near 80) give the same probabilities as unshifted ones.
    let x = CpuTensor::random(SHAPE.with_c(3), 34, -2.0, 2.0);
    let mut shifted = x.clone();
    shifted.data.iter_mut().for_each(|v| *v += 100.0);
    let a = down(ctx, &softmax::forward(ctx, &up(ctx, &x)).unwrap());
    let b = down(ctx, &softmax::forward(ctx, &up(ctx, &shifted)).unwrap());
    assert_close("shift invariance", &b, &a, 1e-4);
}

#[test]
fn softmax_split_paths() {
    // 4 KiB bindings: a 7x9x11 volume (2772 bytes) fits, one sample of 5
    // channels does not, so the channel-group path with running statistics runs.
    let ctx = capped_ctx(4096);
    let x = CpuTensor::random(SHAPE.with_c(5), 35, -50.0, 50.0);
    assert!((5 * SHAPE.spatial() * 4) as u64 > ctx.binding_limit());
    check_softmax(&ctx, &x, "channel groups");
    // 3x4x5 volumes: whole samples (1680 bytes) fit, the batch does not: per-sample path.
    let x = CpuTensor::random(Shape5::new(3, 7, 3, 4, 5), 36, -5.0, 5.0);
    assert!(x.shape.bytes() > ctx.binding_limit());
    check_softmax(&ctx, &x, "per sample");
}

#[test]
fn softmax_reference_backward_matches_finite_differences() {
    let xs = Shape5::new(2, 4, 1, 2, 3);
    let x = CpuTensor::random(xs, 37, -2.0, 2.0);
    let g = rand(xs, 38);
    let loss = |x: &CpuTensor| -> f64 {
        softmax::reference::forward(x).data.iter().zip(&g.data).map(|(&a, &b)| a as f64 * b as f64).sum()
    };
    let y = softmax::reference::forward(&x);
    fd_check("softmax fd", &softmax::reference::backward(&y, &g), &x, 1e-2, 1e-3, loss);
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
