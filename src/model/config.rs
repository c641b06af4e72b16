//! Network settings, shape rules and the parameter layout of the NSN / NDN /
//! 3-D U-Net family (one encoder–decoder, three presets).

use crate::error::{Error, Result};
use crate::tensor::Shape5;

/// Which member of the family a network is (sets the preset and the default
/// loss and target used in training).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Nuclear segmentation network (depth 2, width 16, 3³).
    Nsn,
    /// Nuclear detection network (depth 4, width 12, 5³).
    Ndn,
    /// Plain 3-D U-Net baseline (depth 3, width 32, 3³).
    Unet3d,
}

impl Arch {
    pub fn name(&self) -> &'static str {
        match self {
            Arch::Nsn => "nsn",
            Arch::Ndn => "ndn",
            Arch::Unet3d => "unet3d",
        }
    }
    /// Parses `nsn`, `ndn` or `unet3d` (also `unet`, `3dunet`).
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "nsn" => Ok(Arch::Nsn),
            "ndn" => Ok(Arch::Ndn),
            "unet3d" | "unet" | "3dunet" | "unet-3d" => Ok(Arch::Unet3d),
            _ => Err(Error::invalid(format!("unknown model '{s}': expected nsn, ndn or unet3d"))),
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Settings of one network: depth L (number of 2×2×2 max-pools), base width
/// b, conv kernel k (odd; padding k/2), input channels and output classes
/// (2: softmax head, 1: sigmoid head).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    pub arch: Arch,
    pub depth: usize,
    pub base: usize,
    pub kernel: usize,
    pub in_channels: usize,
    pub classes: usize,
}

impl NetConfig {
    /// The published settings with a 2-class softmax head.
    pub fn preset(arch: Arch) -> Self {
        let (depth, base, kernel) = match arch {
            Arch::Nsn => (2, 16, 3),
            Arch::Ndn => (4, 12, 5),
            Arch::Unet3d => (3, 32, 3),
        };
        NetConfig { arch, depth, base, kernel, in_channels: 1, classes: 2 }
    }

    /// Checks the settings (the network code assumes them).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(format!("network settings: {m}")));
        if self.depth > 6 {
            return bad(format!("depth {} is larger than 6", self.depth));
        }
        if self.base == 0 || self.base > 512 {
            return bad(format!("base width {} must be 1..=512", self.base));
        }
        if self.kernel % 2 == 0 || self.kernel == 0 || self.kernel > 7 {
            return bad(format!("kernel {} must be odd and at most 7", self.kernel));
        }
        if self.in_channels == 0 {
            return bad("in_channels must be at least 1".into());
        }
        if self.classes != 1 && self.classes != 2 {
            return bad(format!("classes {} must be 1 (sigmoid head) or 2 (softmax head)", self.classes));
        }
        Ok(())
    }

    /// Every input side must be a multiple of this (2^depth).
    pub fn side_multiple(&self) -> usize {
        1 << self.depth
    }

    /// The output channel holding foreground probability: 0 for a sigmoid
    /// head, 1 for a 2-class softmax head.
    pub fn foreground_channel(&self) -> usize {
        if self.classes == 1 {
            0
        } else {
            1
        }
    }

    /// Learnable parameters: conv and transposed-conv weights and biases, BN
    /// gamma and beta (running statistics are buffers, not parameters).
    pub fn param_count(&self) -> usize {
        Layout::new(self).params.iter().map(|p| p.shape.numel()).sum()
    }

    /// Errors unless `shape` is a valid input: `in_channels` channels and
    /// every side a positive multiple of 2^depth.
    pub fn check_input(&self, shape: Shape5) -> Result<()> {
        let m = self.side_multiple();
        if shape.c != self.in_channels {
            return Err(Error::shape(
                format!("{} input", self.arch),
                format!("input {shape} has {} channels, the network takes {}", shape.c, self.in_channels),
            ));
        }
        if shape.n == 0 || [shape.d, shape.h, shape.w].iter().any(|&s| s == 0 || s % m != 0) {
            return Err(Error::shape(
                format!("{} input", self.arch),
                format!(
                    "input sides {}×{}×{} (D×H×W) must be positive multiples of {m} (2^depth, depth {}); pad or crop the volume",
                    shape.d, shape.h, shape.w, self.depth
                ),
            ));
        }
        Ok(())
    }

    /// Multiply-adds ×2 of one forward pass on input `shape` (convs and
    /// transposed convs only; BN, ReLU, pooling are negligible), counted
    /// over [`Layout::blocks`].
    pub fn forward_flops(&self, shape: Shape5) -> f64 {
        let l = Layout::new(self);
        let vox = |level: usize| (shape.n * shape.spatial()) as f64 / 8f64.powi(level as i32);
        let mut level = 0usize;
        let mut f = 0.0;
        for blk in &l.blocks {
            match blk {
                Block::Cbr { cbr: c, .. } => f += 2.0 * vox(level) * (c.cin * c.cout * c.k.pow(3)) as f64,
                Block::Down => level += 1,
                // Transposed conv: every input voxel writes 8 outputs.
                Block::Up { c, .. } => {
                    f += 2.0 * vox(level) * (c * c * 8) as f64;
                    level -= 1;
                }
                Block::Head { w, .. } => f += 2.0 * vox(level) * l.params[*w].shape.numel() as f64,
            }
        }
        f
    }
}

/// One named tensor of a network.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Shape5,
}

/// Conv (k³, bias) → batch norm → ReLU: indices of its tensors.
#[derive(Clone, Debug)]
pub struct Cbr {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    /// Indices into [`Layout::params`]: conv weight, conv bias, BN gamma, BN beta.
    pub w: usize,
    pub b: usize,
    pub gamma: usize,
    pub beta: usize,
    /// Indices into [`Layout::buffers`]: running mean and variance.
    pub rm: usize,
    pub rv: usize,
}

/// One step of a network's forward pass. A network is the list of its
/// blocks ([`Layout::blocks`]); the forward pass runs them in order with a
/// stack of skip tensors, and the backward pass runs them in reverse with a
/// stack of skip gradients (`model::unet`).
#[derive(Clone, Debug)]
pub enum Block {
    /// Conv + batch norm + ReLU. With `concat: Some(c)` its input is the
    /// channel concatenation of the current tensor (`c` channels, the
    /// upsampled one) and the skip on top of the stack (a decoder's first CBR).
    Cbr { cbr: Cbr, concat: Option<usize> },
    /// Pushes the current tensor onto the skip stack and max-pools it (2³, stride 2).
    Down,
    /// Transposed convolution (`c` → `c` channels, kernel 2, stride 2): indices of weight and bias.
    Up { c: usize, w: usize, b: usize },
    /// 1×1×1 convolution to the class logits: indices of weight and bias.
    Head { w: usize, b: usize },
}

impl Block {
    /// Short name for messages and tests (`enc1.0`-style names are in the tensors').
    pub fn kind(&self) -> &'static str {
        match self {
            Block::Cbr { concat: None, .. } => "conv-bn-relu",
            Block::Cbr { concat: Some(_), .. } => "concat-conv-bn-relu",
            Block::Down => "down",
            Block::Up { .. } => "up",
            Block::Head { .. } => "head",
        }
    }
}

/// The parameter and buffer layout of a network, in a fixed order (the
/// order of gradients and optimizer state too).
#[derive(Clone, Debug)]
pub struct Layout {
    pub params: Vec<TensorSpec>,
    /// BN running means (init 0) and variances (init 1).
    pub buffers: Vec<TensorSpec>,
    /// The forward pass, block by block: encoder level 0 (two CBRs); each
    /// level 1..=L: down, two CBRs; each decoder L..1: up, concat CBR, CBR;
    /// the head.
    pub blocks: Vec<Block>,
}

impl Layout {
    pub fn new(cfg: &NetConfig) -> Self {
        let mut l = Layout { params: Vec::new(), buffers: Vec::new(), blocks: Vec::new() };
        let k = cfg.kernel;
        let b = cfg.base;
        l.cbr_block("enc0.0", cfg.in_channels, b, k, None);
        l.cbr_block("enc0.1", b, 2 * b, k, None);
        for i in 1..=cfg.depth {
            let c = b << i;
            l.blocks.push(Block::Down);
            l.cbr_block(&format!("enc{i}.0"), c, c, k, None);
            l.cbr_block(&format!("enc{i}.1"), c, 2 * c, k, None);
        }
        for i in (1..=cfg.depth).rev() {
            let c = b << i;
            let w = l.param(format!("dec{i}.up.weight"), Shape5::new(2 * c, 2 * c, 2, 2, 2));
            let bias = l.param(format!("dec{i}.up.bias"), Shape5::new(1, 2 * c, 1, 1, 1));
            l.blocks.push(Block::Up { c: 2 * c, w, b: bias });
            // Its input: the upsampled tensor (2c channels) and the skip (c).
            l.cbr_block(&format!("dec{i}.0"), 3 * c, c, k, Some(2 * c));
            l.cbr_block(&format!("dec{i}.1"), c, c, k, None);
        }
        let w = l.param("head.weight".into(), Shape5::new(cfg.classes, 2 * b, 1, 1, 1));
        let bias = l.param("head.bias".into(), Shape5::new(1, cfg.classes, 1, 1, 1));
        l.blocks.push(Block::Head { w, b: bias });
        l
    }

    /// A conv-BN-ReLU block with new tensors named `name`.
    fn cbr_block(&mut self, name: &str, cin: usize, cout: usize, k: usize, concat: Option<usize>) {
        let cbr = self.cbr(name, cin, cout, k);
        self.blocks.push(Block::Cbr { cbr, concat });
    }

    fn param(&mut self, name: String, shape: Shape5) -> usize {
        self.params.push(TensorSpec { name, shape });
        self.params.len() - 1
    }

    fn cbr(&mut self, name: &str, cin: usize, cout: usize, k: usize) -> Cbr {
        let ch = Shape5::new(1, cout, 1, 1, 1);
        let w = self.param(format!("{name}.conv.weight"), Shape5::new(cout, cin, k, k, k));
        let b = self.param(format!("{name}.conv.bias"), ch);
        let gamma = self.param(format!("{name}.bn.weight"), ch);
        let beta = self.param(format!("{name}.bn.bias"), ch);
        self.buffers.push(TensorSpec { name: format!("{name}.bn.running_mean"), shape: ch });
        self.buffers.push(TensorSpec { name: format!("{name}.bn.running_var"), shape: ch });
        let rv = self.buffers.len() - 1;
        Cbr { cin, cout, k, w, b, gamma, beta, rm: rv - 1, rv }
    }

    /// Initial parameter values like PyTorch's defaults, reproducible from
    /// `seed`: conv and transposed-conv weights and biases uniform in
    /// ±1/√fan_in (Kaiming-uniform with a = √5), BN gamma 1 and beta 0.
    pub fn init_params(&self, seed: u64) -> Vec<crate::tensor::CpuTensor> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut out = Vec::with_capacity(self.params.len());
        // Fan-in of the weight each bias belongs to (weights come first).
        let mut fan_in = 1usize;
        for p in &self.params {
            let s = p.shape;
            let data: Vec<f32> = if p.name.ends_with("bn.weight") {
                vec![1.0; s.numel()]
            } else if p.name.ends_with("bn.bias") {
                vec![0.0; s.numel()]
            } else {
                if p.name.ends_with("weight") {
                    // Conv weights (cout, cin, k³): fan_in = cin·k³. Transposed
                    // conv weights (cin, cout, 2³): PyTorch uses dim 1 too.
                    fan_in = s.c * s.spatial();
                }
                let bound = 1.0 / (fan_in as f64).sqrt();
                (0..s.numel()).map(|_| rng.random_range(-bound..bound) as f32).collect()
            };
            out.push(crate::tensor::CpuTensor::from_vec(s, data));
        }
        out
    }

    /// Initial buffers: running means 0, running variances 1.
    pub fn init_buffers(&self) -> Vec<crate::tensor::CpuTensor> {
        self.buffers
            .iter()
            .map(|b| {
                let v = if b.name.ends_with("running_var") { 1.0 } else { 0.0 };
                crate::tensor::CpuTensor::from_vec(b.shape, vec![v; b.shape.numel()])
            })
            .collect()
    }
}
