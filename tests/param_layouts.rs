//! Each Rust uniform-parameter struct (`uniform_params!`: the ops' and the
//! instance stage's) against the WGSL struct of the same name in its shader
//! (as compiled, prelude included), by naga's layout: the same size, and
//! each named field at the same offset with the same size (padding fields,
//! named `_…`, may be split differently). Also every uniform of every shader
//! the library compiles has its Rust struct in the lists. Needs no GPU.

use std::collections::BTreeSet;

use qcanet_gpu::gpu::{ParamLayout, ShaderSource};
use qcanet_gpu::{ops, postprocess};

/// Every parameter struct the library declares.
fn layouts() -> Vec<ParamLayout> {
    let mut v = ops::param_layouts();
    v.extend(postprocess::param_layouts());
    v
}

/// Every shader the library compiles (as `tests/shaders_naga.rs` lists them).
fn shaders() -> Vec<ShaderSource> {
    let mut v = ops::SHADERS.to_vec();
    v.extend(postprocess::SHADERS);
    v.push(qcanet_gpu::bench::CEILING_SHADER);
    v
}

/// A WGSL struct's span and its members as (name, offset, size).
type WgslStruct = (u32, Vec<(String, u32, u32)>);

fn module(wgsl: &str) -> (naga::Module, naga::proc::Layouter) {
    let m = naga::front::wgsl::parse_str(wgsl).unwrap_or_else(|e| panic!("{}", e.emit_to_string(wgsl)));
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(m.to_ctx()).unwrap();
    (m, layouter)
}

fn wgsl_struct(m: &naga::Module, layouter: &naga::proc::Layouter, name: &str) -> Option<WgslStruct> {
    m.types.iter().find_map(|(_, t)| match &t.inner {
        naga::TypeInner::Struct { members, span } if t.name.as_deref() == Some(name) => Some((
            *span,
            members.iter().map(|mb| (mb.name.clone().unwrap_or_default(), mb.offset, layouter[mb.ty].size)).collect(),
        )),
        _ => None,
    })
}

fn check(p: &ParamLayout) -> Vec<String> {
    let what = format!("{}::{}", p.shader.name, p.name);
    let mut errors = Vec::new();
    // The recorded fields cover the Rust struct: contiguous, no hidden padding.
    let mut end = 0;
    for &(f, off, size) in p.fields {
        if off != end {
            errors.push(format!("{what}: Rust field {f} at offset {off}, expected {end} (implicit padding)"));
        }
        end = off + size;
    }
    if end != p.size {
        errors.push(format!("{what}: Rust fields end at {end}, size_of is {}", p.size));
    }
    let (m, layouter) = module(p.shader.wgsl);
    let Some((span, members)) = wgsl_struct(&m, &layouter, p.name) else {
        errors.push(format!("{what}: no WGSL struct {} in shaders/{}.wgsl", p.name, p.shader.name));
        return errors;
    };
    if p.size != span as usize {
        errors.push(format!("{what}: Rust size {} bytes, WGSL span {span}", p.size));
    }
    let named = |n: &str| !n.starts_with('_');
    for (name, off, size) in members.iter().filter(|m| named(&m.0)) {
        match p.fields.iter().find(|f| f.0 == name) {
            None => errors.push(format!("{what}: WGSL member {name} has no Rust field")),
            Some(&(_, roff, rsize)) if (roff, rsize) != (*off as usize, *size as usize) => {
                errors.push(format!("{what}.{name}: Rust offset {roff} size {rsize}, WGSL offset {off} size {size}"))
            }
            Some(_) => {}
        }
    }
    for &(f, ..) in p.fields.iter().filter(|f| named(f.0)) {
        if !members.iter().any(|m| m.0 == f) {
            errors.push(format!("{what}: Rust field {f} is not in the WGSL struct"));
        }
    }
    errors
}

#[test]
fn rust_param_structs_match_wgsl_structs() {
    let layouts = layouts();
    let errors: Vec<String> = layouts.iter().flat_map(check).collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert!(layouts.len() >= 20, "only {} parameter structs", layouts.len());
}

#[test]
fn every_uniform_of_every_shader_has_its_rust_struct() {
    let layouts = layouts();
    let listed: BTreeSet<(&str, &str)> = layouts.iter().map(|p| (p.shader.name, p.name)).collect();
    assert_eq!(listed.len(), layouts.len(), "a parameter struct is listed twice");
    let mut missing = Vec::new();
    for s in shaders() {
        let (m, _) = module(s.wgsl);
        for (_, g) in m.global_variables.iter().filter(|(_, g)| g.space == naga::AddressSpace::Uniform) {
            let ty = m.types[g.ty].name.clone().unwrap_or_default();
            if !listed.contains(&(s.name, ty.as_str())) {
                missing.push(format!("{}: uniform {} of type {ty}", s.name, g.name.clone().unwrap_or_default()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "in neither ops::param_layouts() nor postprocess::param_layouts():\n{}",
        missing.join("\n")
    );
}

/// The check can fail: a struct whose fields are swapped or one short is caught.
#[test]
fn a_wrong_layout_is_caught() {
    let good = ops::param_layouts().into_iter().find(|p| p.shader.name == "elementwise").unwrap();
    assert!(check(&good).is_empty());
    let swapped =
        ParamLayout { fields: &[("n", 0, 4), ("base_b", 4, 4), ("base_a", 8, 4), ("base_out", 12, 4)], ..good };
    assert_eq!(check(&swapped).len(), 2, "{:?}", check(&swapped));
    let short = ParamLayout { size: 12, fields: &[("n", 0, 4), ("base_a", 4, 4), ("base_b", 8, 4)], ..good };
    assert_eq!(check(&short).len(), 2, "{:?}", check(&short));
}
