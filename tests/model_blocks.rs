//! GPU/CPU parity block by block: every block of a network's block list
//! (`Layout::blocks`: conv-BN-ReLU, concat-conv-BN-ReLU, down, up, head) run
//! alone in training mode on the GPU and on the CPU references, each fed the
//! same input (the CPU's output of the block before, and the same skip
//! stack), forward and backward, so a mismatch names the block, not only the
//! network (`tests/model_step.rs` checks whole networks).

mod common;

use common::{assert_close, ctx, down, rand, up};
use qcanet_gpu::model::{Arch, Block, Cpu, Gpu, Layout, Net, NetConfig};
use qcanet_gpu::tensor::{CpuTensor, Shape5};

/// One block: f32 kernels against f64-accumulating references.
const TOL: f64 = 1e-4;

fn check_blocks(cfg: NetConfig, shape: Shape5) {
    let ctx = ctx();
    let layout = Layout::new(&cfg);
    let p0 = layout.init_params(21);
    // Running statistics other than 0 and 1, so the buffers' updates are checked too.
    let b0: Vec<CpuTensor> = layout.buffers.iter().enumerate().map(|(i, b)| rand(b.shape, 300 + i as u64)).collect();
    let g = Net::<Gpu>::from_host(ctx, cfg.clone(), &p0, &b0).unwrap();
    let c = Net::<Cpu>::from_host(&(), cfg.clone(), &p0, &b0).unwrap();
    let blocks = &layout.blocks;
    let kinds: Vec<&str> = blocks.iter().map(Block::kind).collect();
    for k in ["conv-bn-relu", "concat-conv-bn-relu", "down", "up", "head"] {
        assert!(kinds.contains(&k), "the network has no {k} block: {kinds:?}");
    }

    // Forward, block by block, both fed the CPU's tensors.
    let (mut gt, mut ct) = (g.new_tape(), c.new_tape());
    let mut h = rand(shape, 7);
    let mut skips: Vec<CpuTensor> = Vec::new();
    for (i, blk) in blocks.iter().enumerate() {
        let mut gskips: Vec<_> = skips.iter().map(|s| up(ctx, s)).collect();
        let out_g = g.block_forward_train(ctx, i, &up(ctx, &h), &mut gskips, &mut gt).unwrap();
        let out_c = c.block_forward_train(&(), i, &h, &mut skips, &mut ct).unwrap();
        assert_eq!(gskips.len(), skips.len(), "block {i} ({}) skip stack", blk.kind());
        assert_close(&format!("block {i} ({}) forward", blk.kind()), &down(ctx, &out_g), &out_c, TOL);
        h = out_c;
    }
    assert!(skips.is_empty(), "every skip was consumed");
    for (i, spec) in layout.buffers.iter().enumerate() {
        let (a, b) = (gt.new_buffers[i].as_ref().unwrap(), ct.new_buffers[i].as_ref().unwrap());
        assert_close(&format!("running statistic {}", spec.name), &down(ctx, a), b, TOL);
    }

    // Backward, block by block in reverse, both fed the CPU's gradients.
    let mut dh = rand(h.shape, 8);
    let mut dskips: Vec<CpuTensor> = Vec::new();
    let mut gg: Vec<Option<_>> = (0..layout.params.len()).map(|_| None).collect();
    let mut cg: Vec<Option<CpuTensor>> = (0..layout.params.len()).map(|_| None).collect();
    for (i, blk) in blocks.iter().enumerate().rev() {
        let what = format!("block {i} ({})", blk.kind());
        let mut gdskips: Vec<_> = dskips.iter().map(|s| up(ctx, s)).collect();
        let dx_g = g.block_backward(ctx, i, &mut gt, &up(ctx, &dh), &mut gdskips, &mut gg).unwrap();
        let dx_c = c.block_backward(&(), i, &mut ct, &dh, &mut dskips, &mut cg).unwrap();
        assert_eq!(gdskips.len(), dskips.len(), "{what}: skip-gradient stack");
        if let (Some(a), Some(b)) = (gdskips.last(), dskips.last()) {
            assert_close(&format!("{what} skip gradient"), &down(ctx, a), b, TOL);
        }
        // This block's parameter gradients (the conv bias before batch norm
        // has a gradient that is rounding noise: compared in size only).
        for (j, spec) in layout.params.iter().enumerate() {
            if let (Some(a), Some(b)) = (&gg[j], &cg[j]) {
                if spec.name.ends_with(".conv.bias") {
                    let n = |t: &CpuTensor| t.data.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
                    assert!(n(&down(ctx, a)) < 1e-3 && n(b) < 1e-3, "{what}: {} should vanish", spec.name);
                } else {
                    assert_close(&format!("{what} grad {}", spec.name), &down(ctx, a), b, TOL);
                }
                gg[j] = None;
                cg[j] = Some(b.clone());
            }
        }
        match (dx_g, dx_c) {
            (Some(a), Some(b)) => {
                assert_close(&format!("{what} input gradient"), &down(ctx, &a), &b, TOL);
                dh = b;
            }
            (None, None) => assert_eq!(i, 0, "{what}: only the first block has no input gradient"),
            _ => panic!("{what}: one device gave an input gradient, the other not"),
        }
    }
    assert!(dskips.is_empty(), "every skip gradient was consumed");
    assert!(cg.iter().all(Option::is_some), "every parameter got a gradient");
}

#[test]
fn nsn_blocks_match_cpu_reference() {
    let cfg = NetConfig { depth: 2, base: 3, kernel: 3, ..NetConfig::preset(Arch::Nsn) };
    check_blocks(cfg, Shape5::new(2, 1, 8, 12, 4));
}

#[test]
fn ndn_blocks_match_cpu_reference() {
    // 5³ kernels and a sigmoid head.
    let cfg = NetConfig { depth: 1, base: 2, kernel: 5, classes: 1, ..NetConfig::preset(Arch::Ndn) };
    check_blocks(cfg, Shape5::new(1, 1, 6, 4, 10));
}
