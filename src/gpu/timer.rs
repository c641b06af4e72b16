//! Timing of GPU work: device timestamps where the adapter has them
//! (`TIMESTAMP_QUERY_INSIDE_ENCODERS`), wall-clock around a full sync
//! otherwise. Used by benchmarks, never by tests.

use std::time::Instant;

use super::context::GpuContext;
use crate::error::{Error, Result};

/// How a [`GpuTimer`] measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum TimerKind {
    /// GPU timestamp queries around the recorded work.
    Timestamps,
    /// Host wall-clock from submission to completion.
    WallClock,
}

/// Times the GPU work recorded between [`GpuTimer::start`] and [`GpuTimer::stop`].
pub struct GpuTimer {
    queries: Option<(wgpu::QuerySet, wgpu::Buffer)>,
    started: Option<Instant>,
}

impl GpuTimer {
    pub fn new(ctx: &GpuContext) -> Self {
        let queries = ctx.features.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS).then(|| {
            let qs = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("bench timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let buf = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps"),
                size: 16,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            (qs, buf)
        });
        GpuTimer { queries, started: None }
    }

    pub fn kind(&self) -> TimerKind {
        if self.queries.is_some() {
            TimerKind::Timestamps
        } else {
            TimerKind::WallClock
        }
    }

    /// Waits for earlier work, then marks the start.
    pub fn start(&mut self, ctx: &GpuContext) -> Result<()> {
        ctx.sync()?;
        if let Some((qs, _)) = &self.queries {
            ctx.record("timestamp start", |enc| enc.write_timestamp(qs, 0))?;
        }
        self.started = Some(Instant::now());
        Ok(())
    }

    /// Marks the end, waits for the work, and returns its duration in seconds.
    pub fn stop(&mut self, ctx: &GpuContext) -> Result<f64> {
        let t0 = self.started.take().ok_or_else(|| Error::invalid("GpuTimer::stop without start"))?;
        match &self.queries {
            None => {
                ctx.sync()?;
                Ok(t0.elapsed().as_secs_f64())
            }
            Some((qs, buf)) => {
                ctx.record("timestamp stop", |enc| {
                    enc.write_timestamp(qs, 1);
                    enc.resolve_query_set(qs, 0..2, buf, 0);
                })?;
                let raw = ctx.read_bytes(buf, 0, 16)?;
                let ticks: &[u64] = bytemuck::cast_slice(&raw);
                let ns = ticks[1].saturating_sub(ticks[0]) as f64 * ctx.queue.get_timestamp_period() as f64;
                Ok(ns * 1e-9)
            }
        }
    }
}

/// Median of a non-empty list of durations.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        0.5 * (xs[n / 2 - 1] + xs[n / 2])
    }
}
