//! The whole QCANet instance stage: touching spheres with known labels, the
//! real 16-cell example, the unmarked-components option, malformed input and
//! per-nucleus criteria.

mod common;
use common::*;
use qcanet_gpu::metrics;
use qcanet_gpu::postprocess::{
    self, criteria, instances, qcanet_instances, reference_instances, spheres, Connectivity, Grid, InstanceOptions,
    Watershed,
};

/// For each true sphere: the fraction of its voxels carrying the predicted
/// label found on its marker voxels.
fn per_sphere_recovery(f: &spheres::SphereField, pred: &[u32]) -> Vec<f64> {
    (1..=f.count() as u32)
        .map(|s| {
            let marker_label = (0..pred.len()).find(|&i| f.markers[i] != 0 && f.labels[i] == s).map(|i| pred[i]);
            let Some(ml) = marker_label else { return 0.0 };
            let total = f.labels.iter().filter(|&&l| l == s).count();
            let ok = (0..pred.len()).filter(|&i| f.labels[i] == s && pred[i] == ml && ml != 0).count();
            ok as f64 / total as f64
        })
        .collect()
}

/// The linear indices of a box of `size` voxels (z, y, x) at the origin
/// corner of a (z, y, x) volume of `dims`; panics unless `mask` is 0 there.
fn free_corner(mask: &[u8], dims: [usize; 3], size: [usize; 3]) -> Vec<usize> {
    let [_, h, w] = dims;
    let mut v = Vec::new();
    for z in 0..size[0] {
        for y in 0..size[1] {
            for x in 0..size[2] {
                let i = (z * h + y) * w + x;
                assert_eq!(mask[i], 0, "corner must be free");
                v.push(i);
            }
        }
    }
    v
}

#[test]
fn touching_spheres_are_recovered() {
    let ctx = ctx();
    ctx.set_poison_new_tensors(true);
    for (k, dims) in [[29, 61, 67], [41, 53, 59]].into_iter().enumerate() {
        let grid = Grid::new(dims, [1.75, 0.8, 0.8]);
        let f = spheres::touching_spheres(&grid, 60, (5.0, 9.0), 11 + k as u64);
        let n = f.count();
        assert!(n >= 8, "only {n} spheres");
        // Touching: the foreground has far fewer components than spheres.
        let (_, ncc) = postprocess::ccl::reference::label(&f.mask, dims, Connectivity::Six);
        assert!(ncc as usize * 2 <= n, "{ncc} components for {n} spheres: not touching");
        for exact in [true, false] {
            for conn in [Connectivity::Six, Connectivity::TwentySix] {
                let opts = InstanceOptions { exact_edt: exact, connectivity: conn, ..Default::default() };
                let pred = qcanet_instances(ctx, &f.mask, &f.markers, &grid, &opts).unwrap();
                let count = pred.iter().copied().max().unwrap();
                assert_eq!(count as usize, n, "{dims:?} exact={exact} {conn:?}: {count} labels for {n} spheres");
                let rec = per_sphere_recovery(&f, &pred);
                let worst = rec.iter().cloned().fold(1.0, f64::min);
                let r = reference_instances(&f.mask, &f.markers, &grid, &opts).unwrap();
                let rw = per_sphere_recovery(&f, &r).iter().cloned().fold(1.0, f64::min);
                println!(
                    "{dims:?} {n} spheres exact={exact} {conn:?}: worst sphere {worst:.3} (CPU reference {rw:.3})"
                );
                assert!(worst >= 0.9, "{dims:?} exact={exact} {conn:?}: a sphere only {worst:.3} recovered");
                let e = metrics::evaluate(&pred, &f.labels, dims).unwrap();
                assert_eq!(e.matching.f1, 1.0, "{e:?}");
                if exact {
                    let r = reference_instances(&f.mask, &f.markers, &grid, &opts).unwrap();
                    let agree = (0..pred.len()).filter(|&i| f.mask[i] != 0 && pred[i] == r[i]).count() as f64
                        / f.mask.iter().filter(|&&m| m != 0).count() as f64;
                    println!("  GPU vs CPU reference stage: {:.4}% agreement", 100.0 * agree);
                    assert!(agree >= 0.985, "GPU and reference stage agree on {agree}");
                }
            }
        }
    }
}

#[test]
fn volumes_larger_than_a_binding_fall_back_to_the_cpu() {
    // A binding cap below the volume's key array: the stage must still give
    // the reference's labels (it runs the CPU reference), never an error.
    let dims = [23, 41, 45];
    let n: usize = dims.iter().product();
    let grid = Grid::new(dims, [1.75, 0.8, 0.8]);
    let f = spheres::touching_spheres(&grid, 30, (3.5, 6.0), 5);
    assert!(f.count() >= 3, "only {} spheres", f.count());
    let capped = capped_ctx((n * 4) as u64); // one u32 per voxel fits, the watershed key does not
    for unmarked in [false, true] {
        let opts = InstanceOptions { label_unmarked_components: unmarked, ..Default::default() };
        let got = qcanet_instances(&capped, &f.mask, &f.markers, &grid, &opts).unwrap();
        let want = reference_instances(&f.mask, &f.markers, &grid, &opts).unwrap();
        assert_eq!(got, want, "unmarked={unmarked}");
        assert_eq!(got.iter().copied().max().unwrap() as usize, f.count());
    }
    // The input checks still apply on that path.
    let empty = vec![0u8; n];
    assert!(qcanet_instances(&capped, &empty, &f.markers, &grid, &InstanceOptions::default()).is_err());
    assert!(qcanet_instances(&capped, &f.mask, &empty, &grid, &InstanceOptions::default()).is_err());
}

#[test]
fn unmarked_components_get_new_labels() {
    let ctx = ctx();
    let dims = [21, 40, 44];
    let grid = Grid::new(dims, [1.75, 0.8, 0.8]);
    let mut f = spheres::touching_spheres(&grid, 6, (4.0, 6.0), 5);
    // An isolated cube without marker in a free corner.
    let cube = free_corner(&f.mask, dims, [3, 4, 4]);
    let extra = cube.len();
    for &i in &cube {
        f.mask[i] = 1;
    }
    let base = qcanet_instances(ctx, &f.mask, &f.markers, &grid, &InstanceOptions::default()).unwrap();
    assert_eq!(base.iter().filter(|&&l| l == 0).count(), f.mask.iter().filter(|&&m| m == 0).count() + extra);
    let opts = InstanceOptions { label_unmarked_components: true, ..Default::default() };
    let with = qcanet_instances(ctx, &f.mask, &f.markers, &grid, &opts).unwrap();
    let n = f.count() as u32;
    assert_eq!(with.iter().copied().max().unwrap(), n + 1);
    assert_eq!(with[0], n + 1);
    for i in 0..with.len() {
        if base[i] != 0 {
            assert_eq!(with[i], base[i]);
        }
    }
    // No markers at all: every component becomes one nucleus.
    let none = vec![0u8; f.mask.len()];
    let all = qcanet_instances(ctx, &f.mask, &none, &grid, &opts).unwrap();
    let (cc, ncc) = postprocess::ccl::reference::label(&f.mask, dims, Connectivity::Six);
    assert_eq!(all, cc);
    assert!(ncc >= 2);
}

#[test]
fn malformed_input_gives_errors() {
    let ctx = ctx();
    let grid = Grid::new([5, 6, 7], [1.75, 0.8, 0.8]);
    let n = grid.numel();
    let mut seg = vec![0u8; n];
    seg[100..120].fill(255);
    let mut det = vec![0u8; n];
    det[105] = 1;
    let o = InstanceOptions::default();
    assert!(qcanet_instances(ctx, &seg, &det, &grid, &o).is_ok());
    let e = qcanet_instances(ctx, &seg[1..], &det, &grid, &o).unwrap_err().to_string();
    assert!(e.contains("segmentation mask") && e.contains("209"), "{e}");
    let e = qcanet_instances(ctx, &seg, &det[..10], &grid, &o).unwrap_err().to_string();
    assert!(e.contains("detection mask"), "{e}");
    let e = qcanet_instances(ctx, &vec![0u8; n], &det, &grid, &o).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
    let e = qcanet_instances(ctx, &seg, &vec![0u8; n], &grid, &o).unwrap_err().to_string();
    assert!(e.contains("no markers"), "{e}");
    let mut outside = vec![0u8; n];
    outside[0] = 1;
    assert!(qcanet_instances(ctx, &seg, &outside, &grid, &o).is_err(), "markers outside the mask are ignored");
    let bad = Grid::new([5, 6, 7], [1.75, f32::NAN, 0.8]);
    assert!(qcanet_instances(ctx, &seg, &det, &bad, &o).is_err());
    let zero = Grid::new([0, 6, 7], [1.0; 3]);
    assert!(qcanet_instances(ctx, &[], &[], &zero, &o).is_err());
    // No background at all: allowed, +inf EDT, split by geodesic distance.
    let full = vec![1u8; n];
    let mut two = vec![0u8; n];
    two[0] = 1;
    two[n - 1] = 1;
    let l = qcanet_instances(ctx, &full, &two, &grid, &o).unwrap();
    assert_eq!(l.iter().copied().max(), Some(2));
    assert!(l.iter().all(|&v| v == 1 || v == 2));
}

/// A 0/255 mask stack read with the project's reader, as 0/1 bytes.
fn read_mask(path: &std::path::Path) -> (Vec<u8>, [usize; 3]) {
    let v = qcanet_gpu::io::read_volume(path).unwrap_or_else(|e| panic!("{e}"));
    (v.data.iter().map(|&x| u8::from(x != 0.0)).collect(), v.dims)
}

#[test]
fn example_16_cell_embryo_gives_16_nuclei() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/qcanet-example");
    let (nsn, ndn) = (root.join("images_nsn/16_cell_stage.tif"), root.join("images_ndn/16_cell_stage.tif"));
    assert!(
        nsn.exists() && ndn.exists(),
        "{} is missing: this test needs the example data beside the repository (../shared, present in CI)",
        root.display()
    );
    let ctx = ctx();
    let (seg, dims) = read_mask(&nsn);
    let (det, dims2) = read_mask(&ndn);
    assert_eq!(dims, dims2);
    assert_eq!(dims, [51, 120, 122]);
    let grid = Grid::new(dims, [1.75, 0.8, 0.8]);
    let gt = metrics::labels_from_mask(&seg, dims, Connectivity::TwentySix).unwrap();
    for exact in [true, false] {
        let opts = InstanceOptions { exact_edt: exact, ..Default::default() };
        let t = std::time::Instant::now();
        let labels = qcanet_instances(ctx, &seg, &det, &grid, &opts).unwrap();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        assert_eq!(labels.iter().copied().max(), Some(16), "exact={exact}");
        let e = metrics::evaluate(&labels, &gt, dims).unwrap();
        println!(
            "16-cell exact={exact}: {} nuclei, F1@0.5 {}, SEG {:.4}, AP {:.4}, {ms:.0} ms",
            e.pred_objects, e.matching.f1, e.seg, e.average_precision
        );
        assert_eq!(e.pred_objects, 16);
        assert_eq!(e.matching.f1, 1.0);
        let rows = criteria::measure(&labels, &grid, None).unwrap();
        assert_eq!(rows.len(), 16);
        let s = criteria::summary(&rows);
        println!("  volume {:.1} ± {:.1} µm³", s.mean_volume_um3, s.sd_volume_um3);
        assert!(s.mean_volume_um3 > 100.0 && s.mean_volume_um3 < 20000.0);
    }
}

#[test]
fn criteria_of_known_shapes() {
    let grid = Grid::new([4, 5, 6], [2.0, 0.5, 0.25]);
    let n = grid.numel();
    let mut labels = vec![0u32; n];
    // Label 3: one voxel at (z, y, x) = (1, 2, 3).
    labels[(5 + 2) * 6 + 3] = 3;
    // Label 7: a 2x2x3 box at z 2..4, y 0..2, x 3..6 (touching the volume edge).
    for z in 2..4 {
        for y in 0..2 {
            for x in 3..6 {
                labels[(z * 5 + y) * 6 + x] = 7;
            }
        }
    }
    let image: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
    let rows = criteria::measure(&labels, &grid, Some(&image)).unwrap();
    assert_eq!(rows.len(), 2);
    let a = &rows[0];
    assert_eq!((a.label, a.voxels), (3, 1));
    assert!((a.volume_um3 - 0.25).abs() < 1e-12);
    assert_eq!(a.centroid_um, [3.0 * 0.25, 2.0 * 0.5, 1.0 * 2.0]);
    assert_eq!((a.bbox_min, a.bbox_max), ([3, 2, 1], [3, 2, 1]));
    // Six faces: 2 (0.5*2) + 2 (0.25*2) + 2 (0.25*0.5).
    assert!((a.surface_um2 - (2.0 + 1.0 + 0.25)).abs() < 1e-12);
    assert!((a.equivalent_diameter_um - (6.0 * 0.25 / std::f64::consts::PI).cbrt()).abs() < 1e-12);
    assert_eq!(a.mean_intensity, Some(((5 + 2) * 6 + 3) as f64 * 0.5));
    let b = &rows[1];
    assert_eq!((b.label, b.voxels), (7, 12));
    assert_eq!((b.bbox_min, b.bbox_max), ([3, 0, 2], [5, 1, 3]));
    assert_eq!(b.centroid_um, [4.0 * 0.25, 0.5 * 0.5, 2.5 * 2.0]);
    // Box 3 x 2 x 2 voxels (x, y, z): x faces 2*(2*2) * (0.5*2), y faces 2*(3*2) * (0.25*2), z faces 2*(3*2) * (0.25*0.5).
    assert!((b.surface_um2 - (8.0 * 1.0 + 12.0 * 0.5 + 12.0 * 0.125)).abs() < 1e-12);
    let s = criteria::summary(&rows);
    assert_eq!(s.count, 2);
    assert!((s.mean_volume_um3 - (0.25 + 3.0) / 2.0).abs() < 1e-12);
    assert!((s.sd_volume_um3 - ((2.0 * 1.375f64.powi(2)) / 1.0).sqrt()).abs() < 1e-12);
    let mut out = Vec::new();
    criteria::write_csv(&mut out, &rows, Some(4)).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].starts_with("time,label,voxels,volume_um3"));
    assert!(lines[1].starts_with("4,3,1,0.250000,"));
    assert_eq!(lines[1].split(',').count(), lines[0].split(',').count());
    let mut out = Vec::new();
    criteria::write_csv(&mut out, &criteria::measure(&labels, &grid, None).unwrap(), None).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.lines().nth(1).unwrap().ends_with(",,"), "empty intensity columns");
    assert!(criteria::measure(&labels[1..], &grid, None).is_err());
    assert!(criteria::measure(&labels, &grid, Some(&image[1..])).is_err());
}

#[test]
fn sphere_field_is_deterministic_and_sane() {
    let grid = Grid::new([25, 50, 52], [1.75, 0.8, 0.8]);
    let a = spheres::touching_spheres(&grid, 30, (4.0, 7.0), 9);
    let b = spheres::touching_spheres(&grid, 30, (4.0, 7.0), 9);
    assert_eq!(a.labels, b.labels);
    assert_eq!(a.markers, b.markers);
    let rows = criteria::measure(&a.labels, &grid, None).unwrap();
    assert_eq!(rows.len(), a.count());
    for (r, rad) in rows.iter().zip(&a.radii_um) {
        let ball = 4.0 / 3.0 * std::f64::consts::PI * rad.powi(3);
        assert!(r.volume_um3 <= ball * 1.15 && r.volume_um3 >= ball * 0.5, "{} vs {ball}", r.volume_um3);
    }
    // Every sphere has a marker of its own.
    let (_, nm) = postprocess::ccl::reference::label(&a.markers, grid.dims, Connectivity::TwentySix);
    assert_eq!(nm as usize, a.count());
}

#[test]
fn the_watershed_option_picks_the_flood_or_the_gpu_stage() {
    // Default: the CPU priority flood (what calibrate and train score with).
    assert_eq!(InstanceOptions::default().watershed, Watershed::Flood);
    assert_eq!("Flood".parse::<Watershed>().unwrap(), Watershed::Flood);
    assert_eq!(" gpu".parse::<Watershed>().unwrap(), Watershed::Gpu);
    let e = "cpu".parse::<Watershed>().unwrap_err().to_string();
    assert!(e.contains("'cpu'") && e.contains("flood") && e.contains("gpu"), "{e}");
    // Touching spheres with several markers per plateau-prone contact: each
    // choice gives exactly what its implementation gives, and the two
    // differ somewhere (so the choice is not a no-op on this input).
    let ctx = ctx();
    let dims = [31, 47, 53];
    let grid = Grid::new(dims, [1.75, 0.8, 0.8]);
    let f = spheres::touching_spheres(&grid, 40, (4.0, 8.0), 5);
    let flood = InstanceOptions::default();
    let gpu = InstanceOptions { watershed: Watershed::Gpu, ..Default::default() };
    let a = instances(ctx, &f.mask, &f.markers, &grid, &flood).unwrap();
    let b = instances(ctx, &f.mask, &f.markers, &grid, &gpu).unwrap();
    assert_eq!(a, reference_instances(&f.mask, &f.markers, &grid, &flood).unwrap());
    assert_eq!(b, qcanet_instances(ctx, &f.mask, &f.markers, &grid, &gpu).unwrap());
    let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    println!("{} spheres: flood and GPU relaxation differ on {differ} of {} voxels", f.count(), a.len());
    assert!(differ > 0, "flood and GPU gave identical labels: the test cannot tell them apart");
}

#[test]
fn objects_under_the_volume_floor_are_dropped_and_the_rest_renumbered() {
    use postprocess::{drop_small_objects, MIN_NUCLEUS_UM3};
    // drop_small_objects alone: voxel 1.75 x 0.8 x 0.8 = 1.12 µm³.
    let grid = Grid::new([2, 3, 10], [1.75, 0.8, 0.8]);
    let mut l = vec![0u32; grid.numel()];
    // Label 5: 16 voxels (17.92 µm³, under 18); label 2: 17 voxels (19.04, kept); label 9: 1 voxel.
    l[..16].fill(5);
    l[20..37].fill(2);
    l[50] = 9;
    let out = drop_small_objects(&l, &grid, 18.0);
    assert_eq!(out.iter().filter(|&&v| v != 0).count(), 17);
    assert!(out[20..37].iter().all(|&v| v == 1), "the kept object is renumbered 1");
    assert!(out[..16].iter().all(|&v| v == 0) && out[50] == 0);
    // Floor 0 keeps every object, numbered in label order.
    let all = drop_small_objects(&l, &grid, 0.0);
    assert_eq!((all[20], all[0], all[50]), (1, 2, 3));
    // Exactly at the floor: kept (17 voxels = 19.04 µm³).
    assert_eq!(drop_small_objects(&l, &grid, 17.0 * grid.voxel_volume()).iter().max(), Some(&1));

    // In the instance stage: touching spheres plus a marked 2 x 2 x 2 speck
    // (8.96 µm³) in a free corner. The default floor drops the speck on
    // both implementations; floor 0 keeps it as one more nucleus.
    assert_eq!(InstanceOptions::default().min_volume_um3, MIN_NUCLEUS_UM3);
    let ctx = ctx();
    let dims = [23, 44, 46];
    let grid = Grid::new(dims, [1.75, 0.8, 0.8]);
    let mut f = spheres::touching_spheres(&grid, 8, (4.0, 6.0), 7);
    let n = f.count() as u32;
    for i in free_corner(&f.mask, dims, [2, 2, 2]) {
        f.mask[i] = 1;
        f.markers[i] = 1;
    }
    for ws in [Watershed::Flood, Watershed::Gpu] {
        let floor = InstanceOptions { watershed: ws, ..Default::default() };
        let keep = InstanceOptions { watershed: ws, min_volume_um3: 0.0, ..Default::default() };
        let a = instances(ctx, &f.mask, &f.markers, &grid, &floor).unwrap();
        let b = instances(ctx, &f.mask, &f.markers, &grid, &keep).unwrap();
        assert_eq!(a.iter().copied().max(), Some(n), "{ws:?}: the speck was kept");
        assert_eq!(b.iter().copied().max(), Some(n + 1), "{ws:?}: floor 0 dropped an object");
        assert_eq!(a[0], 0, "{ws:?}");
        assert_ne!(b[0], 0, "{ws:?}");
        // Every sphere keeps its voxels under the floor.
        assert_eq!(a.iter().filter(|&&v| v != 0).count() + 8, b.iter().filter(|&&v| v != 0).count(), "{ws:?}");
    }
    // A floor that is not a finite number >= 0 is an error.
    for bad in [-1.0, f64::NAN, f64::INFINITY] {
        let o = InstanceOptions { min_volume_um3: bad, ..Default::default() };
        let e = reference_instances(&f.mask, &f.markers, &grid, &o).unwrap_err().to_string();
        assert!(e.contains("minimum object volume"), "{e}");
    }
}
