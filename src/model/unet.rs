//! The encoder–decoder written once over [`Backend`]: forward (training,
//! inference, or inference with batch norm folded into the convolutions),
//! backward and one training step, each a walk over the network's blocks
//! ([`Layout::blocks`]): every block has its forward and its backward here,
//! and the tape is what each block's forward keeps ([`BlockTape`]).

use super::backend::{Backend, LossSpec};
use super::config::{Block, Cbr, Layout, NetConfig};
use crate::error::{Error, Result};
use crate::tensor::{CpuTensor, Shape5};

/// Batch-norm epsilon (Chainer's default, which the original QCANet used).
pub const BN_EPS: f32 = 2e-5;
/// Batch-norm running-statistics momentum (PyTorch convention).
pub const BN_MOMENTUM: f32 = 0.1;

/// A network's tensors on one backend.
pub struct Net<B: Backend> {
    pub cfg: NetConfig,
    pub layout: Layout,
    /// In [`Layout::params`] order.
    pub params: Vec<B::T>,
    /// BN running statistics, in [`Layout::buffers`] order.
    pub buffers: Vec<B::T>,
    /// Training passes use frozen batch norm ([`Backend::bn_frozen`]): the
    /// running statistics, as inference does, held constant and never
    /// updated, so a training step optimises exactly the function inference
    /// computes (fine-tuning with small batches; `train --freeze-bn`).
    /// [`Net::recalibrate_bn`] still uses batch statistics. Default false.
    pub frozen_bn: bool,
}

/// What one CBR keeps for backward: its input, conv output and ReLU output.
struct CbrTape<B: Backend> {
    x: B::T,
    z: B::T,
    saved: B::BnSaved,
    y: B::T,
}

/// What one block's training-mode forward keeps for its backward.
pub struct BlockTape<B: Backend>(Saved<B>);

enum Saved<B: Backend> {
    Cbr(CbrTape<B>),
    /// The argmax indices and the shape of the pooled tensor.
    Down(B::PoolIdx, Shape5),
    /// The transposed conv's input.
    Up(B::T),
    /// The head's input.
    Head(B::T),
}

/// Activations kept by a training-mode forward pass for backward: one
/// [`BlockTape`] per block, in block order.
pub struct Tape<B: Backend> {
    blocks: Vec<BlockTape<B>>,
    /// Updated BN running statistics (committed by [`Net::train_step`]).
    pub new_buffers: Vec<Option<B::T>>,
    /// Weight of this batch's statistics in the running-statistics update.
    momentum: f32,
    /// Batch norm frozen ([`Net::frozen_bn`]): running statistics, no update.
    frozen: bool,
}

/// Parameters for inference with each CBR's batch norm (running statistics)
/// folded into its convolution ([`crate::ops::batchnorm::fold_into_conv`]),
/// so a CBR is one fused conv + ReLU ([`Backend::conv_fused`]) and the
/// decoder's skip concatenation is never materialised. Made by
/// [`Net::fold_bn`]; a snapshot: it does not follow later training steps.
pub struct Folded<B: Backend> {
    /// [`Layout::params`] order; the CBRs' conv weights and biases folded
    /// (their gamma and beta are then unused).
    params: Vec<B::T>,
    /// Activations stored in half precision between layers
    /// ([`Folded::with_half_storage`]).
    half: bool,
}

impl<B: Backend> Folded<B> {
    /// Stores the activations between layers in half precision
    /// ([`Backend::half_storage`]: f16 on the GPU, sums in f32); pooling,
    /// the transposed convolutions and the head take them back to f32.
    pub fn with_half_storage(mut self, on: bool) -> Self {
        self.half = on;
        self
    }
    pub fn half_storage(&self) -> bool {
        self.half
    }

    /// The parameters, [`Layout::params`] order (for profiling op by op).
    pub fn params(&self) -> &[B::T] {
        &self.params
    }
}

/// `t` as f32 for the ops that take only f32 when the pass stores
/// half-precision activations (`half`), else `t` itself (no copy).
fn full<'t, B: Backend>(be: &B::Ctx, half: bool, t: &'t B::T) -> Result<std::borrow::Cow<'t, B::T>> {
    Ok(if half { std::borrow::Cow::Owned(B::full_precision(be, t)?) } else { std::borrow::Cow::Borrowed(t) })
}

fn tape_bug(what: &str) -> Error {
    Error::invalid(format!("network backward: {what} (internal error: the tape does not match the blocks)"))
}

/// How a forward pass runs.
enum Mode<'a, B: Backend> {
    /// Batch norm with batch statistics (or frozen, [`Net::frozen_bn`]);
    /// keeps what backward needs.
    Train(&'a mut Tape<B>),
    /// Batch norm with running statistics, op by op.
    Infer,
    /// Batch norm folded into the convolutions.
    Folded(&'a Folded<B>),
}

impl<B: Backend> Net<B> {
    /// Builds the network from host tensors (in layout order).
    pub fn from_host(be: &B::Ctx, cfg: NetConfig, params: &[CpuTensor], buffers: &[CpuTensor]) -> Result<Self> {
        cfg.validate()?;
        let layout = Layout::new(&cfg);
        let check = |what: &str, specs: &[super::config::TensorSpec], ts: &[CpuTensor]| -> Result<()> {
            if specs.len() != ts.len() {
                return Err(Error::invalid(format!("{what}: {} tensors given, {} expected", ts.len(), specs.len())));
            }
            for (s, t) in specs.iter().zip(ts) {
                if s.shape != t.shape {
                    return Err(Error::shape("network", format!("{} is {}, expected {}", s.name, t.shape, s.shape)));
                }
            }
            Ok(())
        };
        check("parameters", &layout.params, params)?;
        check("buffers", &layout.buffers, buffers)?;
        Ok(Net {
            params: params.iter().map(|t| B::upload(be, t)).collect::<Result<_>>()?,
            buffers: buffers.iter().map(|t| B::upload(be, t)).collect::<Result<_>>()?,
            cfg,
            layout,
            frozen_bn: false,
        })
    }

    /// A freshly initialised network (see [`Layout::init_params`]).
    pub fn init(be: &B::Ctx, cfg: NetConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let layout = Layout::new(&cfg);
        let p = layout.init_params(seed);
        let b = layout.init_buffers();
        Self::from_host(be, cfg, &p, &b)
    }

    pub fn params_to_host(&self, be: &B::Ctx) -> Result<Vec<CpuTensor>> {
        self.params.iter().map(|t| B::download(be, t)).collect()
    }
    pub fn buffers_to_host(&self, be: &B::Ctx) -> Result<Vec<CpuTensor>> {
        self.buffers.iter().map(|t| B::download(be, t)).collect()
    }

    /// Every CBR of the network, in block order.
    fn cbrs(&self) -> impl Iterator<Item = &Cbr> {
        self.layout.blocks.iter().filter_map(|b| match b {
            Block::Cbr { cbr, .. } => Some(cbr),
            _ => None,
        })
    }

    /// The parameters for [`Net::logits_folded`]: batch norm with the
    /// current running statistics folded into each CBR's convolution (on the
    /// host, once; a few small downloads and uploads).
    pub fn fold_bn(&self, be: &B::Ctx) -> Result<Folded<B>> {
        let mut params = self.params.clone();
        let host = |t: &B::T| B::download(be, t);
        for c in self.cbrs() {
            let (w, b) = crate::ops::batchnorm::fold_into_conv(
                &host(&self.params[c.w])?,
                &host(&self.params[c.b])?,
                &host(&self.params[c.gamma])?,
                &host(&self.params[c.beta])?,
                &host(&self.buffers[c.rm])?,
                &host(&self.buffers[c.rv])?,
                BN_EPS,
            )?;
            params[c.w] = B::upload(be, &w)?;
            params[c.b] = B::upload(be, &b)?;
        }
        Ok(Folded { params, half: false })
    }

    /// One CBR on the channel concatenation of `xs` (one tensor, or the
    /// decoder's upsampled tensor and skip).
    fn cbr(&self, be: &B::Ctx, c: &Cbr, xs: &[&B::T], mode: &mut Mode<B>) -> Result<B::T> {
        if let Mode::Folded(f) = mode {
            if !f.half {
                return B::conv_fused(be, xs, &f.params[c.w], &f.params[c.b], true);
            }
            let halves = xs.iter().map(|x| B::half_storage(be, x)).collect::<Result<Vec<_>>>()?;
            let xs: Vec<&B::T> = halves.iter().collect();
            let y = B::conv_fused(be, &xs, &f.params[c.w], &f.params[c.b], true)?;
            return B::half_storage(be, &y);
        }
        let cat;
        let x = match xs {
            [x] => *x,
            [a, b] => {
                cat = B::concat(be, a, b)?;
                &cat
            }
            _ => return Err(Error::invalid("network: a CBR takes one or two inputs (internal error)")),
        };
        let p = &self.params;
        let z = B::conv(be, x, &p[c.w], &p[c.b])?;
        match mode {
            Mode::Folded(_) => unreachable!("handled above"),
            Mode::Infer => {
                B::bn_infer(be, &z, &p[c.gamma], &p[c.beta], &self.buffers[c.rm], &self.buffers[c.rv], BN_EPS, true)
            }
            Mode::Train(t) if t.frozen => {
                let (y, saved) = B::bn_frozen(
                    be,
                    &z,
                    &p[c.gamma],
                    &p[c.beta],
                    &self.buffers[c.rm],
                    &self.buffers[c.rv],
                    BN_EPS,
                    true,
                )?;
                t.blocks.push(BlockTape(Saved::Cbr(CbrTape { x: x.clone(), z, saved, y: y.clone() })));
                Ok(y)
            }
            Mode::Train(t) => {
                // Batch norm and ReLU in one pass; the backward reads the
                // ReLU's mask from y (`bn_backward` through it).
                let (y, saved, rm, rv) = B::bn_train(
                    be,
                    &z,
                    &p[c.gamma],
                    &p[c.beta],
                    &self.buffers[c.rm],
                    &self.buffers[c.rv],
                    BN_EPS,
                    t.momentum,
                    true,
                )?;
                t.new_buffers[c.rm] = Some(rm);
                t.new_buffers[c.rv] = Some(rv);
                t.blocks.push(BlockTape(Saved::Cbr(CbrTape { x: x.clone(), z, saved, y: y.clone() })));
                Ok(y)
            }
        }
    }

    /// Forward pass to logits (N, classes, D, H, W): the blocks in order. In
    /// training mode batch norm uses batch statistics and everything backward
    /// needs is kept.
    fn forward_impl(&self, be: &B::Ctx, x: &B::T, mut mode: Mode<B>) -> Result<B::T> {
        self.cfg.check_input(B::shape(be, x))?;
        let mut skips = Vec::with_capacity(self.cfg.depth);
        let mut h = x.clone();
        for blk in &self.layout.blocks {
            h = self.block_forward(be, blk, &h, &mut skips, &mut mode)?;
        }
        Ok(h)
    }

    /// One block's forward on `h`, with the stack of skip tensors.
    fn block_forward(
        &self,
        be: &B::Ctx,
        blk: &Block,
        h: &B::T,
        skips: &mut Vec<B::T>,
        mode: &mut Mode<B>,
    ) -> Result<B::T> {
        // Half-precision activations go back to f32 for pooling, the
        // transposed convolutions and the head.
        let half = matches!(mode, Mode::Folded(f) if f.half);
        let p = &self.params;
        match blk {
            Block::Cbr { cbr, concat: None } => self.cbr(be, cbr, &[h], mode),
            Block::Cbr { cbr, concat: Some(_) } => {
                let skip = skips.pop().ok_or_else(|| tape_bug("a concat block without a skip"))?;
                self.cbr(be, cbr, &[h, &skip], mode)
            }
            Block::Down => {
                let (out, idx) = B::pool(be, &*full::<B>(be, half, h)?)?;
                if let Mode::Train(t) = mode {
                    t.blocks.push(BlockTape(Saved::Down(idx, B::shape(be, h))));
                }
                skips.push(h.clone());
                Ok(out)
            }
            Block::Up { w, b, .. } => {
                let out = B::up(be, &*full::<B>(be, half, h)?, &p[*w], &p[*b])?;
                if let Mode::Train(t) = mode {
                    t.blocks.push(BlockTape(Saved::Up(h.clone())));
                }
                Ok(out)
            }
            Block::Head { w, b } => {
                if let Mode::Train(t) = mode {
                    t.blocks.push(BlockTape(Saved::Head(h.clone())));
                }
                B::conv(be, &*full::<B>(be, half, h)?, &p[*w], &p[*b])
            }
        }
    }

    /// A tape for [`Net::block_forward_train`] (batch-norm momentum as in training).
    pub fn new_tape(&self) -> Tape<B> {
        Tape {
            blocks: Vec::new(),
            new_buffers: (0..self.buffers.len()).map(|_| None).collect(),
            momentum: BN_MOMENTUM,
            frozen: self.frozen_bn,
        }
    }

    /// Block `i` of [`Layout::blocks`] alone in training mode: its output on
    /// `h` (with the skip stack, as the whole pass keeps it), its
    /// [`BlockTape`] pushed onto `tape`. For checking blocks one by one; the
    /// whole pass is [`Net::forward_train`].
    pub fn block_forward_train(
        &self,
        be: &B::Ctx,
        i: usize,
        h: &B::T,
        skips: &mut Vec<B::T>,
        tape: &mut Tape<B>,
    ) -> Result<B::T> {
        let blk = self.layout.blocks.get(i).ok_or_else(|| Error::invalid(format!("no block {i}")))?;
        self.block_forward(be, blk, h, skips, &mut Mode::Train(tape))
    }

    /// Block `i`'s backward from its output gradient `dy`, taking its
    /// [`BlockTape`] from the top of `tape`: its parameters' gradients into
    /// `grads` ([`Layout::params`] order), a concat block's skip gradient
    /// pushed onto `dskips` and a down block's popped from it; returns the
    /// input gradient (None for the first block, whose input is the image).
    pub fn block_backward(
        &self,
        be: &B::Ctx,
        i: usize,
        tape: &mut Tape<B>,
        dy: &B::T,
        dskips: &mut Vec<B::T>,
        grads: &mut [Option<B::T>],
    ) -> Result<Option<B::T>> {
        let blk = self.layout.blocks.get(i).ok_or_else(|| Error::invalid(format!("no block {i}")))?;
        let BlockTape(saved) = tape.blocks.pop().ok_or_else(|| tape_bug("the tape is shorter than the blocks"))?;
        let p = &self.params;
        Ok(match (blk, saved) {
            (Block::Cbr { cbr, concat }, Saved::Cbr(t)) => {
                let dx = self.cbr_backward(be, cbr, t, dy, grads, i > 0)?;
                match (concat, dx) {
                    (Some(c), Some(dcat)) => {
                        let (du, dskip) = B::concat_backward(be, &dcat, *c)?;
                        dskips.push(dskip);
                        Some(du)
                    }
                    (_, dx) => dx,
                }
            }
            (Block::Down, Saved::Down(idx, xs)) => {
                let dp = B::pool_backward(be, &idx, xs, dy)?;
                let ds = dskips.pop().ok_or_else(|| tape_bug("a down block without a skip gradient"))?;
                Some(B::add(be, &dp, &ds)?)
            }
            (Block::Up { w, b, .. }, Saved::Up(x)) => {
                let (dx, dw, db) = B::up_backward(be, &x, &p[*w], dy)?;
                grads[*w] = Some(dw);
                grads[*b] = Some(db);
                Some(dx)
            }
            (Block::Head { w, b }, Saved::Head(x)) => {
                let (dx, dw, db) = B::conv_backward(be, &x, &p[*w], dy, i > 0)?;
                grads[*w] = Some(dw);
                grads[*b] = Some(db);
                dx
            }
            (blk, _) => return Err(tape_bug(&format!("block {i} ({}) meets another block's tape", blk.kind()))),
        })
    }

    /// Inference-mode logits (BN with running statistics).
    pub fn logits(&self, be: &B::Ctx, x: &B::T) -> Result<B::T> {
        self.forward_impl(be, x, Mode::Infer)
    }

    /// [`Net::logits`] with batch norm folded into the convolutions (`f`
    /// from [`Net::fold_bn`] on this network): one fused kernel per CBR.
    /// Equal to [`Net::logits`] up to floating-point rounding.
    pub fn logits_folded(&self, be: &B::Ctx, f: &Folded<B>, x: &B::T) -> Result<B::T> {
        if f.params.len() != self.params.len() {
            return Err(Error::invalid("folded parameters of another network"));
        }
        self.forward_impl(be, x, Mode::Folded(f))
    }

    /// [`Net::predict`] with batch norm folded into the convolutions.
    pub fn predict_folded(&self, be: &B::Ctx, f: &Folded<B>, x: &B::T) -> Result<B::T> {
        let z = self.logits_folded(be, f, x)?;
        self.activate(be, &z)
    }

    /// Inference-mode probabilities: softmax (2 classes) or sigmoid (1 class).
    pub fn predict(&self, be: &B::Ctx, x: &B::T) -> Result<B::T> {
        let z = self.logits(be, x)?;
        self.activate(be, &z)
    }

    pub fn activate(&self, be: &B::Ctx, logits: &B::T) -> Result<B::T> {
        if self.cfg.classes == 1 {
            B::sigmoid(be, logits)
        } else {
            B::softmax(be, logits)
        }
    }

    /// Training-mode forward: logits and the tape for [`Net::backward`]
    /// (batch statistics, or the running ones with [`Net::frozen_bn`]).
    pub fn forward_train(&self, be: &B::Ctx, x: &B::T) -> Result<(B::T, Tape<B>)> {
        self.forward_train_tape(be, x, self.new_tape())
    }

    fn forward_train_tape(&self, be: &B::Ctx, x: &B::T, mut tape: Tape<B>) -> Result<(B::T, Tape<B>)> {
        let z = self.forward_impl(be, x, Mode::Train(&mut tape))?;
        Ok((z, tape))
    }

    /// Re-estimates the batch-norm running statistics as the plain average of
    /// the batch statistics of `batches` ("precise BN", Wu & Johnson 2021):
    /// a training-mode forward pass per batch, the k-th with momentum 1/k, so
    /// the result no longer depends on the last few batches of training.
    /// Parameters are unchanged. Returns the number of batches used; with
    /// none, the statistics are left as they were.
    pub fn recalibrate_bn(&mut self, be: &B::Ctx, batches: impl IntoIterator<Item = Result<B::T>>) -> Result<usize> {
        let mut k = 0usize;
        for x in batches {
            let x = x?;
            k += 1;
            let tape = Tape { momentum: 1.0 / k as f32, frozen: false, ..self.new_tape() };
            let (_, mut tape) = self.forward_train_tape(be, &x, tape)?;
            for (b, nb) in self.buffers.iter_mut().zip(std::mem::take(&mut tape.new_buffers)) {
                if let Some(nb) = nb {
                    *b = nb;
                }
            }
        }
        Ok(k)
    }

    fn cbr_backward(
        &self,
        be: &B::Ctx,
        c: &Cbr,
        t: CbrTape<B>,
        dy: &B::T,
        grads: &mut [Option<B::T>],
        need_dx: bool,
    ) -> Result<Option<B::T>> {
        let (dz, dg, dbeta) = B::bn_backward(be, &t.z, &self.params[c.gamma], &t.saved, Some(&t.y), dy)?;
        drop((t.y, t.z, t.saved));
        let (dx, dw, db) = B::conv_backward(be, &t.x, &self.params[c.w], &dz, need_dx)?;
        grads[c.w] = Some(dw);
        grads[c.b] = Some(db);
        grads[c.gamma] = Some(dg);
        grads[c.beta] = Some(dbeta);
        Ok(dx)
    }

    /// Gradients of every parameter (layout order) from the logits' gradient:
    /// the blocks' backwards in reverse order.
    pub fn backward(&self, be: &B::Ctx, mut tape: Tape<B>, dlogits: &B::T) -> Result<Vec<B::T>> {
        let mut grads: Vec<Option<B::T>> = (0..self.params.len()).map(|_| None).collect();
        let mut dskips = Vec::with_capacity(self.cfg.depth);
        let mut dh = dlogits.clone();
        for i in (0..self.layout.blocks.len()).rev() {
            match self.block_backward(be, i, &mut tape, &dh, &mut dskips, &mut grads)? {
                Some(d) => dh = d,
                None if i == 0 => {}
                None => return Err(tape_bug("a block gave no input gradient")),
            }
        }
        if !tape.blocks.is_empty() || !dskips.is_empty() {
            return Err(tape_bug("the tape is longer than the blocks"));
        }
        grads.into_iter().map(|g| g.ok_or_else(|| tape_bug("a parameter got no gradient"))).collect()
    }

    /// Loss and its gradient on training-mode logits.
    pub fn loss(&self, be: &B::Ctx, spec: &LossSpec, logits: &B::T, target: &B::T) -> Result<(B::T, B::T)> {
        match (spec, self.cfg.classes) {
            (LossSpec::Ce { class_weights }, 2) if class_weights.len() == 2 => B::loss(be, spec, logits, target),
            (LossSpec::Ce { class_weights }, 2) => {
                Err(Error::invalid(format!("cross-entropy needs 2 class weights, {} given", class_weights.len())))
            }
            (LossSpec::Ce { .. }, c) => {
                Err(Error::invalid(format!("cross-entropy needs a 2-class head, the network has {c} class(es)")))
            }
            (LossSpec::Bce { .. }, 1) => B::loss(be, spec, logits, target),
            (LossSpec::Bce { .. }, c) => {
                Err(Error::invalid(format!("binary cross-entropy needs a 1-class head, the network has {c} classes")))
            }
            (LossSpec::Dice { .. }, _) => B::loss(be, spec, logits, target),
        }
    }

    /// One training step on a batch: forward, loss, backward, optimizer
    /// update, running statistics committed. Returns the loss tensor.
    pub fn train_step(
        &mut self,
        be: &B::Ctx,
        x: &B::T,
        target: &B::T,
        spec: &LossSpec,
        opt: &mut B::Opt,
    ) -> Result<B::T> {
        let (logits, mut tape) = self.forward_train(be, x)?;
        let (loss, dlogits) = self.loss(be, spec, &logits, target)?;
        drop(logits);
        let new_buffers = std::mem::take(&mut tape.new_buffers);
        let grads = self.backward(be, tape, &dlogits)?;
        drop(dlogits);
        B::opt_step(be, opt, &mut self.params, &grads)?;
        for (b, nb) in self.buffers.iter_mut().zip(new_buffers) {
            if let Some(nb) = nb {
                *b = nb;
            }
        }
        Ok(loss)
    }
}
