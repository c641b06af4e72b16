//! Optimizers as GPU kernels (`shaders/optim.wgsl`): the update rules of
//! `torch.optim.SGD` (momentum without dampening or Nesterov) and
//! `torch.optim.Adam` (bias correction, not AMSGrad), both with L2 weight
//! decay added to the gradient. Updates are in place; state lives on the GPU
//! and can be saved and restored by name for checkpoints. [`average`] keeps
//! a running average of the weights (`train --weight-average`).

use crate::error::{Error, Result};
use crate::gpu::{grid, Arg, GpuContext, GpuTensor, ShaderSource};
use crate::ops::reduce::flat_windows;
use crate::tensor::{CpuTensor, Shape5};

pub const SHADER: ShaderSource = crate::shader!("optim");

/// The vec4 form of `shaders/optim.wgsl` (its element alias `V` as
/// `vec4<f32>`): the same updates on windows whose parameter, gradient and
/// state all start on 4 elements, counted in vec4s.
pub fn shader_vec4() -> &'static ShaderSource {
    static S: std::sync::OnceLock<ShaderSource> = std::sync::OnceLock::new();
    S.get_or_init(|| SHADER.form("optim_vec4", "", &super::VEC4_FORM[..1]))
}
/// Workgroup size of the update kernels.
pub const WG: u32 = 256;

/// `torch.optim.SGD(lr, momentum, weight_decay)`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SgdConfig {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
}

impl Default for SgdConfig {
    /// lr 0.01, momentum 0.9, no weight decay.
    fn default() -> Self {
        SgdConfig { lr: 1e-2, momentum: 0.9, weight_decay: 0.0 }
    }
}

/// `torch.optim.Adam(lr, betas = (beta1, beta2), eps, weight_decay)`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamConfig {
    /// lr 1e-4, betas (0.9, 0.999), eps 1e-8, no weight decay.
    fn default() -> Self {
        AdamConfig { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum OptimizerConfig {
    Sgd(SgdConfig),
    Adam(AdamConfig),
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig::Adam(AdamConfig::default())
    }
}

impl OptimizerConfig {
    /// The same settings with learning rate `lr` (checked).
    pub fn with_lr(&self, lr: f32) -> Result<Self> {
        let mut c = self.clone();
        match &mut c {
            OptimizerConfig::Sgd(s) => s.lr = lr,
            OptimizerConfig::Adam(a) => a.lr = lr,
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks the hyper-parameters as PyTorch does.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, v: f32| Err(Error::invalid(format!("optimizer: invalid {what} {v}")));
        let nonneg = |v: f32| v.is_finite() && v >= 0.0;
        match self {
            OptimizerConfig::Sgd(c) => {
                if !nonneg(c.lr) {
                    return bad("learning rate", c.lr);
                }
                if !nonneg(c.momentum) {
                    return bad("momentum", c.momentum);
                }
                if !nonneg(c.weight_decay) {
                    return bad("weight decay", c.weight_decay);
                }
            }
            OptimizerConfig::Adam(c) => {
                if !nonneg(c.lr) {
                    return bad("learning rate", c.lr);
                }
                if !(0.0..1.0).contains(&c.beta1) {
                    return bad("beta1 (must be in [0, 1))", c.beta1);
                }
                if !(0.0..1.0).contains(&c.beta2) {
                    return bad("beta2 (must be in [0, 1))", c.beta2);
                }
                if !nonneg(c.eps) {
                    return bad("eps", c.eps);
                }
                if !nonneg(c.weight_decay) {
                    return bad("weight decay", c.weight_decay);
                }
            }
        }
        Ok(())
    }

    /// Names of the state tensors kept per parameter.
    pub fn state_names(&self) -> &'static [&'static str] {
        match self {
            OptimizerConfig::Sgd(c) if c.momentum != 0.0 => &["momentum_buffer"],
            OptimizerConfig::Sgd(_) => &[],
            OptimizerConfig::Adam(_) => &["exp_avg", "exp_avg_sq"],
        }
    }
}

uniform_params! {
    #[derive(Default)]
    struct Params {
        n: u32,
        base_p: u32,
        base_g: u32,
        base_s1: u32,
        base_s2: u32,
        average_weight: f32,
        _pad: [u32; 2],
        lr: f32,
        weight_decay: f32,
        momentum: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        step_size: f32,
        bc2_sqrt: f32,
    }
}

/// An optimizer over a fixed list of parameter tensors, with its state on the GPU.
#[derive(Debug)]
pub struct Optimizer {
    config: OptimizerConfig,
    shapes: Vec<Shape5>,
    /// Per parameter, the state tensors named by `config.state_names()`.
    state: Vec<Vec<GpuTensor>>,
    step: u64,
}

impl Optimizer {
    /// An optimizer for parameters shaped like `params`, with zero state.
    pub fn new(ctx: &GpuContext, config: OptimizerConfig, params: &[&GpuTensor]) -> Result<Self> {
        config.validate()?;
        let names = config.state_names();
        let mut state = Vec::with_capacity(params.len());
        for (i, p) in params.iter().enumerate() {
            let mut s = Vec::new();
            for name in names {
                s.push(ctx.zeros(p.shape, &format!("optimizer {i}.{name}"))?);
            }
            state.push(s);
        }
        Ok(Optimizer { config, shapes: params.iter().map(|p| p.shape).collect(), state, step: 0 })
    }

    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// Changes the learning rate (for schedules); the state is kept.
    pub fn set_lr(&mut self, lr: f32) -> Result<()> {
        self.config = self.config.with_lr(lr)?;
        Ok(())
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// One update of every parameter in place from its gradient.
    pub fn step(&mut self, ctx: &GpuContext, params: &[&GpuTensor], grads: &[&GpuTensor]) -> Result<()> {
        let op = "optimizer step";
        if params.len() != self.shapes.len() || grads.len() != self.shapes.len() {
            return Err(Error::shape(
                op,
                format!(
                    "{} parameters and {} gradients given to an optimizer of {} parameters",
                    params.len(),
                    grads.len(),
                    self.shapes.len()
                ),
            ));
        }
        for (i, ((p, g), s)) in params.iter().zip(grads).zip(&self.shapes).enumerate() {
            if p.shape != *s || g.shape != *s {
                return Err(Error::shape(
                    op,
                    format!("parameter {i}: parameter {}, gradient {}, optimizer state {s}", p.shape, g.shape),
                ));
            }
        }
        let t = self.step + 1;
        let mut params_u = Params::default();
        let entry = match &self.config {
            OptimizerConfig::Sgd(c) => {
                params_u.lr = c.lr;
                params_u.weight_decay = c.weight_decay;
                params_u.momentum = c.momentum;
                if c.momentum != 0.0 {
                    "sgd_momentum_step"
                } else {
                    "sgd_step"
                }
            }
            OptimizerConfig::Adam(c) => {
                let bc1 = 1.0 - (c.beta1 as f64).powf(t as f64);
                let bc2 = 1.0 - (c.beta2 as f64).powf(t as f64);
                params_u.lr = c.lr;
                params_u.weight_decay = c.weight_decay;
                params_u.beta1 = c.beta1;
                params_u.beta2 = c.beta2;
                params_u.eps = c.eps;
                params_u.step_size = (c.lr as f64 / bc1) as f32;
                params_u.bc2_sqrt = bc2.sqrt() as f32;
                "adam_step"
            }
        };
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            let st = &self.state[i];
            let label = format!("{entry} param {i} {}", p.shape);
            dispatch_elementwise(
                ctx,
                entry,
                &label,
                [p, g, st.first().unwrap_or(p), st.get(1).unwrap_or(p)],
                params_u,
            )?;
        }
        self.step = t;
        Ok(())
    }

    /// The state tensors by name (`"{param index}.{name}"`, e.g. `"3.exp_avg"`).
    pub fn state(&self) -> Vec<(String, &GpuTensor)> {
        let names = self.config.state_names();
        let mut out = Vec::new();
        for (i, s) in self.state.iter().enumerate() {
            for (name, t) in names.iter().zip(s) {
                out.push((format!("{i}.{name}"), t));
            }
        }
        out
    }

    /// Restores the step count and every state tensor (from a checkpoint).
    /// Errors name a missing, unexpected or mis-shaped tensor.
    pub fn load_state(&mut self, ctx: &GpuContext, step: u64, state: &[(String, CpuTensor)]) -> Result<()> {
        let names = self.config.state_names();
        let mut expected = Vec::new();
        for (i, shape) in self.shapes.iter().enumerate() {
            for (j, name) in names.iter().enumerate() {
                expected.push((format!("{i}.{name}"), i, j, *shape));
            }
        }
        for (name, _) in state {
            if !expected.iter().any(|e| &e.0 == name) {
                return Err(Error::invalid(format!(
                    "optimizer state: unexpected tensor '{name}' (this optimizer keeps {})",
                    if names.is_empty() { "no state".to_string() } else { names.join(", ") }
                )));
            }
        }
        let mut found = Vec::new();
        for (name, i, j, shape) in &expected {
            let t = state
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t)
                .ok_or_else(|| Error::invalid(format!("optimizer state: missing tensor '{name}'")))?;
            if t.shape != *shape || t.data.len() != shape.numel() {
                return Err(Error::invalid(format!(
                    "optimizer state: tensor '{name}' has shape {}, expected {shape}",
                    t.shape
                )));
            }
            found.push((*i, *j, t));
        }
        for (i, j, t) in found {
            ctx.write_f32(&self.state[i][j].buf, 0, &t.data)?;
        }
        self.step = step;
        Ok(())
    }
}

/// Runs the element-wise kernel `entry` of `shaders/optim.wgsl` over
/// `[param, grad, s1, s2]` (bindings 0-3; an entry's unused bindings may
/// repeat another tensor), window by window: the whole vec4s as vec4s where
/// every window starts on 4 elements, the rest (at most 3 values) one by one.
fn dispatch_elementwise(
    ctx: &GpuContext,
    entry: &str,
    label: &str,
    t: [&GpuTensor; 4],
    params_u: Params,
) -> Result<()> {
    let pipeline = ctx.pipeline(&SHADER, entry, &[("WG", WG as f64)])?;
    let pipeline4 = ctx.pipeline(shader_vec4(), entry, &[("WG", WG as f64)])?;
    let max = ctx.max_window_elems();
    for r in flat_windows(t[0].numel(), 4, max) {
        let wp = t[0].window(ctx, r.start, r.len())?;
        let wg = t[1].window(ctx, r.start, r.len())?;
        let w1 = t[2].window(ctx, r.start, r.len())?;
        let w2 = t[3].window(ctx, r.start, r.len())?;
        let bases = [wp.base, wg.base, w1.base, w2.base];
        let body = if bases.iter().all(|b| b % 4 == 0) { r.len() / 4 * 4 } else { 0 };
        for (pipeline, v, start, n) in [(&pipeline4, 4, 0, body), (&pipeline, 1, body, r.len() - body)] {
            if n == 0 {
                continue;
            }
            let at = |b: u32| (b + start as u32) / v as u32;
            let u = Params {
                n: (n / v) as u32,
                base_p: at(wp.base),
                base_g: at(wg.base),
                base_s1: at(w1.base),
                base_s2: at(w2.base),
                ..params_u
            };
            ctx.dispatch(
                label,
                pipeline,
                &[Arg::Buf(&wp), Arg::Buf(&wg), Arg::Buf(&w1), Arg::Buf(&w2), Arg::Uniform(bytemuck::bytes_of(&u))],
                grid(((n / v) as u64).div_ceil(WG as u64)),
            )?;
        }
    }
    Ok(())
}

/// One update of a running average of weights, in place: each `avg[i] +=
/// weight * (current[i] - avg[i])` (`weight` in 0..=1: the current weights'
/// share; an exponential moving average with decay `1 - weight`).
pub fn average(ctx: &GpuContext, avg: &[&GpuTensor], current: &[&GpuTensor], weight: f32) -> Result<()> {
    check_average(avg.iter().map(|t| t.shape), current.iter().map(|t| t.shape), weight)?;
    let u = Params { average_weight: weight, ..Params::default() };
    for (i, (a, c)) in avg.iter().zip(current).enumerate() {
        let label = format!("average_step param {i} {}", c.shape);
        dispatch_elementwise(ctx, "average_step", &label, [c, c, a, a], u)?;
    }
    Ok(())
}

/// The checks of [`average`] and [`reference::average`]: the same shapes in
/// the same order, and a weight in 0..=1.
pub fn check_average(
    avg: impl ExactSizeIterator<Item = Shape5>,
    current: impl ExactSizeIterator<Item = Shape5>,
    weight: f32,
) -> Result<()> {
    let op = "weight average";
    if !(0.0..=1.0).contains(&weight) {
        return Err(Error::invalid(format!("{op}: the current weights' share {weight} is not in 0..=1")));
    }
    if avg.len() != current.len() {
        return Err(Error::shape(op, format!("{} averaged tensors for {} current ones", avg.len(), current.len())));
    }
    for (i, (a, c)) in avg.zip(current).enumerate() {
        if a != c {
            return Err(Error::shape(op, format!("tensor {i}: average {a}, current {c}")));
        }
    }
    Ok(())
}

/// Plain-Rust reference optimizers (f64 arithmetic, f64 state).
#[allow(clippy::needless_range_loop)]
pub mod reference {
    use super::OptimizerConfig;
    use crate::tensor::CpuTensor;

    pub struct CpuOptimizer {
        pub config: OptimizerConfig,
        pub step: u64,
        /// Per parameter, per state name, the values.
        pub state: Vec<Vec<Vec<f64>>>,
    }

    impl CpuOptimizer {
        pub fn new(config: OptimizerConfig, params: &[&CpuTensor]) -> Self {
            let k = config.state_names().len();
            let state = params.iter().map(|p| vec![vec![0f64; p.data.len()]; k]).collect();
            CpuOptimizer { config, step: 0, state }
        }

        /// Changes the learning rate (for schedules); the state is kept.
        pub fn set_lr(&mut self, lr: f32) -> crate::error::Result<()> {
            self.config = self.config.with_lr(lr)?;
            Ok(())
        }

        pub fn step(&mut self, params: &mut [CpuTensor], grads: &[CpuTensor]) {
            self.step += 1;
            let t = self.step as f64;
            for ((p, g), st) in params.iter_mut().zip(grads).zip(&mut self.state) {
                match &self.config {
                    OptimizerConfig::Sgd(c) => {
                        let (lr, mom, wd) = (c.lr as f64, c.momentum as f64, c.weight_decay as f64);
                        for i in 0..p.data.len() {
                            let w = p.data[i] as f64;
                            let mut d = g.data[i] as f64 + wd * w;
                            if mom != 0.0 {
                                let b = if self.step == 1 { d } else { mom * st[0][i] + d };
                                st[0][i] = b;
                                d = b;
                            }
                            p.data[i] = (w - lr * d) as f32;
                        }
                    }
                    OptimizerConfig::Adam(c) => {
                        let (lr, b1, b2, eps, wd) =
                            (c.lr as f64, c.beta1 as f64, c.beta2 as f64, c.eps as f64, c.weight_decay as f64);
                        let bc1 = 1.0 - b1.powf(t);
                        let bc2 = 1.0 - b2.powf(t);
                        for i in 0..p.data.len() {
                            let w = p.data[i] as f64;
                            let gi = g.data[i] as f64 + wd * w;
                            let m = b1 * st[0][i] + (1.0 - b1) * gi;
                            let v = b2 * st[1][i] + (1.0 - b2) * gi * gi;
                            st[0][i] = m;
                            st[1][i] = v;
                            p.data[i] = (w - lr / bc1 * m / (v.sqrt() / bc2.sqrt() + eps)) as f32;
                        }
                    }
                }
            }
        }

        /// State tensors by name, as [`super::Optimizer::state`] names them.
        pub fn state(&self, shapes: &[crate::tensor::Shape5]) -> Vec<(String, CpuTensor)> {
            let names = self.config.state_names();
            let mut out = Vec::new();
            for (i, (s, shape)) in self.state.iter().zip(shapes).enumerate() {
                for (name, v) in names.iter().zip(s) {
                    out.push((
                        format!("{i}.{name}"),
                        CpuTensor::from_vec(*shape, v.iter().map(|&x| x as f32).collect()),
                    ));
                }
            }
            out
        }
    }

    /// [`super::average`] in f64: `avg += weight * (current - avg)`.
    pub fn average(avg: &mut [CpuTensor], current: &[CpuTensor], weight: f32) -> crate::error::Result<()> {
        super::check_average(avg.iter().map(|t| t.shape), current.iter().map(|t| t.shape), weight)?;
        let w = weight as f64;
        for (a, c) in avg.iter_mut().zip(current) {
            for (x, &y) in a.data.iter_mut().zip(&c.data) {
                *x = (*x as f64 + w * (y as f64 - *x as f64)) as f32;
            }
        }
        Ok(())
    }
}
