//! Test-time augmentation: mirror images of a tile, predicted and mirrored
//! back, averaged (`src/infer/tta.rs`), and `infer --tta` on the command line.

use qcanet_gpu::infer::tta::{flips, mirror, MirrorMean, VIEWS};
use qcanet_gpu::infer::{predict_sliding, Predictor, TilePlan};
use qcanet_gpu::tensor::{CpuTensor, Shape5};

/// Output channel c = input + c + a ramp along z, y and x (weights 1, 10,
/// 100): a network that is not mirror-equivariant, so averaging its views
/// has a value that can be worked out by hand.
struct Ramp {
    classes: usize,
    calls: usize,
}

impl Predictor for Ramp {
    fn side_multiple(&self) -> usize {
        1
    }
    fn classes(&self) -> usize {
        self.classes
    }
    fn predict_tile(&mut self, tile: &CpuTensor) -> qcanet_gpu::Result<CpuTensor> {
        self.calls += 1;
        let s = tile.shape;
        let mut out = Vec::new();
        for c in 0..self.classes {
            for z in 0..s.d {
                for y in 0..s.h {
                    for x in 0..s.w {
                        out.push(tile.at(0, 0, z, y, x) + c as f32 + z as f32 + 10.0 * y as f32 + 100.0 * x as f32);
                    }
                }
            }
        }
        Ok(CpuTensor::from_vec(Shape5::new(1, self.classes, s.d, s.h, s.w), out))
    }
}

#[test]
fn mirror_moves_each_voxel_to_its_mirror_image_and_is_its_own_inverse() {
    let t = CpuTensor::random(Shape5::new(2, 3, 5, 6, 7), 11, -1.0, 1.0);
    for k in 0..8 {
        let f = [k & 4 != 0, k & 2 != 0, k & 1 != 0];
        let m = mirror(&t, f);
        assert_eq!(m.shape, t.shape);
        let r = |i: usize, len: usize, on: bool| if on { len - 1 - i } else { i };
        for (n, c, z, y, x) in [(0, 0, 0, 0, 0), (1, 2, 4, 5, 6), (0, 1, 1, 3, 2), (1, 0, 3, 0, 5)] {
            assert_eq!(m.at(n, c, z, y, x), t.at(n, c, r(z, 5, f[0]), r(y, 6, f[1]), r(x, 7, f[2])), "flip {f:?}");
        }
        assert_eq!(mirror(&m, f).data, t.data, "flip {f:?} twice");
        assert_eq!(m.data == t.data, k == 0, "flip {f:?} changes a random tensor unless it is the identity");
    }
}

#[test]
fn views_are_the_first_n_mirror_images_and_other_counts_are_refused() {
    assert_eq!(flips(1).unwrap(), vec![[false; 3]]);
    assert_eq!(flips(2).unwrap(), vec![[false; 3], [false, false, true]]);
    assert_eq!(flips(4).unwrap()[3], [false, true, true]);
    let all = flips(8).unwrap();
    assert_eq!(all.len(), 8);
    assert!((0..8).all(|i| (0..i).all(|j| all[i] != all[j])), "eight different mirror images");
    for n in [0, 3, 5, 16] {
        let e = flips(n).unwrap_err().to_string();
        assert!(e.contains(&n.to_string()) && e.contains("1 (off)"), "{e}");
        let mut p = Ramp { classes: 1, calls: 0 };
        assert!(MirrorMean::new(&mut p, n).is_err());
    }
    assert_eq!(VIEWS, [1, 2, 4, 8]);
}

#[test]
fn the_mean_of_views_mirrors_each_output_back() {
    // The ramp along a mirrored axis averages to its midpoint; along an
    // axis left alone it stays. Forgetting to mirror an output back would
    // leave the ramp reversed, and mirroring the input only would not
    // change the ramp.
    let (d, h, w) = (5usize, 4usize, 7usize);
    let tile = CpuTensor::random(Shape5::new(1, 1, d, h, w), 3, 0.0, 1.0);
    for (views, axes) in [(1, [false; 3]), (2, [false, false, true]), (4, [false, true, true]), (8, [true; 3])] {
        let mut p = Ramp { classes: 2, calls: 0 };
        let out = MirrorMean::new(&mut p, views).unwrap().predict_tile(&tile).unwrap();
        assert_eq!(p.calls, views);
        assert_eq!(out.shape, Shape5::new(1, 2, d, h, w));
        let ramp = |i: usize, len: usize, mirrored: bool| if mirrored { (len - 1) as f32 / 2.0 } else { i as f32 };
        for c in 0..2 {
            for z in 0..d {
                for y in 0..h {
                    for x in 0..w {
                        let want = tile.at(0, 0, z, y, x)
                            + c as f32
                            + ramp(z, d, axes[0])
                            + 10.0 * ramp(y, h, axes[1])
                            + 100.0 * ramp(x, w, axes[2]);
                        let got = out.at(0, c, z, y, x);
                        assert!((got - want).abs() < 1e-4, "views {views} at c{c} z{z} y{y} x{x}: {got} vs {want}");
                    }
                }
            }
        }
    }
}

#[test]
fn sliding_window_with_views_covers_the_volume_once_per_view() {
    // Two tiles per axis: the mean is still the ramp's midpoint along x
    // within each tile, and the blending divides by the weights as without views.
    let dims = [6usize, 5, 13];
    let vol = CpuTensor::random(Shape5::new(1, 1, dims[0], dims[1], dims[2]), 5, 0.0, 1.0).data;
    let plan = TilePlan::new(dims, [6, 5, 8], [6, 5, 5], 1, 0).unwrap();
    assert_eq!(plan.n_tiles(), 2);
    let mut p = Ramp { classes: 1, calls: 0 };
    let mut m = MirrorMean::new(&mut p, 2).unwrap();
    let mut tiles = 0;
    let out = predict_sliding(&mut m, &vol, dims, &plan, &mut || tiles += 1).unwrap();
    assert_eq!(tiles, 2);
    assert_eq!(p.calls, 4);
    // Every tile is 8 wide: the x ramp averages to 3.5 everywhere.
    for z in 0..dims[0] {
        for y in 0..dims[1] {
            for x in 0..dims[2] {
                let want = vol[(z * dims[1] + y) * dims[2] + x] + z as f32 + 10.0 * y as f32 + 350.0;
                let got = out.at(0, 0, z, y, x);
                assert!((got - want).abs() < 1e-3, "z{z} y{y} x{x}: {got} vs {want}");
            }
        }
    }
}
