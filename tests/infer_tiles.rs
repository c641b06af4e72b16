//! Sliding-window tiling: plans, reflection padding, blending weights, and
//! equality with whole-volume prediction for a position-independent predictor.

use qcanet_gpu::infer::tiles::{blend_window, extract_tile, predict_sliding, reflect_index, weight_sum};
use qcanet_gpu::infer::{AxisPlan, Predictor, TilePlan};
use qcanet_gpu::tensor::{rel_err, CpuTensor, Shape5};
use qcanet_gpu::Result;

/// Voxel-wise two-class "network": [1 − σ(3x), σ(3x)]. Records the tiles it saw.
struct Pointwise {
    multiple: usize,
    seen: Vec<CpuTensor>,
}

fn sig(x: f32) -> f32 {
    1.0 / (1.0 + (-3.0 * x).exp())
}

impl Predictor for Pointwise {
    fn side_multiple(&self) -> usize {
        self.multiple
    }
    fn classes(&self) -> usize {
        2
    }
    fn predict_tile(&mut self, t: &CpuTensor) -> Result<CpuTensor> {
        let s = t.shape;
        assert_eq!(s.n * s.c, 1);
        for side in [s.d, s.h, s.w] {
            assert_eq!(side % self.multiple, 0, "tile side {side} not a multiple of {}", self.multiple);
        }
        self.seen.push(t.clone());
        let mut data: Vec<f32> = t.data.iter().map(|&v| 1.0 - sig(v)).collect();
        data.extend(t.data.iter().map(|&v| sig(v)));
        Ok(CpuTensor::from_vec(s.with_c(2), data))
    }
}

fn whole(volume: &[f32], dims: [usize; 3]) -> CpuTensor {
    let mut data: Vec<f32> = volume.iter().map(|&v| 1.0 - sig(v)).collect();
    data.extend(volume.iter().map(|&v| sig(v)));
    CpuTensor::from_vec(Shape5::new(1, 2, dims[0], dims[1], dims[2]), data)
}

fn random_volume(dims: [usize; 3], seed: u64) -> Vec<f32> {
    CpuTensor::random(Shape5::new(1, 1, dims[0], dims[1], dims[2]), seed, -1.0, 1.0).data
}

/// Explicit reflection padding (numpy `reflect`) by repeated mirroring, for one axis.
fn reflect_reference(len: usize, pad: usize) -> Vec<usize> {
    // Build the mirrored sequence 0,1,..,len-1,len-2,..,1,0,1,.. long enough on both sides.
    let mut period: Vec<usize> = (0..len).collect();
    period.extend((1..len.saturating_sub(1)).rev());
    let period = if len == 1 { vec![0] } else { period };
    let p = period.len() as isize;
    (-(pad as isize)..(len + pad) as isize).map(|i| period[i.rem_euclid(p) as usize]).collect()
}

#[test]
fn reflect_index_matches_explicit_mirroring() {
    for len in [1usize, 2, 3, 5, 8] {
        let pad = 3 * len + 4; // pads much larger than the axis reflect repeatedly
        let r = reflect_reference(len, pad);
        for (k, &want) in r.iter().enumerate() {
            let i = k as isize - pad as isize;
            assert_eq!(reflect_index(i, len), want, "len {len}, index {i}");
        }
    }
    // numpy: np.pad([0,1,2,3], 2, mode='reflect') == [2,1,0,1,2,3,2,1]
    let got: Vec<usize> = (-2..6).map(|i| reflect_index(i, 4)).collect();
    assert_eq!(got, vec![2, 1, 0, 1, 2, 3, 2, 1]);
}

fn check_axis(len: usize, tile: usize, stride: usize, m: usize, margin: usize) -> AxisPlan {
    let p = AxisPlan::new(len, tile, stride, m, margin).unwrap();
    let ctx = format!("len {len} tile {tile} stride {stride} multiple {m} margin {margin}: {p:?}");
    assert_eq!(p.len, len);
    assert_eq!(p.tile % m, 0, "{ctx}");
    assert!(p.tile <= tile, "{ctx}");
    assert!(p.pad_before + len <= p.padded, "{ctx}");
    assert_eq!(p.starts[0], 0, "{ctx}");
    assert_eq!(*p.starts.last().unwrap() + p.tile, p.padded, "{ctx}");
    for w in p.starts.windows(2) {
        assert!(w[1] > w[0] && w[1] - w[0] <= stride, "{ctx}");
    }
    if p.starts.len() == 1 {
        assert!(p.padded - len < m, "single tile should be the axis rounded up: {ctx}");
    } else {
        // Every real voxel lies at least `margin` inside some tile.
        assert_eq!(p.pad_before, margin, "{ctx}");
        assert_eq!(p.padded, len + 2 * margin, "{ctx}");
        for v in 0..len {
            let pv = v + p.pad_before;
            let ok = p.starts.iter().any(|&s| pv >= s + margin && pv + margin < s + p.tile);
            assert!(ok, "voxel {v} not covered with margin {margin}: {ctx}");
        }
    }
    p
}

#[test]
fn axis_plans_cover_every_voxel() {
    for &(tile, stride, m) in &[(96, 48, 8), (16, 8, 8), (16, 16, 4), (24, 7, 4), (8, 1, 8), (32, 20, 16)] {
        for len in [1usize, 2, 5, 7, 8, 9, 15, 16, 17, 23, 31, 33, 47, 51, 95, 96, 97, 112, 120, 122, 250] {
            for margin in [0, (tile - stride) / 2] {
                check_axis(len, tile, stride, m, margin);
            }
        }
    }
    // Small stacks: the tile clamps to the axis rounded up to the multiple.
    let p = check_axis(51, 96, 48, 8, 0);
    assert_eq!((p.tile, p.padded, p.starts.len(), p.pad_before), (56, 56, 1, 2));
    let p = check_axis(96, 96, 48, 8, 24);
    assert_eq!((p.tile, p.padded, p.starts.clone()), (96, 96, vec![0]));
    // A long axis: 112 z planes, 96³ tiles, stride 48: two tiles without margin,
    // three with a margin of 24 (padded 160, stride 32).
    let p = check_axis(112, 96, 48, 8, 0);
    assert_eq!((p.tile, p.pad_before, p.padded, p.starts.clone()), (96, 0, 112, vec![0, 16]));
    let p = check_axis(112, 96, 48, 8, 24);
    assert_eq!((p.tile, p.pad_before, p.padded, p.starts.clone()), (96, 24, 160, vec![0, 32, 64]));
    let p = check_axis(250, 96, 48, 8, 0);
    assert_eq!(p.starts, vec![0, 39, 77, 116, 154]);
}

#[test]
fn tile_sides_round_up_to_the_side_multiple_and_bad_settings_are_refused() {
    // A side off the network's multiple is rounded up to it (so one --tile
    // serves an NSN of multiple 4 and an NDN of 8 or 16).
    assert_eq!(AxisPlan::new(200, 100, 48, 8, 0).unwrap().tile, 104);
    assert_eq!(AxisPlan::new(200, 180, 128, 16, 0).unwrap().tile, 192);
    assert_eq!(AxisPlan::new(50, 100, 48, 8, 0).unwrap().tile, 56);
    assert!(AxisPlan::new(50, 96, 0, 8, 0).unwrap_err().to_string().contains("stride"));
    assert!(AxisPlan::new(50, 96, 97, 8, 0).unwrap_err().to_string().contains("stride"));
    assert!(AxisPlan::new(0, 96, 48, 8, 0).is_err());
    assert!(AxisPlan::new(50, 0, 48, 8, 0).is_err());
    assert!(AxisPlan::new(200, 96, 48, 8, 48).unwrap_err().to_string().contains("margin"));
}

#[test]
fn tiles_hold_the_reflection_padded_volume() {
    let dims = [13, 21, 10];
    let vol = random_volume(dims, 7);
    let plan = TilePlan::new(dims, [8, 8, 16], [4, 6, 16], 4, 2).unwrap();
    let [rz, ry, rx] = [0, 1, 2].map(|a| reflect_reference(dims[a], plan.axes[a].padded));
    for o in plan.origins() {
        let t = extract_tile(&vol, dims, &plan, o);
        let [td, th, tw] = plan.tile_dims();
        for z in 0..td {
            for y in 0..th {
                for x in 0..tw {
                    // reflect_reference is offset by its own pad (= padded); shift to pad_before.
                    let iz = rz[plan.axes[0].padded + o[0] + z - plan.axes[0].pad_before];
                    let iy = ry[plan.axes[1].padded + o[1] + y - plan.axes[1].pad_before];
                    let ix = rx[plan.axes[2].padded + o[2] + x - plan.axes[2].pad_before];
                    assert_eq!(t.at(0, 0, z, y, x), vol[(iz * dims[1] + iy) * dims[2] + ix]);
                }
            }
        }
    }
}

#[test]
fn blending_weights_are_positive_and_sum_over_tiles() {
    let w = blend_window(16);
    assert!(w.iter().all(|&v| v > 0.0 && v <= 1.0));
    assert!((w[7] - w[8]).abs() < 1e-6 && w[0] < 0.05 && w[7] > 0.95, "{w:?}");
    for (dims, tile, stride, m, margin) in [
        ([37, 29, 53], [16, 16, 16], [8, 8, 8], 8, 4),
        ([5, 40, 3], [16, 16, 16], [8, 12, 8], 4, 0),
        ([112, 120, 122], [96, 96, 96], [48, 48, 48], 8, 0),
        ([112, 120, 122], [96, 96, 96], [48, 48, 48], 8, 24),
    ] {
        let plan = TilePlan::new(dims, tile, stride, m, margin).unwrap();
        let ws = weight_sum(dims, &plan);
        let min = ws.iter().cloned().fold(f32::INFINITY, f32::min);
        // Corners covered only by a tile's corner get the product of three edge weights.
        let edge = blend_window(tile[0])[0];
        assert!(min >= 0.99 * edge * edge * edge && min > 0.0, "{dims:?}: smallest weight sum {min}");
        if margin > 0 {
            assert!(min > 1e-3, "{dims:?}: with a margin every voxel is inside a tile; smallest weight sum {min}");
        }
        // Blending a constant gives back the constant, through the real accumulation path.
        struct Const;
        impl Predictor for Const {
            fn side_multiple(&self) -> usize {
                1
            }
            fn classes(&self) -> usize {
                1
            }
            fn predict_tile(&mut self, t: &CpuTensor) -> Result<CpuTensor> {
                Ok(CpuTensor::from_vec(t.shape, vec![0.625; t.shape.numel()]))
            }
        }
        let vol = random_volume(dims, 3);
        let out = predict_sliding(&mut Const, &vol, dims, &plan, &mut || {}).unwrap();
        let err = out.data.iter().map(|&v| (v - 0.625).abs()).fold(0.0, f32::max);
        assert!(err < 1e-6, "{dims:?}: blended constant off by {err}");
    }
}

#[test]
fn sliding_window_equals_whole_volume_prediction() {
    for (dims, tile, stride, m, margin, min_tiles) in [
        ([37, 29, 53], [16, 16, 16], [8, 8, 8], 8, 0, 27),
        ([37, 29, 53], [16, 16, 16], [8, 8, 8], 8, 4, 27),
        // smaller than a tile on every axis
        ([7, 9, 11], [16, 16, 16], [8, 8, 8], 8, 0, 1),
        // mixed: one axis tiled, odd stride
        ([7, 45, 11], [8, 16, 8], [8, 5, 8], 4, 3, 3),
        // a single plane, no overlap
        ([1, 19, 33], [16, 16, 16], [16, 16, 16], 16, 0, 2),
    ] {
        let vol = random_volume(dims, 11);
        let plan = TilePlan::new(dims, tile, stride, m, margin).unwrap();
        assert!(plan.n_tiles() >= min_tiles, "{dims:?}: {} tiles", plan.n_tiles());
        let mut p = Pointwise { multiple: m, seen: vec![] };
        let mut count = 0;
        let out = predict_sliding(&mut p, &vol, dims, &plan, &mut || count += 1).unwrap();
        assert_eq!(count, plan.n_tiles());
        assert_eq!(p.seen.len(), plan.n_tiles());
        let want = whole(&vol, dims);
        assert_eq!(out.shape, want.shape);
        let e = rel_err(&out.data, &want.data);
        assert!(e < 1e-6, "{dims:?}: relative error {e:.2e} (tolerance 1e-6)");
    }
}

#[test]
fn wrong_predictor_output_is_an_error_not_a_panic() {
    struct Bad;
    impl Predictor for Bad {
        fn side_multiple(&self) -> usize {
            1
        }
        fn classes(&self) -> usize {
            2
        }
        fn predict_tile(&mut self, t: &CpuTensor) -> Result<CpuTensor> {
            Ok(t.clone()) // one channel instead of two
        }
    }
    let dims = [4, 5, 6];
    let plan = TilePlan::new(dims, [8, 8, 8], [4, 4, 4], 1, 0).unwrap();
    let e = predict_sliding(&mut Bad, &random_volume(dims, 1), dims, &plan, &mut || {}).unwrap_err();
    assert!(e.to_string().contains("predictor returned"), "{e}");
    let e = predict_sliding(&mut Bad, &[0.0; 5], dims, &plan, &mut || {}).unwrap_err();
    assert!(e.to_string().contains("values"), "{e}");
}
