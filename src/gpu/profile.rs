//! Kernel-time profile: a device timestamp at the start and the end of
//! every dispatch's compute pass, summed, so a whole pass over a network
//! can be split into the kernels' own GPU time and everything else
//! (launches, submissions, allocations, host round trips). Needs the
//! adapter's `TIMESTAMP_QUERY`; used by `bench`, never by inference.

use std::sync::Mutex;

use super::context::GpuContext;
use crate::error::{Error, Result};

/// Queries per query set (two per dispatch).
const QUERIES_PER_SET: u32 = 512;

/// The query sets of a running profile, each with its resolve buffer and
/// how many of its queries are written.
#[derive(Default)]
pub(crate) struct KernelProfile {
    sets: Vec<(wgpu::QuerySet, wgpu::Buffer, u32)>,
    /// The kernel (`shader::entry`) of each dispatch, in order.
    kernels: Vec<String>,
}

/// What [`GpuContext::stop_kernel_profile`] measured.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct KernelTime {
    /// Dispatches profiled.
    pub dispatches: usize,
    /// Sum over them of end minus start of their compute pass, in seconds.
    pub seconds: f64,
    /// The same split by kernel, the longest first.
    pub by_kernel: Vec<KernelShare>,
}

/// One kernel's part of a [`KernelTime`].
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct KernelShare {
    /// `shader::entry` (a generated kernel's shader name gives its shape).
    pub kernel: String,
    pub dispatches: usize,
    pub seconds: f64,
}

impl GpuContext {
    /// Starts timing every dispatch on this context, from any thread, until
    /// [`GpuContext::stop_kernel_profile`] (an error where the adapter has no
    /// timestamp queries, or when a profile is already running).
    pub fn start_kernel_profile(&self) -> Result<()> {
        if !self.has_timestamps() {
            return Err(Error::invalid(format!("{}: no timestamp queries, so no kernel times", self.info.name)));
        }
        let mut p = self.profile.lock().unwrap();
        if p.is_some() {
            return Err(Error::invalid("a kernel profile is already running"));
        }
        *p = Some(KernelProfile::default());
        Ok(())
    }

    /// The query set and first index for the next dispatch's pass, while a
    /// profile runs.
    pub(crate) fn profile_slot(&self, kernel: &str) -> Option<(wgpu::QuerySet, u32)> {
        let mut guard = self.profile.lock().unwrap();
        let p = guard.as_mut()?;
        p.kernels.push(kernel.to_string());
        if p.sets.last().is_none_or(|s| s.2 + 2 > QUERIES_PER_SET) {
            let qs = self.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kernel profile"),
                ty: wgpu::QueryType::Timestamp,
                count: QUERIES_PER_SET,
            });
            let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kernel profile timestamps"),
                size: QUERIES_PER_SET as u64 * 8,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            p.sets.push((qs, buf, 0));
        }
        let s = p.sets.last_mut().unwrap();
        let i = s.2;
        s.2 += 2;
        Some((s.0.clone(), i))
    }

    /// Stops the profile: waits for the work, reads the timestamps and sums
    /// each dispatch's duration.
    pub fn stop_kernel_profile(&self) -> Result<KernelTime> {
        let p = self.profile.lock().unwrap().take().ok_or_else(|| Error::invalid("no kernel profile is running"))?;
        let period = self.queue.get_timestamp_period() as f64;
        let (mut dispatches, mut ns) = (0usize, 0f64);
        let mut shares: Vec<KernelShare> = Vec::new();
        for (qs, buf, used) in &p.sets {
            if *used == 0 {
                continue;
            }
            self.record("kernel profile resolve", |enc| enc.resolve_query_set(qs, 0..*used, buf, 0))?;
            let raw = self.read_bytes(buf, 0, *used as u64 * 8)?;
            let ticks: &[u64] = bytemuck::cast_slice(&raw);
            for pair in ticks.chunks_exact(2) {
                let t = pair[1].saturating_sub(pair[0]) as f64 * period;
                ns += t;
                let kernel = &p.kernels[dispatches];
                match shares.iter_mut().find(|s| &s.kernel == kernel) {
                    Some(s) => {
                        s.dispatches += 1;
                        s.seconds += t * 1e-9;
                    }
                    None => shares.push(KernelShare { kernel: kernel.clone(), dispatches: 1, seconds: t * 1e-9 }),
                }
                dispatches += 1;
            }
        }
        shares.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        Ok(KernelTime { dispatches, seconds: ns * 1e-9, by_kernel: shares })
    }
}

/// The profile slot of a context (`None`: not profiling).
pub(crate) type ProfileSlot = Mutex<Option<KernelProfile>>;
