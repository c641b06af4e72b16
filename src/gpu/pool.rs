//! The storage buffers a context made, kept for reuse.
//!
//! Every storage buffer stays in the pool after its tensors are gone. It is
//! *in use* while anything besides the pool holds it (a tensor, a window, a
//! volume: `Arc::strong_count > 1`) and *free* once only the pool does. A
//! request for a buffer of the same byte size takes a free one instead of
//! asking the driver for memory, so a network's second forward pass or
//! training step at the same shape creates no buffer at all: on a real GPU a
//! large buffer is a driver allocation of its own, and wgpu zero-fills it
//! before first use.
//!
//! Sizes must match exactly (rounded to 4 bytes, as every storage buffer
//! is), so a reused buffer is indistinguishable from a new one except for its
//! contents, which [`super::GpuContext::create_storage`] clears on the GPU
//! (ordered after the work already recorded) unless the caller overwrites
//! them. The work recorded before a buffer was freed still reads its old
//! contents: one queue, recorded in order, with wgpu's barriers between
//! passes.
//!
//! Free buffers are kept up to [`KEEP_FACTOR`] times the most bytes ever in
//! use at once (so the pool at most triples the working set's footprint,
//! and a steady loop needs nothing new) and dropped oldest first beyond
//! that; all free buffers are dropped and the allocation retried when the
//! adapter runs out of memory.

use std::sync::Arc;

/// What the pool has done since the context was made (see
/// [`super::GpuContext::buffer_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BufferStats {
    /// Storage buffers asked of the driver.
    pub created: u64,
    /// Requests served by a free buffer of the same size.
    pub reused: u64,
    /// Free buffers handed back to the driver (over the keep limit, out of
    /// memory, or reuse off).
    pub dropped: u64,
    /// Bytes of buffers in use now.
    pub in_use_bytes: u64,
    /// Bytes of free buffers kept now.
    pub free_bytes: u64,
    /// Most bytes in use at once since the context was made.
    pub high_water_bytes: u64,
}

impl BufferStats {
    /// `self - before` for the counters (`created`, `reused`, `dropped`);
    /// the byte figures are `self`'s.
    pub fn since(&self, before: &BufferStats) -> BufferStats {
        BufferStats {
            created: self.created - before.created,
            reused: self.reused - before.reused,
            dropped: self.dropped - before.dropped,
            ..*self
        }
    }
}

/// All storage buffers of one context, in use or free.
#[derive(Default)]
pub(crate) struct BufferPool {
    /// Oldest first.
    bufs: Vec<Arc<wgpu::Buffer>>,
    created: u64,
    reused: u64,
    dropped: u64,
    /// Most bytes in use at once since the context was made: the keep limit.
    high_water: u64,
}

/// Free bytes kept, in multiples of the most bytes ever in use at once.
/// Sizes must match exactly, so a loop needs more than its high-water mark
/// to reuse everything: 1.5× for a small NSN's training step
/// (`tests/gpu_pool.rs`).
pub const KEEP_FACTOR: u64 = 2;

fn is_free(b: &Arc<wgpu::Buffer>) -> bool {
    Arc::strong_count(b) == 1
}

impl BufferPool {
    pub(crate) fn in_use_bytes(&self) -> u64 {
        self.bufs.iter().filter(|b| !is_free(b)).map(|b| b.size()).sum()
    }

    pub(crate) fn free_bytes(&self) -> u64 {
        self.bufs.iter().filter(|b| is_free(b)).map(|b| b.size()).sum()
    }

    pub(crate) fn stats(&self) -> BufferStats {
        BufferStats {
            created: self.created,
            reused: self.reused,
            dropped: self.dropped,
            in_use_bytes: self.in_use_bytes(),
            free_bytes: self.free_bytes(),
            high_water_bytes: self.high_water,
        }
    }

    /// A free buffer of exactly `size` bytes, now in use (the oldest such),
    /// and the bytes in use with it.
    pub(crate) fn take(&mut self, size: u64) -> Option<(Arc<wgpu::Buffer>, u64)> {
        let b = self.bufs.iter().find(|b| b.size() == size && is_free(b))?.clone();
        self.reused += 1;
        Some((b, self.note_in_use()))
    }

    /// Adds a buffer just created (in use by the caller's clone); returns
    /// the bytes in use.
    pub(crate) fn insert(&mut self, buf: Arc<wgpu::Buffer>) -> u64 {
        self.created += 1;
        self.bufs.push(buf);
        self.note_in_use()
    }

    /// Drops free buffers, oldest first, until at most `keep` bytes of them
    /// remain.
    pub(crate) fn trim_to(&mut self, keep: u64) {
        let mut free = self.free_bytes();
        if free <= keep {
            return;
        }
        let mut dropped = 0;
        self.bufs.retain(|b| {
            if free > keep && is_free(b) {
                free -= b.size();
                dropped += 1;
                false
            } else {
                true
            }
        });
        self.dropped += dropped;
    }

    /// Room for a new buffer of `size` bytes: free buffers beyond the keep
    /// limit (the high-water mark of bytes in use, or nothing when `reuse`
    /// is off) are dropped first.
    pub(crate) fn make_room(&mut self, size: u64, reuse: bool) {
        let keep = if reuse { (KEEP_FACTOR * self.high_water).saturating_sub(size) } else { 0 };
        self.trim_to(keep);
    }

    fn note_in_use(&mut self) -> u64 {
        let in_use = self.in_use_bytes();
        self.high_water = self.high_water.max(in_use);
        in_use
    }
}
