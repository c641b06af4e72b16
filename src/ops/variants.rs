//! Kernel variants as data: for each op that has more than one kernel, its
//! variants in order of preference, each with the adapter capabilities it
//! needs ([`Need`]). An op asks [`Kernels::choose`] for its kernel at each
//! call: the variant forced for it on the context
//! ([`crate::gpu::ContextOptions::kernels`], `--gpu-kernel OP=NAME` on the
//! command line), else the first variant the adapter supports. Every op
//! has a variant that needs nothing (plain f32), so every adapter has one.
//!
//! The op table ([`crate::ops::table`]) checks every registered variant
//! against the op's CPU reference, and `bench` times them side by side.
//! A new variant (an f16 or cooperative-matrix kernel) is a shader or a set
//! of override constants, one entry in its op's list, and the capability it
//! needs.

use std::fmt;

use crate::error::{Error, Result};
use crate::gpu::GpuContext;

/// An adapter capability a kernel variant needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Need {
    /// `shader-f16` (f16 arithmetic and storage in WGSL).
    ShaderF16,
    /// Subgroup operations.
    Subgroups,
    /// Subgroup operations with at least 8 lanes in every subgroup (kernels
    /// that broadcast from lanes 0-7).
    Subgroups8,
    /// wgpu's experimental cooperative matrices with 16x16x16 f16 inputs and
    /// f32 sums (tensor cores), on a device opened with them
    /// ([`crate::gpu::ContextOptions::cooperative_matrix`]).
    CoopMatrix16F16,
    /// A CPU adapter (lavapipe, SwiftShader, WARP): not a capability but
    /// where a kernel written for CPU execution pays (and a GPU would
    /// spill it).
    CpuAdapter,
    /// Not a CPU adapter: where a work split sized for thousands of lanes
    /// pays (on 2 CPU cores the extra workgroups and partial sums cost).
    /// Where a preference rather than a capability: forcing such a variant
    /// on a CPU adapter is refused like any unmet need, but the op table
    /// checks its kernel on every adapter (through the kernel's own needs,
    /// `conv3d::WeightTile::needs`).
    GpuAdapter,
}

impl Need {
    pub const fn name(self) -> &'static str {
        match self {
            Need::ShaderF16 => "shader-f16",
            Need::Subgroups => "subgroups",
            Need::Subgroups8 => "subgroups of 8+ lanes",
            Need::CoopMatrix16F16 => "cooperative-matrix-16x16-f16",
            Need::CpuAdapter => "cpu-adapter",
            Need::GpuAdapter => "gpu-adapter",
        }
    }
    /// Whether the context's device was opened with this capability.
    pub fn met(self, ctx: &GpuContext) -> bool {
        match self {
            Need::ShaderF16 => ctx.has_f16(),
            Need::Subgroups => ctx.has_subgroups(),
            Need::Subgroups8 => ctx.has_subgroups() && ctx.info.subgroup_min_size >= 8,
            Need::CoopMatrix16F16 => ctx.has_coop_matrix_16_f16(),
            Need::CpuAdapter => ctx.is_cpu_adapter(),
            Need::GpuAdapter => !ctx.is_cpu_adapter(),
        }
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One kernel of an op: its name, what it needs, one line about it, and
/// what the op's driver needs to run it (`K`: a register tile, a shader
/// entry, …).
#[derive(Debug)]
pub struct Variant<K: 'static> {
    pub name: &'static str,
    pub needs: &'static [Need],
    pub about: &'static str,
    pub kernel: K,
}

/// The variants of one op, preferred first.
#[derive(Debug)]
pub struct Kernels<K: 'static> {
    /// The op's name as `--gpu-kernel` takes it (`conv3d`).
    pub op: &'static str,
    pub variants: &'static [Variant<K>],
}

impl<K> Kernels<K> {
    /// The variant named `name`.
    pub fn get(&self, name: &str) -> Option<&'static Variant<K>> {
        self.variants.iter().find(|v| v.name == name)
    }

    /// The variant this op runs on `ctx` (see the module documentation).
    pub fn choose(&self, ctx: &GpuContext) -> Result<&'static Variant<K>> {
        let i = pick(self.op, self.variants, ctx.kernel_choice(self.op), |n| n.met(ctx))?;
        Ok(&self.variants[i])
    }

    /// The list without the drivers' data, for listing and checking names.
    pub fn info(&self) -> OpKernels {
        OpKernels {
            op: self.op,
            variants: self
                .variants
                .iter()
                .map(|v| VariantInfo { name: v.name, needs: v.needs, about: v.about })
                .collect(),
        }
    }
}

/// A variant's name and what it needs, for [`pick`].
pub trait Named {
    fn name(&self) -> &str;
    fn needs(&self) -> &[Need];
}

impl<K> Named for Variant<K> {
    fn name(&self) -> &str {
        self.name
    }
    fn needs(&self) -> &[Need] {
        self.needs
    }
}

impl Named for VariantInfo {
    fn name(&self) -> &str {
        self.name
    }
    fn needs(&self) -> &[Need] {
        self.needs
    }
}

/// A variant's name, needs and description.
#[derive(Clone, Debug, serde::Serialize)]
pub struct VariantInfo {
    pub name: &'static str,
    pub needs: &'static [Need],
    pub about: &'static str,
}

/// One op's variants, preferred first.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OpKernels {
    pub op: &'static str,
    pub variants: Vec<VariantInfo>,
}

/// Every op with kernel variants. An op with a new variant list adds one
/// line here.
pub fn registry() -> Vec<OpKernels> {
    vec![
        super::conv3d::KERNELS.info(),
        super::conv3d::WEIGHT_KERNELS.info(),
        super::conv_transpose3d::KERNELS.info(),
        super::cast::ACTIVATIONS.info(),
    ]
}

/// The index in `variants` of the variant of `op` to run: `forced` if
/// given (it must exist and its needs must be `met`), else the first whose
/// needs are met.
pub fn pick<V: Named>(op: &str, variants: &[V], forced: Option<&str>, met: impl Fn(Need) -> bool) -> Result<usize> {
    let names = || variants.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ");
    if let Some(name) = forced {
        let (i, v) =
            variants.iter().enumerate().find(|(_, v)| v.name() == name).ok_or_else(|| {
                Error::invalid(format!("{op}: no kernel variant named '{name}' (variants: {})", names()))
            })?;
        if let Some(n) = v.needs().iter().find(|n| !met(**n)) {
            return Err(Error::invalid(format!(
                "{op}: kernel variant '{name}' needs {n}, which this adapter does not offer (variants: {})",
                names()
            )));
        }
        return Ok(i);
    }
    variants
        .iter()
        .position(|v| v.needs().iter().all(|n| met(*n)))
        .ok_or_else(|| Error::invalid(format!("{op}: this adapter supports none of the kernel variants {}", names())))
}

/// An error naming `op` and the first of `needs` the adapter of `ctx`
/// lacks, if any (for kernels outside a variant list, such as the casts).
pub fn require(ctx: &GpuContext, op: &str, needs: &[Need]) -> Result<()> {
    match needs.iter().find(|n| !n.met(ctx)) {
        Some(n) => Err(Error::invalid(format!("{op}: needs {n}, which {} does not offer", ctx.info.name))),
        None => Ok(()),
    }
}

/// Parses `OP=VARIANT` (the `--gpu-kernel` syntax); several may be given
/// separated by commas.
pub fn parse_choices(s: &str) -> Result<Vec<(String, String)>> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((op, v)) if !op.trim().is_empty() && !v.trim().is_empty() => {
                Ok((op.trim().to_string(), v.trim().to_string()))
            }
            _ => Err(Error::invalid(format!("kernel choice '{p}' is not OP=VARIANT (e.g. conv3d=f32-4x8)"))),
        })
        .collect()
}

/// Checks every variant forced on `ctx` against the registry (the op and
/// the variant exist, the adapter offers what it needs), so a mistyped
/// name fails when the GPU opens, before any work.
pub fn check_choices(ctx: &GpuContext) -> Result<()> {
    let reg = registry();
    for (op, name) in ctx.kernel_choices() {
        let ops = reg.iter().find(|o| o.op == op).ok_or_else(|| {
            let all = reg.iter().map(|o| o.op).collect::<Vec<_>>().join(", ");
            Error::invalid(format!("--gpu-kernel: no op '{op}' has kernel variants (ops with variants: {all})"))
        })?;
        pick(ops.op, &ops.variants, Some(name), |n| n.met(ctx))?;
    }
    Ok(())
}

/// What the variant `name` of `op` needs (nothing when either is unknown:
/// [`check_choices`] names those).
pub fn needs_of(op: &str, name: &str) -> Vec<Need> {
    registry()
        .iter()
        .filter(|o| o.op == op)
        .flat_map(|o| o.variants.iter().filter(|v| v.name() == name).flat_map(|v| v.needs().to_vec()))
        .collect()
}

/// The variant each op with variants runs on `ctx`: (op, variant name).
pub fn chosen(ctx: &GpuContext) -> Result<Vec<(&'static str, &'static str)>> {
    registry()
        .iter()
        .map(|o| Ok((o.op, o.variants[pick(o.op, &o.variants, ctx.kernel_choice(o.op), |n| n.met(ctx))?].name)))
        .collect()
}
