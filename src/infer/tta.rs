//! Test-time augmentation: each tile is also predicted mirrored along some
//! axes, every output is mirrored back, and the probabilities are averaged.
//!
//! The networks were trained with random flips along all three axes, so a
//! mirrored input should give the mirrored output; where it does not, the
//! disagreement is noise of the network, and the mean of `n` views lowers it
//! (at `n` times the prediction time). The views are the first `n` of the
//! eight mirror images, in the order identity, x, y, x+y, z, z+x, z+y, z+y+x:
//! `n` = 1 (off), 2, 4 or 8.

use super::tiles::{mean_of, Predictor};
use crate::error::{Error, Result};
use crate::tensor::{CpuTensor, Shape5};

/// The view counts [`flips`] accepts.
pub const VIEWS: [usize; 4] = [1, 2, 4, 8];

/// The first `n` mirror images as (z, y, x) flags; `n` must be one of [`VIEWS`].
pub fn flips(n: usize) -> Result<Vec<[bool; 3]>> {
    if !VIEWS.contains(&n) {
        return Err(Error::invalid(format!(
            "test-time augmentation with {n} views: expected one of 1 (off), 2 (x), 4 (x, y) or 8 (x, y, z mirrors)"
        )));
    }
    Ok((0..n).map(|k| [k & 4 != 0, k & 2 != 0, k & 1 != 0]).collect())
}

/// Every channel of a (N, C, D, H, W) tensor mirrored along the flagged
/// (z, y, x) axes. Its own inverse.
pub fn mirror(t: &CpuTensor, flip: [bool; 3]) -> CpuTensor {
    if flip == [false; 3] {
        return t.clone();
    }
    let s = t.shape;
    let (d, h, w) = (s.d, s.h, s.w);
    let at = |i: usize, len: usize, f: bool| if f { len - 1 - i } else { i };
    let mut out = Vec::with_capacity(t.data.len());
    for block in t.data.chunks_exact(d * h * w) {
        for z in 0..d {
            for y in 0..h {
                let row = (at(z, d, flip[0]) * h + at(y, h, flip[1])) * w;
                let src = &block[row..row + w];
                if flip[2] {
                    out.extend(src.iter().rev());
                } else {
                    out.extend_from_slice(src);
                }
            }
        }
    }
    CpuTensor::from_vec(Shape5::new(s.n, s.c, d, h, w), out)
}

/// A predictor that averages another's output over mirror images of each tile.
pub struct MirrorMean<'p> {
    inner: &'p mut dyn Predictor,
    flips: Vec<[bool; 3]>,
}

impl<'p> MirrorMean<'p> {
    /// `inner` averaged over the first `views` mirror images (see [`flips`]).
    pub fn new(inner: &'p mut dyn Predictor, views: usize) -> Result<Self> {
        Ok(MirrorMean { inner, flips: flips(views)? })
    }
}

impl Predictor for MirrorMean<'_> {
    fn side_multiple(&self) -> usize {
        self.inner.side_multiple()
    }
    fn classes(&self) -> usize {
        self.inner.classes()
    }
    fn predict_tile(&mut self, tile: &CpuTensor) -> Result<CpuTensor> {
        if self.flips == [[false; 3]] {
            return self.inner.predict_tile(tile);
        }
        let inner = &mut *self.inner;
        mean_of(
            self.flips.iter().map(|&f| Ok(mirror(&inner.predict_tile(&mirror(tile, f))?, f))),
            "test-time augmentation",
        )
    }
}
