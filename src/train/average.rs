//! A running average of the weights over training steps (an exponential
//! moving average, `train --weight-average DECAY`). With batches of one or
//! two patches each step moves the weights by one patch's gradient, and the
//! scores of consecutive epochs swing with it; the average of the recent
//! weights is a smoother network, often a better one (Polyak-Ruppert
//! averaging in its exponential form, as `timm`'s `ModelEmaV2` or
//! `torch.optim.swa_utils.get_ema_multi_avg_fn`). When it is on, validation scores the averaged
//! weights (their batch-norm statistics re-estimated first) and the best
//! checkpoint keeps them; training itself never reads them.

use crate::error::Result;
use crate::model::Backend;
use crate::tensor::CpuTensor;

/// The running average of a network's parameters ([`crate::model::Net::params`]
/// order).
pub struct WeightAverage<B: Backend> {
    /// The decay at full strength: each update keeps this share of the
    /// average (0 < decay < 1).
    pub decay: f32,
    /// Updates so far (drives the warm-up, see [`share`]).
    pub updates: u64,
    /// The averaged parameters.
    pub params: Vec<B::T>,
}

/// The current weights' share in update `t` (0-based: `t` earlier
/// updates): `1 - min(decay, (1 + t) / (10 + t))`, the warm-up of
/// `tf.train.ExponentialMovingAverage(num_updates)`, so the first updates
/// follow the young network closely (0.9, 0.82, ...) and the average does
/// not remember its random start for `1 / (1 - decay)` steps.
pub fn share(decay: f32, t: u64) -> f32 {
    let warm = (1.0 + t as f64) / (10.0 + t as f64);
    (1.0 - (decay as f64).min(warm)) as f32
}

impl<B: Backend> WeightAverage<B> {
    /// An average starting at `params` (copied: the average never shares a
    /// tensor with the network).
    pub fn start(cx: &B::Ctx, params: &[B::T], decay: f32) -> Result<Self> {
        let params = params.iter().map(|t| B::upload(cx, &B::download(cx, t)?)).collect::<Result<_>>()?;
        Ok(WeightAverage { decay, updates: 0, params })
    }

    /// An average restored from a checkpoint after `updates` updates, for
    /// a network whose parameters are `current` (checked as every update
    /// checks them: [`crate::ops::optim::check_average`]).
    pub fn restore(cx: &B::Ctx, params: &[CpuTensor], current: &[B::T], decay: f32, updates: u64) -> Result<Self> {
        let shapes = current.iter().map(|t| B::shape(cx, t));
        crate::ops::optim::check_average(params.iter().map(|t| t.shape), shapes, share(decay, updates))?;
        let params = params.iter().map(|t| B::upload(cx, t)).collect::<Result<_>>()?;
        Ok(WeightAverage { decay, updates, params })
    }

    /// One update towards `current` (after a training step).
    pub fn update(&mut self, cx: &B::Ctx, current: &[B::T]) -> Result<()> {
        B::average(cx, &mut self.params, current, share(self.decay, self.updates))?;
        self.updates += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{share, WeightAverage};
    use crate::model::Cpu;
    use crate::tensor::{CpuTensor, Shape5};

    #[test]
    fn the_share_warms_up_then_stays_at_one_minus_decay() {
        assert!((share(0.99, 0) - 0.9).abs() < 1e-7);
        assert!((share(0.99, 1) - (1.0 - 2.0 / 11.0)).abs() < 1e-7);
        let s: Vec<f32> = (0..2000).map(|t| share(0.99, t)).collect();
        assert!(s.windows(2).all(|w| w[1] <= w[0]), "the share never grows");
        // (1 + t) / (10 + t) reaches 0.99 at t = 890.
        assert!((share(0.99, 889) - 0.01).abs() > 1e-6 && (share(0.99, 890) - 0.01).abs() < 1e-6);
        // (1 + t) / (10 + t) reaches 0.5 at t = 8.
        assert!(share(0.5, 7) > 0.52 && (share(0.5, 8) - 0.5).abs() < 1e-7 && share(0.5, 100) == 0.5);
    }

    #[test]
    fn the_average_is_the_weighted_sum_of_the_weights_it_saw() {
        // Random parameters over steps; the closed form in f64:
        // avg_{k+1} = avg_k + s_k (p_k - avg_k), from avg_0 = p_start.
        let shapes = [Shape5::new(3, 2, 3, 3, 3), Shape5::new(1, 3, 1, 1, 1)];
        let start: Vec<CpuTensor> =
            shapes.iter().enumerate().map(|(i, &s)| CpuTensor::random(s, 7 + i as u64, -1.0, 1.0)).collect();
        let mut avg = WeightAverage::<Cpu>::start(&(), &start, 0.8).unwrap();
        let mut want: Vec<Vec<f64>> = start.iter().map(|t| t.data.iter().map(|&v| v as f64).collect()).collect();
        for step in 0..12u64 {
            let cur: Vec<CpuTensor> = shapes
                .iter()
                .enumerate()
                .map(|(i, &s)| CpuTensor::random(s, 100 + 10 * step + i as u64, -2.0, 2.0))
                .collect();
            avg.update(&(), &cur).unwrap();
            let w = share(0.8, step) as f64;
            for (wv, c) in want.iter_mut().zip(&cur) {
                for (a, &p) in wv.iter_mut().zip(&c.data) {
                    *a += w * (p as f64 - *a);
                }
            }
        }
        assert_eq!(avg.updates, 12);
        for (a, w) in avg.params.iter().zip(&want) {
            for (&x, &y) in a.data.iter().zip(w) {
                assert!((x as f64 - y).abs() < 1e-5, "{x} against {y}");
            }
        }
        // A mismatched list is an error, not a panic.
        let e = avg.update(&(), &start[..1]).expect_err("one tensor for two").to_string();
        assert!(e.contains("averaged tensors"), "{e}");
        // So is an average restored for another network.
        let e = WeightAverage::<Cpu>::restore(&(), &start, &[start[1].clone(), start[0].clone()], 0.8, 3)
            .err()
            .expect("swapped shapes")
            .to_string();
        assert!(e.contains("tensor 0"), "{e}");
        assert_eq!(WeightAverage::<Cpu>::restore(&(), &start, &start, 0.8, 3).unwrap().updates, 3);
    }
}
