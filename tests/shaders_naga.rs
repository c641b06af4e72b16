//! Parses and validates every shader with naga exactly as its pipelines
//! compile it (with `shaders/prelude.wgsl` in front where the shader uses
//! the prelude), and checks that every WGSL file under `shaders/` is one of
//! those shaders. Needs no GPU, so a broken shader fails here first, with
//! naga's message.

use std::collections::BTreeSet;
use std::path::Path;

use qcanet_gpu::gpu::ShaderSource;
use qcanet_gpu::{ops, postprocess};

const PRELUDE: &str = "prelude.wgsl";

fn shaders_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders")
}

/// Every shader the library compiles.
fn compiled() -> Vec<ShaderSource> {
    let mut v = ops::SHADERS.to_vec();
    v.extend(postprocess::SHADERS);
    v.push(qcanet_gpu::bench::CEILING_SHADER);
    v
}

#[test]
fn every_shader_parses_and_validates() {
    let mut failures = Vec::new();
    for s in compiled() {
        let name = s.name;
        match naga::front::wgsl::parse_str(s.wgsl) {
            Err(e) => failures.push(format!("{name}: parse error:\n{}", e.emit_to_string(s.wgsl))),
            Ok(module) => {
                let mut v =
                    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
                if let Err(e) = v.validate(&module) {
                    failures.push(format!("{name}: validation error:\n{}", e.emit_to_string(s.wgsl)));
                }
                if module.entry_points.is_empty() {
                    failures.push(format!("{name}: no entry points"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_shader_file_is_compiled_as_a_file_or_after_the_prelude() {
    let dir = shaders_dir();
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let prelude = read(PRELUDE);
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".wgsl") && f != PRELUDE)
        .collect();
    let shaders = compiled();
    let names: BTreeSet<String> = shaders.iter().map(|s| format!("{}.wgsl", s.name)).collect();
    assert_eq!(names.len(), shaders.len(), "two shaders share a name");
    assert_eq!(on_disk, names, "shader files under {} and shaders the library compiles differ", dir.display());
    let mut with_prelude = 0;
    for s in &shaders {
        let file = read(&format!("{}.wgsl", s.name));
        if s.wgsl != file {
            assert_eq!(s.wgsl, format!("{prelude}{file}"), "{}: neither its file nor the prelude and its file", s.name);
            with_prelude += 1;
        }
    }
    // The prelude is validated only through the shaders that use it.
    assert!(with_prelude > 0, "no shader uses {PRELUDE}: the validation above would not check it");
}

#[test]
fn the_f16_storage_form_of_the_conv_validates() {
    // Built from conv3d.wgsl at run time (`enable f16;`, `act` = f16).
    let s = ops::conv3d::shader_f16();
    assert!(s.wgsl.starts_with("enable f16;") && s.wgsl.contains("alias act = f16;"));
    let module = naga::front::wgsl::parse_str(s.wgsl).unwrap_or_else(|e| panic!("{}", e.emit_to_string(s.wgsl)));
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}", e.emit_to_string(s.wgsl)));
    // Without the f16 capability it must be refused (an adapter without
    // shader-f16 never builds it).
    let no_f16 = naga::valid::Capabilities::all() - naga::valid::Capabilities::SHADER_FLOAT16;
    assert!(naga::valid::Validator::new(naga::valid::ValidationFlags::all(), no_f16).validate(&module).is_err());
}

#[test]
fn the_vec4_forms_of_batch_norm_the_channel_sum_and_the_optimizers_validate() {
    // Built from batchnorm.wgsl, reduce.wgsl and optim.wgsl at run time
    // (element alias `V` = vec4<f32>, and the lane sum where there is one),
    // for tensors aligned to 4 elements.
    for s in [ops::batchnorm::shader_vec4(), ops::reduce::shader_vec4(), ops::optim::shader_vec4()] {
        assert!(s.wgsl.contains("alias V = vec4<f32>;") && !s.wgsl.contains("alias V = f32;"), "{}", s.name);
        let module = naga::front::wgsl::parse_str(s.wgsl).unwrap_or_else(|e| panic!("{}", e.emit_to_string(s.wgsl)));
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}: {}", s.name, e.emit_to_string(s.wgsl)));
    }
}

#[test]
fn the_cooperative_matrix_conv_validates_and_compiles_to_spirv() {
    // Never run on lavapipe (no cooperative matrices): what can be checked
    // without such a GPU is that both forms validate, that a validator
    // without the capability refuses them, and that naga's SPIR-V writer
    // (what wgpu hands a Vulkan driver) emits them with the cooperative-
    // matrix capability, for the kernel sizes the networks use.
    for s in [&ops::conv3d::SHADER_COOP, ops::conv3d::shader_coop_f16()] {
        let module = naga::front::wgsl::parse_str(s.wgsl).unwrap_or_else(|e| panic!("{}", e.emit_to_string(s.wgsl)));
        let no_coop = naga::valid::Capabilities::all() - naga::valid::Capabilities::COOPERATIVE_MATRIX;
        assert!(
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), no_coop).validate(&module).is_err(),
            "{}: validates without the cooperative-matrix capability",
            s.name
        );
        for k in [1.0, 3.0, 5.0] {
            let constants: naga::back::PipelineConstants = [("SG".to_string(), 32.0), ("K".to_string(), k)].into();
            let info =
                naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
                    .validate(&module)
                    .unwrap_or_else(|e| panic!("{}", e.emit_to_string(s.wgsl)));
            let (module, info) = naga::back::pipeline_constants::process_overrides(&module, &info, None, &constants)
                .unwrap_or_else(|e| panic!("{} K={k}: {e}", s.name));
            let options = naga::back::spv::Options { lang_version: (1, 6), capabilities: None, ..Default::default() };
            let pipeline = naga::back::spv::PipelineOptions {
                shader_stage: naga::ShaderStage::Compute,
                entry_point: "conv_coop".into(),
            };
            let words = naga::back::spv::write_vec(&module, &info, &options, Some(&pipeline))
                .unwrap_or_else(|e| panic!("{} K={k}: SPIR-V: {e}", s.name));
            // OpCapability CooperativeMatrixKHR (6022): opcode 17, one operand.
            assert!(words.windows(2).any(|w| w == [(2 << 16) | 17, 6022]), "{} K={k}: no CooperativeMatrixKHR", s.name);
        }
    }
}

#[test]
fn the_generated_conv_kernels_validate() {
    // src/ops/conv3d_unrolled.rs writes one kernel per (k, tile, f16,
    // weights loaded per lane or per subgroup, rows read as scalars or
    // vec4s): every block the cpu-unrolled variants run, as their tiles
    // give them for layers of 1-40 channels on planes of short and tall
    // (conv3d::TALL_ROWS) columns and narrow and wide (conv3d::NARROW_ROW)
    // rows, and the generator's edges (k 7, 32 channels, one row, 16
    // columns; vec4 rows need x-blocks of a multiple of 4).
    use ops::conv3d::{Kernel, KERNELS, NARROW_ROW, TALL_ROWS};
    use ops::conv3d_unrolled::{generate, Shape};
    // (co_b, yb, xb, weights per subgroup)
    let mut blocks = BTreeSet::new();
    for var in KERNELS.variants {
        for out_c in 1..=40 {
            for out_h in [1, TALL_ROWS - 1, TALL_ROWS, 33] {
                for out_w in [1, NARROW_ROW, NARROW_ROW + 1, 19] {
                    let t = var.kernel.for_layer(out_c, out_h, out_w);
                    if let Kernel::Unrolled { yb, yb_tall, subgroup_weights } = t.kernel {
                        assert_eq!(yb, yb_tall, "{}: a layer's tile has one row count", var.name);
                        blocks.insert((t.co_b, yb, t.xb, subgroup_weights));
                    }
                }
            }
        }
    }
    // Blocks of 4, 8 and 12 channels (12: NDN's first level), 2 and 4 rows,
    // 8 and 4 x-positions, weights per lane and per subgroup.
    for (co_b, yb, xb, sgw) in [(4, 2, 8, true), (12, 4, 8, true), (12, 4, 4, false), (8, 2, 8, false)] {
        assert!(blocks.contains(&(co_b, yb, xb, sgw)), "{:?} lacks {:?}", blocks, (co_b, yb, xb, sgw));
    }
    assert_eq!(blocks.len(), 24, "{blocks:?}");
    // At the kernel sizes the networks and the op table run; the edges at
    // k 7 too, with one of the variants' blocks.
    let mut shapes: Vec<_> = [1, 3, 5].into_iter().flat_map(|k| blocks.iter().map(move |&b| (k, b))).collect();
    for sgw in [false, true] {
        for k in [1, 3, 5, 7] {
            shapes.extend([(k, (12, 1, 3, sgw)), (k, (32, 1, 16, sgw))]);
        }
        shapes.push((7, (8, 2, 8, sgw)));
    }
    // Each shape in its forms (f16, vec4 rows), the shapes spread over
    // the cores (a k 5 or 7 kernel is 0.1-0.3 s of naga).
    let forms = |&(k, (co_b, yb, xb, subgroup_weights)): &(u32, (u32, u32, u32, bool))| {
        let mut n = 0;
        for (f16, vec4_rows) in [(false, false), (true, false), (false, true), (true, true)] {
            let shape = Shape { k, co_b, xb, yb, f16, subgroup_weights, vec4_rows };
            if vec4_rows && xb % 4 != 0 {
                assert!(!shape.valid(), "{shape:?}");
                continue;
            }
            assert!(shape.valid());
            let src = generate(shape);
            let module =
                naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{shape:?}: {}", e.emit_to_string(&src)));
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
                .validate(&module)
                .unwrap_or_else(|e| panic!("{shape:?}: {}", e.emit_to_string(&src)));
            assert_eq!(module.entry_points.len(), 1);
            assert_eq!(module.entry_points[0].name, ops::conv3d_unrolled::ENTRY);
            n += 1;
        }
        n
    };
    let workers = std::thread::available_parallelism().map_or(1, |c| c.get());
    let n: usize = std::thread::scope(|sc| {
        let parts: Vec<_> = (0..workers)
            .map(|i| {
                let (shapes, forms) = (&shapes, &forms);
                sc.spawn(move || shapes.iter().skip(i).step_by(workers).map(forms).sum::<usize>())
            })
            .collect();
        parts.into_iter().map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).sum()
    });
    // 24 blocks at 3 sizes, 2 at 1, 2 of 16 columns at 4, in 4 forms; 2
    // of 3 columns at 4 sizes in 2.
    assert_eq!(n, (24 * 3 + 2 + 2 * 4) * 4 + 2 * 4 * 2);
    for bad in [
        Shape { k: 4, co_b: 8, xb: 8, yb: 2, f16: false, subgroup_weights: false, vec4_rows: false },
        Shape { k: 3, co_b: 6, xb: 8, yb: 2, f16: false, subgroup_weights: false, vec4_rows: false },
        Shape { k: 3, co_b: 8, xb: 6, yb: 2, f16: false, subgroup_weights: true, vec4_rows: true },
    ] {
        assert!(!bad.valid(), "{bad:?}");
    }
}

#[test]
fn the_generated_weight_gradient_kernels_validate() {
    // src/ops/conv3d_weight_unrolled.rs writes one kernel per (k, output
    // channels, voxels per step, rows read as scalars or vec4s): the
    // registered variant's (16 x 8), the step of 4 (the window then
    // carries values two steps at k 7), the generator's edges (4 and 32
    // channels) and blocks of 12 (a layer's balanced block: a second dy
    // load half of whose lanes no channel takes).
    use ops::conv3d_weight_unrolled::{generate, Shape, ENTRY};
    let mut n = 0;
    for k in [1, 3, 5, 7] {
        for (co_b, xb) in [(8, 4), (16, 8), (32, 4), (8, 8), (4, 4), (12, 4)] {
            for vec4 in [false, true] {
                let shape = Shape { k, co_b, xb, vec4 };
                assert!(shape.valid());
                let module = validated_subgroup_kernel(&generate(shape), &format!("{shape:?}"));
                assert_eq!(module.entry_points[0].name, ENTRY);
                n += 1;
            }
        }
    }
    assert_eq!(n, 48);
    for bad in [(4, 8, 8), (3, 10, 8), (3, 8, 6), (3, 36, 4)].map(|(k, co_b, xb)| Shape { k, co_b, xb, vec4: false }) {
        assert!(!bad.valid(), "{bad:?}");
    }
}

#[test]
fn the_generated_transposed_conv_kernels_validate() {
    // src/ops/conv_transpose3d_unrolled.rs writes one kernel per (pass,
    // written channels, voxels, reduced channels a step): the shapes the
    // cpu-unrolled variant runs and the generator's edges (1 and 32
    // channels, 1 and 16 voxels, a step of 1 and 8, runs of weights that
    // do not fill 8 lanes).
    use ops::conv_transpose3d_unrolled::{generate, generate_weight, Pass, Shape, WeightShape, WEIGHT_ENTRY};
    let mut n = 0;
    for pass in [Pass::Forward, Pass::BackwardInput] {
        for (ch_b, xb, red_b) in [(8, 4, 4), (16, 4, 2), (32, 4, 1), (1, 1, 1), (3, 16, 8), (32, 2, 8)] {
            let shape = Shape { pass, ch_b, xb, red_b };
            assert!(shape.valid());
            let module = validated_subgroup_kernel(&generate(shape), &format!("{shape:?}"));
            assert_eq!(module.entry_points[0].name, pass.entry());
            n += 1;
        }
    }
    assert_eq!(n, 12);
    // The weight gradient's partial sums: the variant's block and the edges.
    for shape in [
        WeightShape { ci_b: 4, co_b: 4, xb: 2 },
        WeightShape { ci_b: 1, co_b: 1, xb: 1 },
        WeightShape { ci_b: 16, co_b: 8, xb: 8 },
        WeightShape { ci_b: 3, co_b: 5, xb: 3 },
    ] {
        assert!(shape.valid());
        let module = validated_subgroup_kernel(&generate_weight(shape), &format!("{shape:?}"));
        assert_eq!(module.entry_points[0].name, WEIGHT_ENTRY);
    }
    for bad in [
        WeightShape { ci_b: 0, co_b: 4, xb: 2 },
        WeightShape { ci_b: 17, co_b: 4, xb: 2 },
        WeightShape { ci_b: 4, co_b: 9, xb: 2 },
        WeightShape { ci_b: 4, co_b: 4, xb: 9 },
    ] {
        assert!(!bad.valid(), "{bad:?}");
    }
    for bad in [
        Shape { pass: Pass::Forward, ch_b: 0, xb: 4, red_b: 4 },
        Shape { pass: Pass::Forward, ch_b: 33, xb: 4, red_b: 4 },
        Shape { pass: Pass::BackwardInput, ch_b: 8, xb: 17, red_b: 1 },
        Shape { pass: Pass::BackwardInput, ch_b: 8, xb: 4, red_b: 9 },
    ] {
        assert!(!bad.valid(), "{bad:?}");
    }
}

/// `src` (a generated kernel, `what` names it) parsed and validated, and
/// checked to need subgroups: without the capability it must not
/// validate (it broadcasts).
fn validated_subgroup_kernel(src: &str, what: &str) -> naga::Module {
    let module = naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(src)));
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(src)));
    let no_subgroups = naga::valid::Capabilities::all() - naga::valid::Capabilities::SUBGROUP;
    assert!(
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), no_subgroups).validate(&module).is_err(),
        "{what}: validates without subgroups"
    );
    assert_eq!(module.entry_points.len(), 1, "{what}");
    module
}
