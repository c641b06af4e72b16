//! Uniform-parameter structs: a `#[repr(C)]` Rust struct uploaded as the
//! `var<uniform>` of a WGSL kernel must have the layout of the WGSL struct
//! of the same name. `uniform_params!` declares one and records its field
//! layout; each layer that owns kernels lists its structs as
//! [`ParamLayout`]s (`ops::param_layouts`, `postprocess::param_layouts`),
//! which `tests/param_layouts.rs` checks against the WGSL structs through
//! naga's layouter, with no GPU.

use super::ShaderSource;

/// Declares a uniform-parameter struct that mirrors the WGSL struct of the
/// same name: `#[repr(C)]`, `Pod`, visible to the parent module (which lists
/// it in its `param_layouts`), with its field layout recorded by
/// [`UniformParams`]. In textual scope in every module declared after
/// `gpu` in `lib.rs`.
macro_rules! uniform_params {
    ($(#[$m:meta])* struct $name:ident { $($(#[$fm:meta])* $f:ident: $ft:ty),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        pub(super) struct $name {
            $($(#[$fm])* $f: $ft),*
        }

        impl $crate::gpu::UniformParams for $name {
            const NAME: &'static str = stringify!($name);
            const FIELDS: &'static [$crate::gpu::Field] =
                &[$((stringify!($f), std::mem::offset_of!($name, $f), std::mem::size_of::<$ft>())),*];
        }
    };
}

/// A field of a parameter struct: name, byte offset, byte size.
pub type Field = (&'static str, usize, usize);

/// A `#[repr(C)]` uniform-parameter struct declared with `uniform_params!`.
pub(crate) trait UniformParams: bytemuck::Pod {
    /// The struct's name, also the name of the WGSL struct it mirrors.
    const NAME: &'static str;
    /// Every field in declaration order.
    const FIELDS: &'static [Field];
}

/// The layout of one Rust parameter struct and the shader whose WGSL struct
/// of the same name it mirrors.
#[derive(Clone, Copy, Debug)]
pub struct ParamLayout {
    pub shader: ShaderSource,
    /// Name of the Rust struct and of the WGSL struct.
    pub name: &'static str,
    /// `size_of` the Rust struct.
    pub size: usize,
    pub fields: &'static [Field],
}

/// The layout of `P`, mirrored in `shader`.
pub(crate) fn layout<P: UniformParams>(shader: ShaderSource) -> ParamLayout {
    ParamLayout { shader, name: P::NAME, size: std::mem::size_of::<P>(), fields: P::FIELDS }
}
