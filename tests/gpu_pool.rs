//! The buffer pool (`src/gpu/pool.rs`) and the uniform arena: a storage
//! buffer whose tensors are
//! gone serves the next request of the same size, cleared where the caller
//! asked for zeros and only after the work already recorded has read it; a
//! network's second pass at the same shape creates no buffer, and a
//! training step reads nothing back before its end. Each test has
//! its own context, since the counts are per context.

mod common;

use std::sync::Arc;

use common::*;
use qcanet_gpu::gpu::pool::KEEP_FACTOR;
use qcanet_gpu::gpu::ContextOptions;
use qcanet_gpu::model::{bench_network, Arch, NetConfig};
use qcanet_gpu::ops::conv3d;
use qcanet_gpu::tensor::{rel_err, CpuTensor, Shape5};

fn own_context(reuse: bool) -> qcanet_gpu::gpu::GpuContext {
    let o = ContextOptions { no_buffer_reuse: !reuse, ..ContextOptions::from_env() };
    context(&o, false)
}

#[test]
fn a_free_buffer_is_reused_cleared_and_only_after_the_work_that_read_it() {
    let ctx = &own_context(true);
    let shape = Shape5::new(1, 3, 7, 11, 13);
    let data = CpuTensor::random(shape, 5, 0.5, 1.0);
    let a = ctx.upload(&data).unwrap();
    let a_ptr = Arc::as_ptr(&a.buf);
    // Recorded, not yet submitted: the copy must read a's values, not the
    // zeros the next request writes into the same buffer.
    let copied = ctx.copy(&a).unwrap();
    drop(a);
    let before = ctx.buffer_stats();
    let z = ctx.zeros(shape, "zeros").unwrap();
    let after = ctx.buffer_stats().since(&before);
    assert_eq!(Arc::as_ptr(&z.buf), a_ptr, "the freed buffer of the same size is reused");
    assert_eq!((after.created, after.reused), (0, 1), "{after:?}");
    assert_eq!(down(ctx, &copied).data, data.data, "the copy recorded before the reuse saw the old values");
    assert!(down(ctx, &z).data.iter().all(|&v| v == 0.0), "a reused buffer asked for as zeros is cleared");
    // Another size is a new buffer.
    let before = ctx.buffer_stats();
    let other = ctx.zeros(shape.with_c(4), "other").unwrap();
    assert_ne!(Arc::as_ptr(&other.buf), a_ptr);
    assert_eq!(ctx.buffer_stats().since(&before).created, 1);
}

#[test]
fn a_buffer_in_use_is_never_handed_out_again() {
    let ctx = &own_context(true);
    let shape = Shape5::new(1, 2, 5, 6, 7);
    let a = ctx.upload(&CpuTensor::random(shape, 1, -1.0, 1.0)).unwrap();
    // A clone of the tensor, or of its buffer alone, keeps it in use.
    let a_clone = a.clone();
    let buf_only = a.buf.clone();
    let held: Vec<_> = (0..3).map(|_| ctx.zeros(shape, "held").unwrap()).collect();
    drop(a);
    let b = ctx.zeros(shape, "b").unwrap();
    drop(a_clone);
    let c = ctx.zeros(shape, "c").unwrap();
    let mut ptrs: Vec<_> = held.iter().chain([&b, &c]).map(|t| Arc::as_ptr(&t.buf)).collect();
    ptrs.push(Arc::as_ptr(&buf_only));
    let n = ptrs.len();
    ptrs.sort();
    ptrs.dedup();
    assert_eq!(ptrs.len(), n, "two live tensors share a buffer");
    let s = ctx.buffer_stats();
    assert_eq!((s.created, s.reused), (6, 0), "{s:?}");
    assert_eq!(s.in_use_bytes, 6 * shape.numel() as u64 * 4);
    assert_eq!(ctx.live_bytes(), s.in_use_bytes);
}

#[test]
fn free_buffers_are_kept_up_to_twice_the_high_water_mark_or_not_at_all() {
    let elems = |k: usize| Shape5::new(1, 1, 1, 1, 1000 * k);
    for reuse in [true, false] {
        let ctx = &own_context(reuse);
        // A working set of 6,000 elements at once, then sizes of 1,000 to
        // 4,000 one at a time: all four fit in twice the high-water mark.
        let set: Vec<_> = (1..=3).map(|k| ctx.zeros(elems(k), "set").unwrap()).collect();
        drop(set);
        for k in 0..16 {
            drop(ctx.zeros(elems(k % 4 + 1), "small").unwrap());
        }
        let s = ctx.buffer_stats();
        if reuse {
            assert_eq!((s.created, s.reused, s.dropped), (4, 15, 0), "{s:?}");
        } else {
            assert_eq!((s.created, s.reused, s.dropped), (19, 0, 18), "{s:?}");
        }
        // Sizes of 1,000 to 12,000 elements: 78,000 if all were kept.
        for k in 0..48 {
            drop(ctx.zeros(elems(k % 12 + 1), "large").unwrap());
            let s = ctx.buffer_stats();
            let limit = if reuse { KEEP_FACTOR * s.high_water_bytes } else { 12000 * 4 };
            assert!(s.free_bytes <= limit, "reuse {reuse}: {s:?}");
        }
        let s = ctx.buffer_stats();
        println!("reuse {reuse}: {s:?}");
        assert_eq!(s.high_water_bytes, 12000 * 4, "{s:?}");
        if reuse {
            assert!(s.dropped > 0, "{s:?}");
        } else {
            assert_eq!(s.reused, 0, "{s:?}");
            assert_eq!(s.dropped, s.created - 1, "every buffer but the last one is handed back: {s:?}");
        }
        ctx.release_free_buffers();
        assert_eq!(ctx.buffer_stats().free_bytes, 0);
    }
}

#[test]
fn a_network_pass_at_the_same_shape_creates_no_buffer() {
    // The warm-up run creates the buffers; the timed ones (counted in the
    // last of them) only reuse them.
    let ctx = &own_context(true);
    let cfg = NetConfig { depth: 2, base: 4, ..NetConfig::preset(Arch::Nsn) };
    let b = bench_network(ctx, &cfg, 16, 1, 2).unwrap();
    println!("forward, fused forward, train step: {:?}; {:?}", b.counts, ctx.buffer_stats());
    for (what, c) in ["forward", "fused forward", "train step"].iter().zip(b.counts) {
        assert_eq!(c.buffers_created, 0, "{what}: {c:?}");
        assert!(c.buffers_reused > 0, "{what}: {c:?}");
    }
    // No host round trip inside: a forward pass is one submission and no
    // read; a training step reads only the loss the benchmark asks for
    // (the cross-entropy's target check no longer waits for the GPU).
    for c in &b.counts[..2] {
        assert_eq!((c.submits, c.reads), (1, 0), "{c:?}");
    }
    assert_eq!(b.counts[2].reads, 1, "{:?}", b.counts[2]);
    // The same without reuse creates every buffer again.
    let ctx = &own_context(false);
    let b = bench_network(ctx, &cfg, 16, 1, 1).unwrap();
    for c in b.counts {
        assert!(c.buffers_created > 0 && c.buffers_reused == 0, "{c:?}");
    }
}

#[test]
fn every_dispatch_reads_its_own_parameters_across_batches() {
    // The dispatches' parameters share one uniform buffer per batch, written
    // when the batch is submitted: 150 convolutions of different shapes
    // (about 300 dispatches, more than one batch), all recorded before any
    // is read back, each checked against the reference.
    let ctx = &own_context(true);
    let w = CpuTensor::random(Shape5::new(3, 2, 3, 3, 3), 2, -1.0, 1.0);
    let b = CpuTensor::random(Shape5::new(1, 3, 1, 1, 1), 3, -1.0, 1.0);
    let (gw, gb) = (ctx.upload(&w).unwrap(), ctx.upload(&b).unwrap());
    // Uploads first (each submits the batch before it), then only dispatches.
    let xs: Vec<_> = (0..150)
        .map(|i| CpuTensor::random(Shape5::new(1, 2, 1 + i % 3, 2 + i % 5, 3 + i % 7), 10 + i as u64, -1.0, 1.0))
        .map(|x| {
            let g = ctx.upload(&x).unwrap();
            (x, g)
        })
        .collect();
    let before = ctx.traffic();
    let runs: Vec<_> = xs.iter().map(|(x, g)| (x, conv3d::forward(ctx, g, &gw, &gb).unwrap())).collect();
    let t = ctx.traffic().since(&before);
    assert_eq!((t.submits, t.reads), (1, 0), "about 300 dispatches recorded: one batch submitted when full");
    for (x, y) in &runs {
        let want = conv3d::reference::forward(x, &w, &b);
        let e = rel_err(&down(ctx, y).data, &want.data);
        assert!(e < 1e-5, "{}: relative error {e}", x.shape);
    }
}
