//! Element-wise ops and the per-channel reduction beyond the op table
//! (`tests/ops_table.rs` holds ReLU, sigmoid, `add` and `channel_sum` to
//! their references, NaN-poisoned, deterministic, on odd shapes and under
//! tiny binding limits): clear errors for a channel larger than a binding
//! and for mismatched shapes.

mod common;
use common::*;
use qcanet_gpu::ops::{elementwise, reduce};
use qcanet_gpu::tensor::Shape5;

const SHAPE: Shape5 = Shape5::new(2, 3, 7, 9, 11);

#[test]
fn channel_sum_of_a_channel_larger_than_a_binding_is_a_clear_error() {
    // 4 KiB bindings: 17x19x23 channels (29716 bytes) exceed it, so a channel
    // group cannot hold one channel (channels that fit are grouped: an op-table
    // case).
    let ctx = capped_ctx(4096);
    let x = rand(Shape5::new(2, 3, 17, 19, 23), 8);
    let err = reduce::channel_sum(&ctx, &up(&ctx, &x)).unwrap_err().to_string();
    assert!(err.contains("storage binding"), "{err}");
}

#[test]
fn add_of_different_shapes_is_an_error() {
    let ctx = ctx();
    let (a, b) = (rand(SHAPE, 30), rand(Shape5::new(1, 3, 7, 9, 11), 32));
    assert!(elementwise::add(ctx, &up(ctx, &a), &up(ctx, &b)).is_err(), "shape mismatch must be an error");
}
