//! Kernel variants as data (`qcanet_gpu::ops::variants`): which variant an
//! op runs (forced, else the first the adapter supports), the errors for a
//! mistyped or unsupported choice, and a forced variant actually running.

mod common;
use common::*;
use qcanet_gpu::gpu::{ContextOptions, GpuContext};
use qcanet_gpu::ops::conv3d;
use qcanet_gpu::ops::variants::{check_choices, chosen, parse_choices, pick, registry, Need, OpKernels, VariantInfo};
use qcanet_gpu::tensor::{rel_err, CpuTensor, Shape5};

fn ops() -> OpKernels {
    let v = |name, needs| VariantInfo { name, needs, about: "" };
    OpKernels {
        op: "demo",
        variants: vec![v("f16-coop", &[Need::ShaderF16, Need::Subgroups]), v("f16", &[Need::ShaderF16]), v("f32", &[])],
    }
}

#[test]
fn the_first_supported_variant_runs_unless_one_is_forced() {
    let o = ops();
    assert_eq!(pick(o.op, &o.variants, None, |_| true).unwrap(), 0);
    assert_eq!(pick(o.op, &o.variants, None, |n| n == Need::ShaderF16).unwrap(), 1);
    assert_eq!(pick(o.op, &o.variants, None, |_| false).unwrap(), 2);
    assert_eq!(pick(o.op, &o.variants, Some("f32"), |_| true).unwrap(), 2);
    assert_eq!(pick(o.op, &o.variants, Some("f16"), |n| n == Need::ShaderF16).unwrap(), 1);
}

#[test]
fn a_forced_variant_must_exist_and_be_supported() {
    let o = ops();
    let e = pick(o.op, &o.variants, Some("f64"), |_| true).unwrap_err().to_string();
    assert!(e.contains("demo") && e.contains("'f64'") && e.contains("f16-coop, f16, f32"), "{e}");
    let e = pick(o.op, &o.variants, Some("f16-coop"), |n| n == Need::ShaderF16).unwrap_err().to_string();
    assert!(e.contains("needs subgroups"), "{e}");
}

#[test]
fn choices_parse_as_op_equals_variant() {
    assert_eq!(
        parse_choices("conv3d=f32-4x8, other = x").unwrap(),
        vec![("conv3d".into(), "f32-4x8".into()), ("other".into(), "x".into())]
    );
    assert!(parse_choices("").unwrap().is_empty());
    for bad in ["conv3d", "conv3d=", "=f32-8x8", "conv3d=f32-8x8,f32"] {
        let e = parse_choices(bad).unwrap_err().to_string();
        assert!(e.contains("OP=VARIANT"), "{bad}: {e}");
    }
}

#[test]
fn the_registry_names_conv3d_and_the_default_tile() {
    let reg = registry();
    let c = reg.iter().find(|o| o.op == "conv3d").expect("conv3d has variants");
    // The generated kernels for CPU adapters first (only they meet their
    // need; weights per subgroup where subgroups have 8+ lanes, else per
    // lane; 4 rows on planes of 16+ rows), the 2-row form kept for
    // comparison, then the loop kernels' 8x8 tile, every other adapter's
    // default.
    assert_eq!(c.variants[0].name, "cpu-unrolled");
    assert_eq!(c.variants[0].needs, &[Need::CpuAdapter, Need::Subgroups8][..]);
    let tall = conv3d::Tile::unrolled(32, 8, 8, 2, true).with_tall_rows(4);
    assert_eq!(conv3d::KERNELS.get("cpu-unrolled").unwrap().kernel, tall);
    assert_eq!(c.variants[1].name, "cpu-unrolled-lanes");
    assert_eq!(c.variants[1].needs, &[Need::CpuAdapter][..]);
    assert_eq!(c.variants[2].name, "cpu-unrolled-2rows");
    assert_eq!(c.variants[3].name, "f32-8x8");
    assert_eq!(conv3d::KERNELS.get("f32-8x8").unwrap().kernel, conv3d::Tile::loops(32, 8, 8));
    // The weight gradient: the generated kernel for CPU adapters with
    // subgroups, the loop kernel's wide split on GPUs, the staged form
    // behind it (GPU only, so forced only until measured), then the 16-lane
    // split (other CPU adapters).
    let w = reg.iter().find(|o| o.op == "conv3d_weight").expect("conv3d_weight has variants");
    assert_eq!(w.variants[0].name, "cpu-unrolled");
    assert_eq!(w.variants[0].needs, &[Need::CpuAdapter, Need::Subgroups8][..]);
    assert_eq!(w.variants[1].name, "f32-32-wide");
    assert_eq!(w.variants[1].needs, &[Need::GpuAdapter][..]);
    assert_eq!(w.variants[2].name, "f32-32-staged");
    assert_eq!(w.variants[2].needs, &[Need::GpuAdapter][..]);
    assert_eq!(w.variants[3].name, "f32-16");
    assert!(w.variants[3].needs.is_empty());
    // The transposed conv: the generated kernels for CPU adapters with
    // subgroups, then the shader's loops.
    let t = reg.iter().find(|o| o.op == "conv_transpose3d").expect("conv_transpose3d has variants");
    assert_eq!(t.variants[0].name, "cpu-unrolled");
    assert_eq!(t.variants[0].needs, &[Need::CpuAdapter, Need::Subgroups8][..]);
    assert_eq!(t.variants[1].name, "f32");
    assert!(t.variants[1].needs.is_empty());
}

/// The transposed conv's variant an adapter gets by default.
fn default_convt_kernel(c: &GpuContext) -> &'static str {
    if c.is_cpu_adapter() && Need::Subgroups8.met(c) {
        "cpu-unrolled"
    } else {
        "f32"
    }
}

/// The weight-gradient variant an adapter gets by default: the generated
/// kernel on CPU adapters with subgroups of 8+ lanes, `f32-16` on other
/// CPU adapters, `f32-32-wide` on GPUs.
fn default_weight_kernel(c: &GpuContext) -> &'static str {
    if c.is_cpu_adapter() && Need::Subgroups8.met(c) {
        "cpu-unrolled"
    } else if c.is_cpu_adapter() {
        "f32-16"
    } else {
        "f32-32-wide"
    }
}

fn ctx_with(kernels: &[(&str, &str)]) -> GpuContext {
    let o = ContextOptions {
        kernels: kernels.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
        ..ContextOptions::from_env()
    };
    context(&o, true)
}

/// A context with `op`'s variant `name` forced (the choice checked), or
/// `None` where the adapter lacks one of `needs`: then forcing it must be
/// refused by name (said on stdout, as the op table does; on a CPU adapter
/// only for cooperative matrices or a preference for GPUs).
fn forced(op: &str, name: &str, needs: &[Need]) -> Option<GpuContext> {
    let c = ctx_with(&[(op, name)]);
    if let Some(n) = needs.iter().find(|n| !n.met(&c)) {
        let e = check_choices(&c).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains(n.name()), "{e}");
        not_run_for_lack_of(&c, *n, &format!("{op} {name}"));
        return None;
    }
    check_choices(&c).unwrap();
    Some(c)
}

#[test]
fn a_forced_variant_runs_and_matches_the_reference() {
    // The default context runs the preferred variant.
    let act = if ctx().has_f16() { "f16" } else { "f32" };
    let conv = match (ctx().is_cpu_adapter(), Need::Subgroups8.met(ctx())) {
        (true, true) => "cpu-unrolled",
        (true, false) => "cpu-unrolled-lanes",
        _ => "f32-8x8",
    };
    let wgrad = default_weight_kernel(ctx());
    let convt = default_convt_kernel(ctx());
    let others = |conv, wgrad, convt| {
        vec![("conv3d", conv), ("conv3d_weight", wgrad), ("conv_transpose3d", convt), ("activations", act)]
    };
    assert_eq!(chosen(ctx()).unwrap(), others(conv, wgrad, convt));
    let x = CpuTensor::random(Shape5::new(2, 5, 4, 7, 19), 11, -1.0, 1.0);
    let w = CpuTensor::random(Shape5::new(7, 5, 3, 3, 3), 12, -1.0, 1.0);
    let b = CpuTensor::random(Shape5::new(1, 7, 1, 1, 1), 13, -1.0, 1.0);
    let want = conv3d::reference::forward(&x, &w, &b);
    let want_dx = conv3d::reference::backward_input(&want, &w);
    // Variants run of each op; at least half on any adapter (each op has
    // one for every adapter; a CPU adapter is refused only those above).
    let mut ran = Vec::new();
    let mut n = 0;
    for v in conv3d::KERNELS.variants {
        let Some(c) = forced("conv3d", v.name, v.needs) else { continue };
        n += 1;
        assert_eq!(conv3d::KERNELS.choose(&c).unwrap().name, v.name);
        assert_eq!(chosen(&c).unwrap(), others(v.name, wgrad, convt));
        let (gx, gw, gb) = (c.upload(&x).unwrap(), c.upload(&w).unwrap(), c.upload(&b).unwrap());
        let y = c.download(&conv3d::forward(&c, &gx, &gw, &gb).unwrap()).unwrap();
        let e = rel_err(&y.data, &want.data);
        // f16 inputs on the cooperative-matrix kernel (op table: TOL_COOP).
        let tol = if v.kernel.is_coop() { 5e-3 } else { 1e-5 };
        assert!(e < tol, "{}: forward relative error {e}", v.name);
        let dy = c.upload(&want).unwrap();
        let dx = c.download(&conv3d::backward_input(&c, &dy, &gw).unwrap()).unwrap();
        let e = rel_err(&dx.data, &want_dx.data);
        assert!(e < tol, "{}: input gradient relative error {e}", v.name);
    }
    ran.push((conv3d::KERNELS.op, n, conv3d::KERNELS.variants.len()));
    // The weight gradient's work splits, forced through the context.
    let want_dw = conv3d::reference::backward_weight(&x, &want, 3);
    let mut n = 0;
    for v in conv3d::WEIGHT_KERNELS.variants {
        let Some(c) = forced("conv3d_weight", v.name, v.needs) else { continue };
        n += 1;
        assert_eq!(conv3d::WEIGHT_KERNELS.choose(&c).unwrap().name, v.name);
        let (gx, dy) = (c.upload(&x).unwrap(), c.upload(&want).unwrap());
        let dw = c.download(&conv3d::backward_weight(&c, &gx, &dy, 3).unwrap()).unwrap();
        let e = rel_err(&dw.data, &want_dw.data);
        assert!(e < 1e-5, "{}: weight gradient relative error {e}", v.name);
    }
    ran.push((conv3d::WEIGHT_KERNELS.op, n, conv3d::WEIGHT_KERNELS.variants.len()));
    // The transposed conv's variants, forced through the context: forward
    // and both gradients (odd extent, channels off every block).
    use qcanet_gpu::ops::conv_transpose3d as ct;
    let tx = CpuTensor::random(Shape5::new(2, 11, 3, 5, 7), 14, -1.0, 1.0);
    let tw = CpuTensor::random(Shape5::new(11, 9, 2, 2, 2), 15, -1.0, 1.0);
    let tb = CpuTensor::random(Shape5::new(1, 9, 1, 1, 1), 16, -1.0, 1.0);
    let ty = ct::reference::forward(&tx, &tw, &tb);
    let (want_tdx, want_tdw) = (ct::reference::backward_input(&ty, &tw), ct::reference::backward_weight(&tx, &ty));
    let mut n = 0;
    for v in ct::KERNELS.variants {
        let Some(c) = forced("conv_transpose3d", v.name, v.needs) else { continue };
        n += 1;
        assert_eq!(chosen(&c).unwrap(), others(conv, wgrad, v.name));
        let (gx, gw, gb, gy) =
            (c.upload(&tx).unwrap(), c.upload(&tw).unwrap(), c.upload(&tb).unwrap(), c.upload(&ty).unwrap());
        let y = c.download(&ct::forward(&c, &gx, &gw, &gb).unwrap()).unwrap();
        let dx = c.download(&ct::backward_input(&c, &gy, &gw).unwrap()).unwrap();
        let dw = c.download(&ct::backward_weight(&c, &gx, &gy).unwrap()).unwrap();
        for (what, got, want) in
            [("forward", &y, &ty), ("input gradient", &dx, &want_tdx), ("weight gradient", &dw, &want_tdw)]
        {
            let e = rel_err(&got.data, &want.data);
            assert!(e < 1e-5, "conv_transpose3d {}: {what} relative error {e}", v.name);
        }
    }
    ran.push((ct::KERNELS.op, n, ct::KERNELS.variants.len()));
    println!("variants run (op, run, of): {ran:?}");
    assert!(ran.iter().all(|&(_, n, of)| 2 * n >= of), "too few variants run: {ran:?}");
}

#[test]
fn a_mistyped_choice_fails_when_the_gpu_opens() {
    let e = check_choices(&ctx_with(&[("conv3d", "f32-9x9")])).unwrap_err().to_string();
    assert!(e.contains("'f32-9x9'") && e.contains("f32-8x8"), "{e}");
    let e = check_choices(&ctx_with(&[("conv4d", "f32-8x8")])).unwrap_err().to_string();
    assert!(e.contains("'conv4d'") && e.contains("conv3d"), "{e}");
}

#[test]
fn the_command_line_checks_kernel_choices_before_any_work() {
    use std::process::Command;
    let run = |args: &[&str], env: Option<&str>| {
        let mut c = Command::new(common::exe());
        c.args(args).env("RUST_LOG", "info").env_remove("QCANET_GPU_KERNEL");
        if let Some(e) = env {
            c.env("QCANET_GPU_KERNEL", e);
        }
        let o = c.output().unwrap();
        (o.status.success(), String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr))
    };
    let bench = ["bench", "--only", "ops", "--filter", "relu fwd", "--sizes", "8", "--repeats", "1"];
    let (ok, out) = run(&[&["--gpu-kernel", "conv3d=f32-9x9"], &bench[..]].concat(), None);
    assert!(!ok && out.contains("no kernel variant named 'f32-9x9'"), "{out}");
    let (ok, out) = run(&bench, Some("conv3d"));
    assert!(!ok && out.contains("OP=VARIANT"), "{out}");
    // The flag wins over the environment; the choice is reported.
    let (ok, out) = run(&[&["--gpu-kernel", "conv3d=f32-4x4"], &bench[..]].concat(), Some("conv3d=f32-8x4"));
    let want = format!(
        "kernel variants: conv3d f32-4x4, conv3d_weight {}, conv_transpose3d {}, activations ",
        default_weight_kernel(ctx()),
        default_convt_kernel(ctx())
    );
    assert!(ok && out.contains(&want), "{out}");
    // A part or a filter that selects nothing is an error, not an empty run.
    let (ok, out) = run(&["bench", "--only", "opps"], None);
    assert!(!ok && out.contains("--only 'opps'"), "{out}");
    let (ok, out) = run(&["bench", "--only", "ops", "--filter", "none", "--repeats", "1"], None);
    assert!(!ok && out.contains("no op case matches"), "{out}");
}

#[test]
fn f16_activations_are_a_choice_that_needs_shader_f16() {
    use qcanet_gpu::gpu::DType;
    use qcanet_gpu::ops::cast::ACTIVATIONS;
    // f16 where the adapter has shader-f16, else f32; either can be forced
    // (f16 only where supported).
    let want = if ctx().has_f16() { DType::F16 } else { DType::F32 };
    assert_eq!(ACTIVATIONS.choose(ctx()).unwrap().kernel, want);
    let o = ACTIVATIONS.info();
    assert_eq!(o.variants[pick(o.op, &o.variants, None, |_| true).unwrap()].name, "f16");
    assert_eq!(o.variants[pick(o.op, &o.variants, None, |_| false).unwrap()].name, "f32");
    let e = pick(o.op, &o.variants, Some("f16"), |_| false).unwrap_err().to_string();
    assert!(e.contains("needs shader-f16"), "{e}");
    let c = ctx_with(&[("activations", "f32")]);
    check_choices(&c).unwrap();
    assert_eq!(ACTIVATIONS.choose(&c).unwrap().kernel, DType::F32);
}
