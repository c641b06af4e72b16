//! Neural-network ops. Each op module holds its WGSL kernel (a file under
//! `shaders/`), its GPU forward and backward, its shape rules, and a
//! `reference` module: a plain-Rust CPU version (f64 accumulation) that the
//! tests hold the kernels to. Ops know nothing of any network.
//!
//! [`table`] states every op case once (inputs, GPU version, reference,
//! tolerance, test shapes, benchmark role); `tests/ops_table.rs` and
//! [`crate::bench`] both run it, so a new op or kernel variant is a shader,
//! its module and a table entry.

pub mod activation;
pub mod batchnorm;
pub mod cast;
pub mod concat;
pub mod conv3d;
pub mod conv3d_unrolled;
pub mod conv3d_weight_unrolled;
pub mod conv_transpose3d;
pub mod conv_transpose3d_unrolled;
pub mod elementwise;
pub mod loss;
pub mod optim;
pub mod pool;
pub mod reduce;
pub mod softmax;
pub mod table;
pub mod variants;

use crate::gpu::{layout, ShaderSource};
pub use crate::gpu::{Field, ParamLayout};

/// What makes the vec4 form of a shader with an element alias `V` (and its
/// lane sum `hsum`): [`batchnorm::shader_vec4`], [`reduce::shader_vec4`].
pub(crate) const VEC4_FORM: [(&str, &str); 2] = [
    ("alias V = f32;", "alias V = vec4<f32>;"),
    ("fn hsum(v: V) -> f32 { return v; }", "fn hsum(v: V) -> f32 { return (v.x + v.y) + (v.z + v.w); }"),
];

/// Every op shader as its pipelines compile it (prelude included where a
/// shader uses one), for checks that need no GPU (`tests/shaders_naga.rs`).
pub const SHADERS: &[ShaderSource] = &[
    batchnorm::SHADER,
    cast::SHADER,
    conv3d::SHADER,
    conv3d::SHADER_COOP,
    conv_transpose3d::SHADER,
    elementwise::SHADER,
    loss::SHADER,
    optim::SHADER,
    pool::SHADER,
    reduce::SHADER,
    softmax::SHADER,
];

/// Every uniform-parameter struct of the ops with its shader, for the
/// layout check against WGSL (`tests/param_layouts.rs`, no GPU). An op with
/// a new parameter struct adds one line here.
pub fn param_layouts() -> Vec<ParamLayout> {
    vec![
        layout::<batchnorm::PartParams>(batchnorm::SHADER),
        layout::<batchnorm::FinishParams>(batchnorm::SHADER),
        layout::<batchnorm::CoefParams>(batchnorm::SHADER),
        layout::<batchnorm::ApplyParams>(batchnorm::SHADER),
        layout::<cast::Params>(cast::SHADER),
        layout::<conv3d::PackParams>(conv3d::SHADER),
        layout::<conv3d::ConvParams>(conv3d::SHADER),
        layout::<conv3d::ConvParams>(conv3d::SHADER_COOP),
        layout::<conv3d::WeightParams>(conv3d::SHADER),
        layout::<conv3d::FinishParams>(conv3d::SHADER),
        layout::<conv_transpose3d::Params>(conv_transpose3d::SHADER),
        layout::<elementwise::Params>(elementwise::SHADER),
        layout::<loss::Params>(loss::SHADER),
        layout::<loss::FinishParams>(loss::SHADER),
        layout::<optim::Params>(optim::SHADER),
        layout::<pool::Params>(pool::SHADER),
        layout::<reduce::PartialParams>(reduce::SHADER),
        layout::<reduce::FinishParams>(reduce::SHADER),
        layout::<softmax::Params>(softmax::SHADER),
    ]
}
