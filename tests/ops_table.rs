//! Every case of the op table (`qcanet_gpu::ops::table`) against its CPU
//! reference at the table's small odd shapes, with NaN-poisoned outputs, run
//! twice (bit-identical), uncapped and under the table's capped binding
//! limits (where at least one capped check of a case must have a tensor
//! larger than the cap, so the split path runs; others may split only the
//! op's internal buffers). The same cases are what `bench` times. A case
//! whose needs the adapter lacks is not run, said on stdout: on a CPU
//! adapter only the cooperative-matrix ones may be, on any adapter at
//! least nine in ten cases run. And every reference backward against
//! central differences of its reference forward (`table::grad_cases`, each
//! by name), with the one helper `common::fd_check`.

mod common;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use common::*;
use qcanet_gpu::gpu::GpuContext;
use qcanet_gpu::ops::conv3d;
use qcanet_gpu::ops::table::{grad_cases, table, Bench, OpCase};

#[test]
fn every_case_matches_its_reference() {
    let mut capped: HashMap<u64, GpuContext> = HashMap::new();
    let mut failures = Vec::new();
    let mut runs = 0;
    let cases = table();
    let mut ran = 0;
    for case in &cases {
        if let Some(n) = case.unmet_need(ctx()) {
            not_run_for_lack_of(ctx(), n, &case.name());
            continue;
        }
        ran += 1;
        // (has a capped check, one of them binds a tensor larger than the cap)
        let mut split = (false, false);
        for check in &case.checks {
            let ctx = match check.max_binding {
                None => ctx(),
                Some(b) => &*capped.entry(b).or_insert_with(|| capped_ctx(b)),
            };
            let what = format!(
                "{} at {}{}",
                case.name(),
                check.dims,
                check.max_binding.map_or(String::new(), |b| format!(" (bindings capped at {b} bytes)"))
            );
            let r = match case.compare(ctx, check.dims, true) {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("{what}: {e}"));
                    continue;
                }
            };
            runs += 1;
            println!("{what}: errors {:?} (tolerance {:.0e})", r.errors, case.tol);
            if !r.passes(case.tol) {
                failures.push(format!(
                    "{what}: relative errors {:?} (tolerance {:.1e}) {}",
                    r.errors,
                    case.tol,
                    r.problems.join("; ")
                ));
            }
            if check.max_binding.is_some() {
                split.0 = true;
                split.1 |= r.largest_bytes > ctx.binding_limit();
            }
        }
        if split.0 && !split.1 {
            failures.push(format!(
                "{}: under no capped check is a tensor larger than one binding, the split path may not run",
                case.name()
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {runs} checks failed:\n{}", failures.len(), failures.join("\n"));
    // On any adapter (lavapipe lacks only the cooperative-matrix cases).
    println!("{ran} of {} cases run ({runs} checks)", cases.len());
    assert!(ran * 10 >= cases.len() * 9, "only {ran} of {} cases run", cases.len());
}

#[test]
fn a_case_without_outputs_fails() {
    // A case whose reference gives nothing compares nothing: a problem,
    // not a pass.
    let mut case = table().into_iter().find(|c| c.op == "add").expect("an add case");
    let dims = case.checks[0].dims;
    assert!(case.compare(ctx(), dims, false).unwrap().passes(case.tol));
    case.cpu = Box::new(|_| Vec::new());
    let r = case.compare(ctx(), dims, false).unwrap();
    assert!(!r.passes(case.tol), "{r:?}");
    case.gpu = Box::new(|_, _| Ok(Vec::new()));
    let r = case.compare(ctx(), dims, false).unwrap();
    assert!(!r.passes(case.tol) && r.problems[0].contains("no outputs"), "{r:?}");
}

#[test]
fn every_op_has_uncapped_and_split_checks_and_varied_inputs() {
    // op -> (uncapped check seen, capped check seen)
    let mut ops: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
    let mut names = BTreeSet::new();
    for case in table() {
        assert!(!case.checks.is_empty(), "{} has no test shape", case.name());
        assert!(names.insert(case.name()), "two cases named {}", case.name());
        let e = ops.entry(case.op).or_default();
        for c in &case.checks {
            e.0 |= c.max_binding.is_none();
            e.1 |= c.max_binding.is_some();
        }
        let i = case.inputs.as_ref()(case.checks[0].dims);
        for (k, t) in i.iter().enumerate() {
            let first = t.data[0];
            assert!(
                t.data.iter().any(|&v| v != first) || t.data.len() == 1,
                "{}: input {k} is constant, the check would prove little",
                case.name()
            );
        }
    }
    let missing: Vec<String> = ops
        .iter()
        .filter(|(_, (u, c))| !(*u && *c))
        .map(|(op, (u, c))| format!("{op}: uncapped {u}, capped {c}"))
        .collect();
    assert!(missing.is_empty(), "ops without both an uncapped and a capped check: {missing:?}");
    assert!(table().iter().any(|c| c.bench == Bench::Yes));
}

#[test]
fn every_registered_kernel_variant_is_checked_and_benchmarked() {
    use qcanet_gpu::ops::variants::registry;
    let cases = table();
    // Whether some of `cs` is checked uncapped and some capped.
    let both = |cs: &[&OpCase]| {
        let any = |capped: bool| cs.iter().any(|c| c.checks.iter().any(|k| k.max_binding.is_some() == capped));
        any(false) && any(true)
    };
    for ops in registry() {
        let mut seen = BTreeSet::new();
        for v in &ops.variants {
            assert!(seen.insert(v.name), "{}: two variants named {}", ops.op, v.name);
            let tag = format!("[{}]", v.name);
            // Tagged cases: conv3d's tiles in conv3d cases, the activation
            // storage types in the fused inference conv's cases.
            let mine: Vec<_> = cases.iter().filter(|c| c.variant.contains(&tag)).collect();
            assert!(both(&mine), "{} variant {} has no uncapped and capped table checks", ops.op, v.name);
            assert!(mine.iter().any(|c| c.bench == Bench::Yes), "{} variant {} is not benchmarked", ops.op, v.name);
            // Each conv tile's f16 form too, in the inference conv (the
            // only conv that reads f16), uncapped and capped.
            if ops.op == conv3d::KERNELS.op {
                let tag = format!("[{}, f16]", v.name);
                let f16: Vec<_> = cases.iter().filter(|c| c.op == "conv3d fused" && c.variant.contains(&tag)).collect();
                assert!(both(&f16), "{} variant {} has no uncapped and capped f16 table checks", ops.op, v.name);
            }
        }
        assert!(
            ops.variants.iter().any(|v| v.needs.is_empty()),
            "{}: some variant must need nothing (every adapter needs one)",
            ops.op
        );
    }
}

#[test]
fn every_reference_backward_matches_finite_differences() {
    let cases = grad_cases();
    let ops: BTreeSet<&str> = cases.iter().map(|c| c.op.as_str()).collect();
    assert_eq!(ops.len(), cases.len(), "two finite-difference cases of one name: {ops:?}");
    // Every reference backward, by its case's full name: none may vanish.
    let want = BTreeSet::from([
        "conv3d k1",
        "conv3d k3",
        "conv3d k5",
        "convT",
        "batchnorm train",
        "batchnorm train + relu",
        "batchnorm frozen",
        "batchnorm frozen + relu",
        "maxpool",
        "concat",
        "softmax",
        "sigmoid",
        "relu",
        "softmax cross-entropy",
        "softmax cross-entropy, voxel weights",
        "bce with logits",
        "bce with logits, soft targets",
        "soft dice",
    ]);
    assert_eq!(ops, want, "finite-difference cases");
    for c in &cases {
        assert!(!c.grads.is_empty(), "{}: no gradient to check", c.op);
        for (i, name, grad) in &c.grads {
            fd_check(&format!("{} d{name}", c.op), grad, &c.inputs[*i], c.step, c.tol, |xi| {
                let mut args = c.inputs.clone();
                args[*i] = xi.clone();
                (c.loss)(&args)
            });
        }
    }
}
