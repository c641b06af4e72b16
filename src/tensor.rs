//! Shapes and the host-side (CPU) tensor used by every CPU reference.
//!
//! Layout is N, C, D, H, W (row-major, W fastest), the same on CPU and GPU, so
//! each channel of one sample is a contiguous run of `D*H*W` values.

use rand::{Rng, SeedableRng};

/// A 5-D shape in N, C, D, H, W order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Shape5 {
    pub n: usize,
    pub c: usize,
    pub d: usize,
    pub h: usize,
    pub w: usize,
}

impl Shape5 {
    pub const fn new(n: usize, c: usize, d: usize, h: usize, w: usize) -> Self {
        Shape5 { n, c, d, h, w }
    }
    /// Number of voxels of one channel of one sample.
    pub const fn spatial(&self) -> usize {
        self.d * self.h * self.w
    }
    pub const fn numel(&self) -> usize {
        self.n * self.c * self.spatial()
    }
    /// Bytes of this many f32 values (host tensors; a GPU tensor's own
    /// size is [`crate::gpu::GpuTensor::bytes`], by its element type).
    pub const fn f32_bytes(&self) -> u64 {
        (self.numel() * 4) as u64
    }
    /// Linear index of element (n, c, z, y, x).
    #[inline]
    pub const fn idx(&self, n: usize, c: usize, z: usize, y: usize, x: usize) -> usize {
        (((n * self.c + c) * self.d + z) * self.h + y) * self.w + x
    }
    pub fn with_c(&self, c: usize) -> Self {
        Shape5 { c, ..*self }
    }
    pub fn dims(&self) -> [usize; 5] {
        [self.n, self.c, self.d, self.h, self.w]
    }
}

impl std::fmt::Display for Shape5 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}, {}, {}, {}, {}]", self.n, self.c, self.d, self.h, self.w)
    }
}

/// A host tensor of f32 values.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuTensor {
    pub shape: Shape5,
    pub data: Vec<f32>,
}

impl CpuTensor {
    pub fn zeros(shape: Shape5) -> Self {
        CpuTensor { shape, data: vec![0.0; shape.numel()] }
    }
    pub fn from_vec(shape: Shape5, data: Vec<f32>) -> Self {
        assert_eq!(shape.numel(), data.len(), "CpuTensor::from_vec: {shape} needs {} values", shape.numel());
        CpuTensor { shape, data }
    }
    /// Uniform random values in [lo, hi), reproducible from `seed`.
    pub fn random(shape: Shape5, seed: u64, lo: f32, hi: f32) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let data = (0..shape.numel()).map(|_| rng.random_range(lo..hi)).collect();
        CpuTensor { shape, data }
    }
    #[inline]
    pub fn at(&self, n: usize, c: usize, z: usize, y: usize, x: usize) -> f32 {
        self.data[self.shape.idx(n, c, z, y, x)]
    }
    /// The contiguous values of channel `c` of sample `n`.
    pub fn channel(&self, n: usize, c: usize) -> &[f32] {
        let s = self.shape.spatial();
        let start = (n * self.shape.c + c) * s;
        &self.data[start..start + s]
    }
}

/// `‖a − b‖ / ‖b‖` in f64; the measure every GPU-against-reference test uses.
/// Any NaN in either input gives NaN, so an unwritten (NaN-poisoned) output fails.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "rel_err: lengths differ");
    let mut num = 0.0f64;
    let mut den = 0.0f64;
    for (&x, &y) in a.iter().zip(b) {
        let d = x as f64 - y as f64;
        num += d * d;
        den += (y as f64) * (y as f64);
    }
    if num.is_nan() || den.is_nan() {
        return f64::NAN;
    }
    if den == 0.0 {
        return num.sqrt();
    }
    (num / den).sqrt()
}
