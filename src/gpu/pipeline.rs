//! Shader sources, the compiled-pipeline cache, and dispatch.
//!
//! Every kernel is a WGSL file under `shaders/`, included at compile time by
//! the module that owns it as a [`ShaderSource`], or WGSL that an op
//! generates per shape ([`ShaderSource::generated`]). Pipelines are keyed by
//! (shader, entry point, override constants) and built once per context.
//!
//! Dispatch convention: kernels are launched over a 1-D range of workgroups
//! that [`grid`] folds into x and y (each ≤ 65535); a shader recovers its
//! linear workgroup index as `wid.x + wid.y * nwg.x` (`nwg` is the
//! `num_workgroups` builtin) and must bounds-check it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::buffer::Window;
use super::context::GpuContext;
use crate::error::{Error, Result};

/// A WGSL source file included at compile time.
#[derive(Clone, Copy, Debug)]
pub struct ShaderSource {
    /// File stem under `shaders/`, also the cache key.
    pub name: &'static str,
    pub wgsl: &'static str,
}

impl ShaderSource {
    /// The declaration `struct NAME { ... }` in this shader's text, for
    /// generated kernels that share a written shader's parameters (one
    /// definition for all modules). Panics if the shader declares no such
    /// struct: the names are the code's, not the user's.
    pub fn struct_decl(&self, name: &str) -> &'static str {
        let src = self.wgsl;
        let head = format!("struct {name} {{");
        let start = src.find(&head).unwrap_or_else(|| panic!("{}.wgsl declares {name}", self.name));
        let end = start + src[start..].find("\n}").expect("the struct ends") + 2;
        &src[start..end]
    }

    /// Another form of this shader, named `name`: `prefix` in front and each
    /// `(from, to)` replaced, where `from` (say an element alias, `alias act
    /// = f32;`) occurs exactly once, so one text holds the kernels of every
    /// form. Panics otherwise: the texts are the code's, not the user's.
    /// Callers build each form once (it is leaked).
    pub fn form(&self, name: &'static str, prefix: &str, replace: &[(&str, &str)]) -> ShaderSource {
        let mut wgsl = format!("{prefix}{}", self.wgsl);
        for (from, to) in replace {
            assert_eq!(wgsl.matches(from).count(), 1, "{}.wgsl holds `{from}` once", self.name);
            wgsl = wgsl.replacen(from, to, 1);
        }
        ShaderSource { name, wgsl: Box::leak(wgsl.into_boxed_str()) }
    }

    /// A shader generated at run time, built by `make` the first time
    /// `name` is asked for and kept for the process (`name` must say
    /// everything the text depends on: it is the key here and in the
    /// pipeline cache).
    pub fn generated(name: String, make: impl FnOnce() -> String) -> &'static ShaderSource {
        static CACHE: Mutex<Option<HashMap<String, &'static ShaderSource>>> = Mutex::new(None);
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        let map = cache.get_or_insert_with(HashMap::new);
        if let Some(s) = map.get(&name) {
            return s;
        }
        let s: &'static ShaderSource = Box::leak(Box::new(ShaderSource {
            name: Box::leak(name.clone().into_boxed_str()),
            wgsl: Box::leak(make().into_boxed_str()),
        }));
        map.insert(name, s);
        s
    }
}

/// `include_str!` a file from `shaders/` as a [`ShaderSource`];
/// `shader!("name", prelude)` puts `shaders/prelude.wgsl` (helpers shared by
/// several kernels, e.g. the workgroup `tree_sum`) in front of it.
#[macro_export]
macro_rules! shader {
    ($name:literal) => {
        $crate::gpu::ShaderSource {
            name: $name,
            wgsl: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/", $name, ".wgsl")),
        }
    };
    ($name:literal, prelude) => {
        $crate::gpu::ShaderSource {
            name: $name,
            wgsl: concat!(
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/prelude.wgsl")),
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/", $name, ".wgsl")),
            ),
        }
    };
}

/// One binding of a dispatch, in `@binding` order of group 0.
pub enum Arg<'a> {
    /// A storage buffer window (read-only or read-write, as the shader says).
    Buf(&'a Window),
    /// A whole buffer (must fit one binding).
    Whole(&'a wgpu::Buffer),
    /// Uniform bytes (a `#[repr(C)]` Pod struct cast with bytemuck).
    Uniform(&'a [u8]),
}

/// Largest workgroup count in one dispatch dimension.
pub const MAX_GRID_DIM: u32 = 65535;

/// Folds `n` workgroups into an (x, y, 1) grid with x, y ≤ 65535. Shaders see
/// extra workgroups when `n` is not a multiple of x and must skip them.
pub fn grid(n: u64) -> [u32; 3] {
    let n = n.max(1);
    if n <= MAX_GRID_DIM as u64 {
        return [n as u32, 1, 1];
    }
    let y = n.div_ceil(MAX_GRID_DIM as u64);
    let x = n.div_ceil(y);
    [x as u32, y as u32, 1]
}

/// A compiled pipeline and the `@binding`s of group 0 its entry point uses
/// (wgpu's derived layout drops the others, so dispatch binds only these).
pub struct Pipeline {
    pub raw: wgpu::ComputePipeline,
    pub used_bindings: Vec<u32>,
    /// `shader::entry`: the kernel's name in profiles.
    pub name: String,
}

/// The group-0 bindings that `entry` of `src` uses, found by naga.
fn used_bindings(src: &ShaderSource, entry: &str) -> Result<Vec<u32>> {
    let bad = |m: String| Error::Gpu { op: format!("shader {}::{entry}", src.name), message: m };
    let module = naga::front::wgsl::parse_str(src.wgsl).map_err(|e| bad(e.emit_to_string(src.wgsl)))?;
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .map_err(|e| bad(e.emit_to_string(src.wgsl)))?;
    let index =
        module.entry_points.iter().position(|e| e.name == entry).ok_or_else(|| bad("no such entry point".into()))?;
    let fi = info.get_entry_point(index);
    let mut used: Vec<u32> = module
        .global_variables
        .iter()
        .filter(|(h, _)| !fi[*h].is_empty())
        .filter_map(|(_, g)| g.binding.as_ref().filter(|b| b.group == 0).map(|b| b.binding))
        .collect();
    used.sort_unstable();
    Ok(used)
}

impl GpuContext {
    /// The compiled pipeline for `entry` of `src` with override `constants`,
    /// built on first use and cached.
    pub fn pipeline(&self, src: &ShaderSource, entry: &str, constants: &[(&str, f64)]) -> Result<Arc<Pipeline>> {
        self.pipeline_impl(src, entry, constants, false)
    }

    /// [`GpuContext::pipeline`] from a shader module built without runtime
    /// checks (`ShaderRuntimeChecks::unchecked()`: no index clamping of local
    /// arrays and buffers by naga, no loop-bounding counters, no integer
    /// division guards). Only for kernels that bounds-check every index
    /// themselves and whose loops provably terminate: each such kernel states
    /// this in its source. On lavapipe the loop counters naga adds to every
    /// loop cost measurable time in hot convolution loops, and buffer access
    /// stays robust there anyway (robustBufferAccess2 is handled by the driver).
    /// With [`crate::gpu::ContextOptions::checked_kernels`] the checks stay in.
    pub fn pipeline_trusted(
        &self,
        src: &ShaderSource,
        entry: &str,
        constants: &[(&str, f64)],
    ) -> Result<Arc<Pipeline>> {
        self.pipeline_impl(src, entry, constants, !self.checked_kernels)
    }

    fn pipeline_impl(
        &self,
        src: &ShaderSource,
        entry: &str,
        constants: &[(&str, f64)],
        trusted: bool,
    ) -> Result<Arc<Pipeline>> {
        let module_key = if trusted { format!("{}#trusted", src.name) } else { src.name.to_string() };
        let mut key = format!("{module_key}::{entry}");
        for (k, v) in constants {
            key.push_str(&format!(";{k}={v}"));
        }
        if let Some(p) = self.pipelines.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = {
            let mut mods = self.modules.lock().unwrap();
            match mods.get(module_key.as_str()) {
                Some(m) => m.clone(),
                None => {
                    let desc = wgpu::ShaderModuleDescriptor {
                        label: Some(src.name),
                        source: wgpu::ShaderSource::Wgsl(src.wgsl.into()),
                    };
                    let m = if trusted {
                        // SAFETY: only reached through `pipeline_trusted`, whose
                        // callers guarantee in-range indices and terminating loops.
                        unsafe {
                            self.device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
                        }
                    } else {
                        self.device.create_shader_module(desc)
                    };
                    // The cache is keyed by &'static str: trusted modules get a
                    // distinct key, leaked once per shader file (bounded).
                    let k: &'static str =
                        if trusted { Box::leak(module_key.clone().into_boxed_str()) } else { src.name };
                    mods.insert(k, m.clone());
                    m
                }
            }
        };
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&key),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu { op: format!("building pipeline {key}"), message: e.to_string() });
        }
        let name = format!("{}::{entry}", src.name);
        let p = Arc::new(Pipeline { raw: pipeline, used_bindings: used_bindings(src, entry)?, name });
        self.pipelines.lock().unwrap().insert(key, p.clone());
        Ok(p)
    }

    /// Number of pipelines built so far (for tests of the cache).
    pub fn pipeline_count(&self) -> usize {
        self.pipelines.lock().unwrap().len()
    }

    /// Records one dispatch of `pipeline` over `workgroups`; `args[i]` is
    /// `@binding(i)` of group 0 (bindings the entry point does not use are
    /// skipped). `label` names the op and shapes for errors.
    pub fn dispatch(&self, label: &str, pipeline: &Pipeline, args: &[Arg<'_>], workgroups: [u32; 3]) -> Result<()> {
        if let Some(&b) = pipeline.used_bindings.iter().find(|&&b| b as usize >= args.len()) {
            return Err(Error::Gpu {
                op: label.to_string(),
                message: format!("shader uses @binding({b}) but only {} arguments were given", args.len()),
            });
        }
        let used = |i: usize| pipeline.used_bindings.contains(&(i as u32));
        let layout = pipeline.raw.get_bind_group_layout(0);
        let profile = self.profile_slot(&pipeline.name);
        let align = (self.limits.min_uniform_buffer_offset_alignment as usize).max(16);
        // Under the batch's lock from the parameters' place in the uniform
        // arena to the recorded pass, so that they are written with the
        // batch the dispatch is submitted in.
        let full = {
            let mut guard = self.pending.lock().unwrap();
            let p = &mut *guard;
            // Each used uniform at its own aligned offset of the arena; in a
            // buffer of its own if the arena is full (parameters over 256 bytes).
            let mut placed: Vec<Option<(u64, u64)>> = vec![None; args.len()];
            let mut own: Vec<Option<wgpu::Buffer>> = (0..args.len()).map(|_| None).collect();
            for (i, a) in args.iter().enumerate() {
                if let Arg::Uniform(b) = a {
                    if !used(i) {
                        continue;
                    }
                    let len = b.len().div_ceil(16).max(1) * 16;
                    let off = p.uniforms.len().div_ceil(align) * align;
                    if (off + len) as u64 <= super::context::UNIFORM_ARENA_BYTES {
                        p.uniforms.resize(off, 0);
                        p.uniforms.extend_from_slice(b);
                        p.uniforms.resize(off + len, 0);
                        placed[i] = Some((off as u64, len as u64));
                    } else {
                        own[i] = Some(self.uniform(b));
                    }
                }
            }
            let entries: Vec<wgpu::BindGroupEntry<'_>> = args
                .iter()
                .enumerate()
                .filter(|(i, _)| used(*i))
                .map(|(i, a)| wgpu::BindGroupEntry {
                    binding: i as u32,
                    resource: match a {
                        Arg::Buf(w) => w.binding(),
                        Arg::Whole(b) => b.as_entire_binding(),
                        Arg::Uniform(_) => match placed[i] {
                            Some((offset, size)) => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: &self.uniform_arena,
                                offset,
                                size: std::num::NonZeroU64::new(size),
                            }),
                            None => own[i].as_ref().unwrap().as_entire_binding(),
                        },
                    },
                })
                .collect();
            let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(label),
                layout: &layout,
                entries: &entries,
            });
            let enc = p.encoder(&self.device);
            let timestamp_writes = profile.as_ref().map(|(qs, i)| wgpu::ComputePassTimestampWrites {
                query_set: qs,
                beginning_of_pass_write_index: Some(*i),
                end_of_pass_write_index: Some(*i + 1),
            });
            let mut pass =
                enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(label), timestamp_writes });
            pass.set_pipeline(&pipeline.raw);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
            drop(pass);
            p.recorded(label)
        };
        if full {
            self.flush()?;
        }
        Ok(())
    }
}
