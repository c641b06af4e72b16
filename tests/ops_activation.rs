//! ReLU, sigmoid and the per-channel reduction against their CPU references,
//! on odd shapes, with NaN-poisoned outputs, and through the split path.

mod common;
use common::*;
use qcanet_gpu::ops::{activation, reduce};
use qcanet_gpu::tensor::{CpuTensor, Shape5};

const SHAPE: Shape5 = Shape5::new(2, 3, 7, 9, 11);
const TOL: f64 = 1e-6;

#[test]
fn relu_and_sigmoid_forward_backward_match_reference() {
    let ctx = ctx();
    let x = CpuTensor::random(SHAPE, 1, -4.0, 4.0);
    let dy = rand(SHAPE, 2);
    let (gx, gdy) = (up(ctx, &x), up(ctx, &dy));
    assert_close(
        "relu fwd",
        &down(ctx, &activation::relu_forward(ctx, &gx).unwrap()),
        &activation::reference::relu_forward(&x),
        TOL,
    );
    assert_close(
        "relu bwd",
        &down(ctx, &activation::relu_backward(ctx, &gx, &gdy).unwrap()),
        &activation::reference::relu_backward(&x, &dy),
        TOL,
    );
    let y = activation::reference::sigmoid_forward(&x);
    assert_close("sigmoid fwd", &down(ctx, &activation::sigmoid_forward(ctx, &gx).unwrap()), &y, TOL);
    assert_close(
        "sigmoid bwd",
        &down(ctx, &activation::sigmoid_backward(ctx, &up(ctx, &y), &gdy).unwrap()),
        &activation::reference::sigmoid_backward(&y, &dy),
        TOL,
    );
}

#[test]
fn activation_outputs_are_fully_written() {
    // Every kernel writes a fresh output; poison a tensor and overwrite it to
    // prove the driver's windows cover every element.
    let ctx = ctx();
    let x = rand(SHAPE, 3);
    let out = poisoned(ctx, SHAPE);
    qcanet_gpu::ops::elementwise::map(ctx, &activation::SHADER, "relu_forward", &up(ctx, &x), None, &out).unwrap();
    assert_close("relu into poisoned", &down(ctx, &out), &activation::reference::relu_forward(&x), TOL);
}

#[test]
fn split_path_matches_with_tiny_binding_limit() {
    // 1 KiB bindings: each 7x9x11 channel (2772 bytes) is larger than one
    // binding for element-wise ops, which split anywhere.
    let ctx = capped_ctx(1024);
    assert!(
        ctx.binding_limit() <= 1024 || ctx.binding_limit() == 4 * ctx.limits.min_storage_buffer_offset_alignment as u64
    );
    let x = CpuTensor::random(SHAPE, 4, -3.0, 3.0);
    let gx = up(&ctx, &x);
    assert!(x.shape.bytes() > ctx.binding_limit());
    assert_close(
        "sigmoid split",
        &down(&ctx, &activation::sigmoid_forward(&ctx, &gx).unwrap()),
        &activation::reference::sigmoid_forward(&x),
        TOL,
    );
}

#[test]
fn channel_sum_matches_reference_and_is_deterministic() {
    let ctx = ctx();
    for (shape, seed) in [(SHAPE, 5u64), (Shape5::new(3, 5, 17, 19, 23), 6), (Shape5::new(1, 2, 1, 1, 1), 7)] {
        let x = rand(shape, seed);
        let gx = up(ctx, &x);
        let a = down(ctx, &reduce::channel_sum(ctx, &gx).unwrap());
        let b = down(ctx, &reduce::channel_sum(ctx, &gx).unwrap());
        assert_close(&format!("channel_sum {shape}"), &a, &reduce::reference::channel_sum(&x), 1e-5);
        assert_eq!(a.data, b.data, "channel_sum must be bit-identical across runs");
    }
}

#[test]
fn channel_sum_split_path() {
    // 4 KiB bindings: 17x19x23 channels (29716 bytes) exceed it, so a channel group
    // cannot hold one channel: the op must say so clearly...
    let ctx = capped_ctx(4096);
    let x = rand(Shape5::new(2, 3, 17, 19, 23), 8);
    let err = reduce::channel_sum(&ctx, &up(&ctx, &x)).unwrap_err().to_string();
    assert!(err.contains("storage binding"), "{err}");
    // ...while channels that fit are grouped under the cap.
    let x = rand(Shape5::new(2, 5, 7, 9, 11), 9);
    assert!(x.shape.bytes() > ctx.binding_limit());
    assert_close(
        "channel_sum split",
        &down(&ctx, &reduce::channel_sum(&ctx, &up(&ctx, &x)).unwrap()),
        &reduce::reference::channel_sum(&x),
        1e-5,
    );
}

#[test]
fn add_matches_reference() {
    let ctx = ctx();
    let (a, b) = (rand(SHAPE, 30), rand(SHAPE, 31));
    let got = down(ctx, &qcanet_gpu::ops::elementwise::add(ctx, &up(ctx, &a), &up(ctx, &b)).unwrap());
    assert_close("add", &got, &qcanet_gpu::ops::elementwise::reference::add(&a, &b), TOL);
    let err = qcanet_gpu::ops::elementwise::add(ctx, &up(ctx, &a), &up(ctx, &rand(Shape5::new(1, 3, 7, 9, 11), 32)));
    assert!(err.is_err(), "shape mismatch must be an error");
}
