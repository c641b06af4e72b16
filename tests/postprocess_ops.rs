//! EDT (exact and JFA), connected components, watershed and growth on the GPU
//! against their CPU references, on random masks of odd shapes and anisotropic grids.

mod common;
use common::*;
use qcanet_gpu::postprocess::{ccl, edt, edt::EdtMethod, spheres, upload_mask, watershed, Connectivity, Grid};
use rand::{Rng, SeedableRng};

const SHAPES: [[usize; 3]; 2] = [[13, 17, 19], [31, 29, 23]];
const SPACINGS: [[f32; 3]; 2] = [[1.75, 0.8, 0.8], [0.5, 1.3, 0.9]];

/// Each voxel foreground with probability `p`.
fn random_mask(dims: [usize; 3], p: f64, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..dims.iter().product::<usize>()).map(|_| rng.random_bool(p) as u8).collect()
}

/// Union of `n` random balls (radius 2–6 voxels): blob-like foreground.
fn random_blobs(dims: [usize; 3], n: usize, seed: u64) -> Vec<u8> {
    random_balls(dims, n, seed).0
}

/// Union of `n` random balls and, as markers, each ball's centre voxel
/// labelled by its ball (1..=n; a later ball overwrites a shared centre).
fn random_balls(dims: [usize; 3], n: usize, seed: u64) -> (Vec<u8>, Vec<u32>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let [d, h, w] = dims;
    let mut m = vec![0u8; d * h * w];
    let mut markers = vec![0u32; d * h * w];
    for b in 0..n {
        let c = [0, 1, 2].map(|k| rng.random_range(0..dims[k]));
        let r: f64 = rng.random_range(2.0..6.0);
        markers[(c[0] * h + c[1]) * w + c[2]] = b as u32 + 1;
        for z in 0..d {
            for y in 0..h {
                for x in 0..w {
                    let d2 = (z as f64 - c[0] as f64).powi(2)
                        + (y as f64 - c[1] as f64).powi(2)
                        + (x as f64 - c[2] as f64).powi(2);
                    if d2 <= r * r {
                        m[(z * h + y) * w + x] = 1;
                    }
                }
            }
        }
    }
    (m, markers)
}

/// ‖a − b‖ / ‖b‖ over finite values; infinities must coincide.
#[track_caller]
fn assert_rel(what: &str, a: &[f32], b: &[f32], tol: f64) {
    assert_eq!(a.len(), b.len());
    let (mut num, mut den) = (0f64, 0f64);
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        assert!(!x.is_nan(), "{what}: NaN at {i}");
        if y.is_infinite() || x.is_infinite() {
            assert_eq!(x, y, "{what}: infinity mismatch at {i}");
            continue;
        }
        num += (x as f64 - y as f64).powi(2);
        den += (y as f64).powi(2);
    }
    assert!(den > 0.0, "{what}: reference is all zeros");
    let e = (num / den).sqrt();
    assert!(e < tol, "{what}: relative error {e:.3e} (tolerance {tol:.1e})");
}

#[test]
fn edt_reference_matches_brute_force() {
    for (s, sp) in SPACINGS.iter().enumerate() {
        let grid = Grid::new([5, 6, 7], *sp);
        for (k, p) in [0.6, 0.9, 0.97].into_iter().enumerate() {
            let m = random_mask(grid.dims, p, 10 + (s * 3 + k) as u64);
            assert!(m.contains(&0), "test mask needs background");
            let r = edt::reference::edt(&m, &grid);
            let b = edt::reference::edt_brute(&m, &grid);
            assert_rel("separable vs brute force", &r, &b, 1e-12);
            for (i, (&x, &y)) in r.iter().zip(&b).enumerate() {
                assert!((x - y).abs() <= 1e-5 * y.max(1.0), "voxel {i}: {x} vs {y}");
            }
        }
    }
}

#[test]
fn edt_exact_gpu_matches_reference() {
    let ctx = ctx();
    ctx.set_poison_new_tensors(true);
    for (k, dims) in SHAPES.into_iter().enumerate() {
        for (s, sp) in SPACINGS.into_iter().enumerate() {
            let grid = Grid::new(dims, sp);
            for (j, mask) in [random_mask(dims, 0.9, 20 + k as u64), random_blobs(dims, 12, 30 + (k * 2 + s) as u64)]
                .into_iter()
                .enumerate()
            {
                let gpu = edt::edt(ctx, &mask, &grid, EdtMethod::Exact).unwrap();
                let r = edt::reference::edt(&mask, &grid);
                assert_rel(&format!("exact EDT {dims:?} {sp:?} mask {j}"), &gpu, &r, 1e-6);
                for i in 0..mask.len() {
                    if mask[i] == 0 {
                        assert_eq!(gpu[i], 0.0, "background voxel {i}");
                    } else {
                        assert!(gpu[i] >= sp.iter().cloned().fold(f32::MAX, f32::min) * 0.999, "fg voxel {i}");
                    }
                }
            }
        }
    }
}

#[test]
fn edt_without_background_is_infinite() {
    let ctx = ctx();
    let grid = Grid::new([3, 4, 5], [1.0, 2.0, 3.0]);
    let mask = vec![1u8; grid.numel()];
    for m in [EdtMethod::Exact, EdtMethod::Jfa] {
        let g = edt::edt(ctx, &mask, &grid, m).unwrap();
        assert!(g.iter().all(|v| *v == f32::INFINITY), "{m:?}");
    }
    assert!(edt::reference::edt(&mask, &grid).iter().all(|v| *v == f32::INFINITY));
    // A single background voxel: everything finite.
    let mut one = mask.clone();
    one[17] = 0;
    let g = edt::edt(ctx, &one, &grid, EdtMethod::Exact).unwrap();
    assert_rel("one background voxel", &g, &edt::reference::edt_brute(&one, &grid), 1e-6);
}

#[test]
fn edt_jfa_error_is_small() {
    let ctx = ctx();
    let mut worst_frac = 0f64;
    let mut worst_abs = 0f64;
    for (k, dims) in SHAPES.into_iter().enumerate() {
        for sp in SPACINGS {
            let grid = Grid::new(dims, sp);
            for mask in [random_mask(dims, 0.93, 40 + k as u64), random_blobs(dims, 14, 50 + k as u64)] {
                let j = edt::edt(ctx, &mask, &grid, EdtMethod::Jfa).unwrap();
                let r = edt::reference::edt(&mask, &grid);
                let e = edt::compare(&j, &r, 1e-4);
                println!("JFA {dims:?} {sp:?}: {e:?}");
                worst_frac = worst_frac.max(e.frac_wrong);
                worst_abs = worst_abs.max(e.max_abs);
                // Never below the true distance (it is a distance to a real background voxel).
                for (a, b) in j.iter().zip(&r) {
                    assert!(*a >= b * (1.0 - 1e-5), "JFA {a} below exact {b}");
                }
            }
        }
    }
    println!("JFA worst: fraction wrong {worst_frac:.4}, max abs error {worst_abs:.3} µm");
    // Measured here: no voxel wrong; at 128³ (touching spheres) 0.034 % wrong, max 0.19 µm.
    assert!(worst_frac < 0.002, "JFA wrong on {:.3}% of voxels", 100.0 * worst_frac);
    assert!(worst_abs < 0.8, "JFA max error {worst_abs} µm");
}

#[test]
fn ccl_gpu_equals_reference() {
    let ctx = ctx();
    ctx.set_poison_new_tensors(true);
    let mut most = 0;
    for (k, dims) in SHAPES.into_iter().enumerate() {
        for (j, p) in [0.15, 0.3, 0.5].into_iter().enumerate() {
            let mask = random_mask(dims, p, 60 + (k * 3 + j) as u64);
            for conn in [Connectivity::Six, Connectivity::TwentySix] {
                let (r, nr) = ccl::reference::label(&mask, dims, conn);
                let (g, ng) = ccl::label(ctx, &mask, dims, conn).unwrap();
                assert!(nr >= 1, "trivial test");
                most = most.max(nr);
                assert_eq!(ng, nr, "{dims:?} p={p} {conn:?}: component count");
                assert_eq!(g, r, "{dims:?} p={p} {conn:?}: labels");
            }
        }
    }
    assert!(most > 50, "the masks should have many components, got at most {most}");
}

#[test]
fn ccl_long_snake_and_empty() {
    // A boustrophedon path through every row: one long 6-connected component
    // whose lowest index is far from most voxels (stress for union-find).
    let ctx = ctx();
    let dims = [5, 9, 11];
    let [d, h, w] = dims;
    let mut mask = vec![0u8; d * h * w];
    for z in 0..d {
        for y in (0..h).step_by(2) {
            for x in 0..w {
                mask[(z * h + y) * w + x] = 1;
            }
            if y + 1 < h {
                let x = if (y / 2) % 2 == 0 { w - 1 } else { 0 };
                mask[(z * h + y + 1) * w + x] = 1;
            }
        }
        if z + 1 < d {
            mask[((z + 1) * h) * w + (h - 1) % 2 * (w - 1)] = 1;
        }
    }
    for conn in [Connectivity::Six, Connectivity::TwentySix] {
        let (r, nr) = ccl::reference::label(&mask, dims, conn);
        let (g, ng) = ccl::label(ctx, &mask, dims, conn).unwrap();
        assert_eq!((ng, &g), (nr, &r), "{conn:?}");
    }
    let (g, n) = ccl::label(ctx, &[0u8; 7 * 3 * 5], [7, 3, 5], Connectivity::Six).unwrap();
    assert_eq!(n, 0);
    assert!(g.iter().all(|&v| v == 0));
}

/// Markers: `n` random mask voxels, each its own label 1..=n.
fn random_markers(mask: &[u8], n: usize, seed: u64) -> Vec<u32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let fg: Vec<usize> = (0..mask.len()).filter(|&i| mask[i] != 0).collect();
    let mut m = vec![0u32; mask.len()];
    let mut l = 0;
    while l < n {
        let i = fg[rng.random_range(0..fg.len())];
        if m[i] == 0 {
            l += 1;
            m[i] = l as u32;
        }
    }
    m
}

/// The inputs of one watershed comparison.
struct Ws<'a> {
    surface: &'a [f32],
    markers: &'a [u32],
    mask: &'a [u8],
    dims: [usize; 3],
    conn: Connectivity,
}

/// For every marker label, the lowest flood level at which water from that
/// marker reaches each mask voxel: the minimum over paths inside the mask of
/// the largest surface value on the path (marker voxel included); +inf where
/// it cannot reach. Dijkstra with `max` in place of `+`.
fn flood_levels(ws: &Ws) -> std::collections::BTreeMap<u32, Vec<f32>> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let n: usize = ws.dims.iter().product();
    let key = |v: f32| {
        let b = v.to_bits();
        if b & 0x8000_0000 != 0 {
            !b
        } else {
            b | 0x8000_0000
        }
    };
    let labels: std::collections::BTreeSet<u32> =
        (0..n).filter(|&i| ws.mask[i] != 0 && ws.markers[i] != 0).map(|i| ws.markers[i]).collect();
    let offs = ws.conn.offsets();
    let mut out = std::collections::BTreeMap::new();
    for l in labels {
        let mut lv = vec![f32::INFINITY; n];
        let mut heap = BinaryHeap::new();
        for i in (0..n).filter(|&i| ws.mask[i] != 0 && ws.markers[i] == l) {
            lv[i] = ws.surface[i];
            heap.push(Reverse((key(lv[i]), i)));
        }
        while let Some(Reverse((k, i))) = heap.pop() {
            if k != key(lv[i]) {
                continue;
            }
            for j in Connectivity::neighbours(&offs, ws.dims, i) {
                let v = lv[i].max(ws.surface[j]);
                if ws.mask[j] != 0 && v < lv[j] {
                    lv[j] = v;
                    heap.push(Reverse((key(v), j)));
                }
            }
        }
        out.insert(l, lv);
    }
    out
}

/// Checks the GPU labels `g` against the priority flood's `r`: same
/// markers, region count and reachability; at every mask voxel both labels
/// reach it at the lowest flood level of any marker, so wherever the two
/// differ they differ by a tie (equal flood levels, which the priority flood
/// breaks by arrival order and the relaxation by its key); and agreement on
/// at least `min_agree` of the mask voxels. Returns the agreement.
#[track_caller]
fn check_watershed(what: &str, ws: &Ws, g: &[u32], r: &[u32], min_agree: f64) -> f64 {
    let (markers, mask) = (ws.markers, ws.mask);
    let fg = mask.iter().filter(|&&m| m != 0).count();
    let agree = (0..mask.len()).filter(|&i| mask[i] != 0 && g[i] == r[i]).count() as f64 / fg as f64;
    for i in 0..mask.len() {
        if mask[i] == 0 {
            assert_eq!(g[i], 0, "{what}: label outside mask at {i}");
        }
        if markers[i] != 0 && mask[i] != 0 {
            assert_eq!(g[i], markers[i], "{what}: marker voxel {i} relabelled");
        }
    }
    let regions = |v: &[u32]| v.iter().filter(|&&l| l != 0).collect::<std::collections::BTreeSet<_>>().len();
    assert_eq!(regions(g), regions(r), "{what}: region count");
    // Unreachable mask voxels: 0 in both.
    for i in 0..mask.len() {
        assert_eq!(g[i] == 0, r[i] == 0, "{what}: reachability differs at {i}");
    }
    let levels = flood_levels(ws);
    let mut ties = 0;
    for i in (0..mask.len()).filter(|&i| mask[i] != 0 && r[i] != 0) {
        let best = levels.values().map(|lv| lv[i]).fold(f32::INFINITY, f32::min);
        assert_eq!(levels[&r[i]][i], best, "{what}: reference label {} at voxel {i} is not a lowest flood", r[i]);
        assert_eq!(levels[&g[i]][i], best, "{what}: GPU label {} at voxel {i} is not a lowest flood", g[i]);
        ties += usize::from(g[i] != r[i]);
    }
    println!("{what}: agreement {:.4}% of {fg} mask voxels; the {ties} others are ties in flood level", 100.0 * agree);
    assert!(agree >= min_agree, "{what}: GPU and reference agree on {:.3}% of mask voxels", 100.0 * agree);
    agree
}

#[test]
fn watershed_gpu_agrees_with_priority_flood() {
    // The QCANet setting: touching spheres (radii 4-7 µm) on an anisotropic
    // grid of odd shape, -EDT surface, markers = components of the centre blobs.
    let ctx = ctx();
    ctx.set_poison_new_tensors(true);
    for (k, dims) in [[23, 45, 47], [31, 37, 41]].into_iter().enumerate() {
        let grid = Grid::new(dims, [1.75, 0.8, 0.8]);
        let f = spheres::touching_spheres(&grid, 40, (4.0, 7.0), 3 + k as u64);
        assert!(f.count() >= 4, "only {} spheres", f.count());
        let (markers, _) = ccl::reference::label(&f.markers, dims, Connectivity::TwentySix);
        let surface: Vec<f32> = edt::reference::edt(&f.mask, &grid).iter().map(|d| -d).collect();
        for conn in [Connectivity::Six, Connectivity::TwentySix] {
            let g = watershed::watershed(ctx, &surface, &markers, &f.mask, dims, conn).unwrap();
            let r = watershed::reference::watershed(&surface, &markers, &f.mask, dims, conn);
            let what = format!("spheres {dims:?} ({} spheres) {conn:?}", f.count());
            // Measured 99.35-99.6 %; the rest are ties in arrival order where
            // two floods meet.
            let ws = Ws { surface: &surface, markers: &markers, mask: &f.mask, dims, conn };
            check_watershed(&what, &ws, &g, &r, 0.99);
        }
    }
}

#[test]
fn grow_extends_each_nucleus_into_the_extent_it_reaches() {
    // Hysteresis: nuclei labelled on their cores (deeper than 0.4 of their
    // radius inside the spheres) grow back into the spheres' mask, the
    // extent; a stray blob of the extent that touches no nucleus stays
    // background. The GPU stage and the reference are both watersheds of
    // -EDT(extent) from the cores, held to the same lowest-flood check as the
    // watershed itself.
    use qcanet_gpu::postprocess::{grow, reference_grow, InstanceOptions, Watershed};
    let ctx = ctx();
    ctx.set_poison_new_tensors(true);
    for (k, dims) in [[23, 45, 47], [19, 33, 41]].into_iter().enumerate() {
        let grid = Grid::new(dims, [1.75, 0.8, 0.8]);
        let f = spheres::touching_spheres(&grid, 30, (4.0, 7.0), 11 + k as u64);
        assert!(f.count() >= 4, "only {} spheres", f.count());
        let depth = edt::reference::edt(&f.mask, &grid);
        let deep = |l: u32, d: f32| l != 0 && d as f64 > 0.4 * f.radii_um[l as usize - 1];
        let cores: Vec<u32> = f.labels.iter().zip(&depth).map(|(&l, &d)| if deep(l, d) { l } else { 0 }).collect();
        let mut extent = f.mask.clone();
        // The stray blob: a voxel column in a corner, away from every sphere's label.
        let corner: Vec<usize> = (0..dims[0]).map(|z| z * dims[1] * dims[2]).filter(|&i| f.mask[i] == 0).collect();
        corner.iter().for_each(|&i| extent[i] = 1);
        let r = reference_grow(&cores, &extent, &grid, Connectivity::Six).unwrap();
        let kinds = |v: &[u32]| v.iter().copied().filter(|&l| l != 0).collect::<std::collections::BTreeSet<u32>>();
        assert_eq!(kinds(&r), kinds(&cores), "no label added or lost");
        for i in 0..r.len() {
            if cores[i] != 0 {
                assert_eq!(r[i], cores[i], "core voxel {i} relabelled");
            }
            assert!(r[i] == 0 || extent[i] != 0, "label outside the extent at {i}");
        }
        // Every sphere voxel is reached (each sphere holds its core and is
        // connected within the mask); the stray column is not.
        let reached = |v: &[u32]| (0..v.len()).filter(|&i| f.mask[i] != 0 && v[i] != 0).count();
        let cored = f.labels.iter().zip(&cores).filter(|(&l, &c)| l != 0 && c != 0).count();
        assert!(cored < f.mask.iter().filter(|&&m| m != 0).count() / 2, "cores too large to test growth");
        assert_eq!(reached(&r), f.mask.iter().filter(|&&m| m != 0).count());
        assert!(corner.iter().all(|&i| r[i] == 0), "the stray blob was labelled");
        // Most voxels go back to their own sphere (the EDT of the union draws the
        // boundaries, as the watershed did).
        let own = (0..r.len()).filter(|&i| f.labels[i] != 0 && r[i] == f.labels[i]).count() as f64;
        assert!(own / f.mask.iter().filter(|&&m| m != 0).count() as f64 > 0.9, "own sphere {own}");
        let gpu = InstanceOptions { watershed: Watershed::Gpu, ..Default::default() };
        let g = grow(ctx, &cores, &extent, &grid, &gpu).unwrap();
        let flood = InstanceOptions { watershed: Watershed::Flood, ..Default::default() };
        assert_eq!(grow(ctx, &cores, &extent, &grid, &flood).unwrap(), r, "the flood option is the reference");
        let mask: Vec<u8> = cores.iter().zip(&extent).map(|(&l, &e)| u8::from(l != 0 || e != 0)).collect();
        let surface: Vec<f32> = edt::reference::edt(&mask, &grid).iter().map(|d| -d).collect();
        let ws = Ws { surface: &surface, markers: &cores, mask: &mask, dims, conn: Connectivity::Six };
        check_watershed(&format!("grow {dims:?}"), &ws, &g, &r, 0.99);
    }
    // Bad input: lengths that do not match the grid.
    let grid = Grid::new([3, 4, 5], [1.0; 3]);
    assert!(reference_grow(&[0; 60], &[0; 59], &grid, Connectivity::Six).is_err());
    assert!(grow(ctx, &[0; 59], &[0; 60], &grid, &InstanceOptions::default()).is_err());
}

#[test]
fn watershed_small_balls_centre_markers() {
    // Small balls (radius 2-6 voxels) whose -EDT is almost all plateaus, a
    // marker at each ball's centre voxel (often on another ball's slope).
    // Measured 63-100 % agreement (worst: 6-connected, spacing 0.5/1.3/0.9);
    // bound below. Counts, reachability and markers still match exactly, and
    // every voxel where the two differ is a tie in flood level
    // (`check_watershed`).
    let ctx = ctx();
    for (k, dims) in SHAPES.into_iter().enumerate() {
        for (s, &spacing) in SPACINGS.iter().enumerate() {
            let grid = Grid::new(dims, spacing);
            let (mask, markers) = random_balls(dims, 12, 70 + (2 * k + s) as u64);
            let surface: Vec<f32> = edt::reference::edt(&mask, &grid).iter().map(|d| -d).collect();
            for conn in [Connectivity::Six, Connectivity::TwentySix] {
                let g = watershed::watershed(ctx, &surface, &markers, &mask, dims, conn).unwrap();
                let r = watershed::reference::watershed(&surface, &markers, &mask, dims, conn);
                let what = format!("small balls {dims:?} {spacing:?} {conn:?}");
                let ws = Ws { surface: &surface, markers: &markers, mask: &mask, dims, conn };
                check_watershed(&what, &ws, &g, &r, 0.6);
            }
        }
    }
}

#[test]
fn watershed_with_markers_on_slopes() {
    // Adversarial: markers at random mask voxels (on slopes and boundaries of
    // the -EDT surface, with wide plateaus). The priority flood's outcome then
    // hinges on its global arrival order, which the relaxation only
    // approximates: measured about 86 % agreement here (the bound below), while
    // counts, reachability and markers still match exactly and every
    // difference is a tie in flood level.
    let ctx = ctx();
    for (k, dims) in SHAPES.into_iter().enumerate() {
        let grid = Grid::new(dims, SPACINGS[k]);
        let mask = random_blobs(dims, 10, 70 + k as u64);
        let surface: Vec<f32> = edt::reference::edt(&mask, &grid).iter().map(|d| -d).collect();
        let markers = random_markers(&mask, 9, 80 + k as u64);
        for conn in [Connectivity::Six, Connectivity::TwentySix] {
            let g = watershed::watershed(ctx, &surface, &markers, &mask, dims, conn).unwrap();
            let r = watershed::reference::watershed(&surface, &markers, &mask, dims, conn);
            let ws = Ws { surface: &surface, markers: &markers, mask: &mask, dims, conn };
            check_watershed(&format!("-EDT random markers {dims:?} {conn:?}"), &ws, &g, &r, 0.8);
        }
    }
}

#[test]
fn watershed_on_random_surface_and_unreachable_components() {
    // Independent random values: many local minima and descents, the hardest
    // case for matching the priority flood's arrival order.
    let ctx = ctx();
    let dims = [13, 17, 19];
    let mask = random_mask(dims, 0.75, 90);
    let surface: Vec<f32> =
        random_mask(dims, 0.5, 91).iter().zip(0..).map(|(_, i)| ((i * 7919) % 1009) as f32 * 0.01 - 3.0).collect();
    let markers = random_markers(&mask, 12, 92);
    for conn in [Connectivity::Six, Connectivity::TwentySix] {
        let g = watershed::watershed(ctx, &surface, &markers, &mask, dims, conn).unwrap();
        let r = watershed::reference::watershed(&surface, &markers, &mask, dims, conn);
        let ws = Ws { surface: &surface, markers: &markers, mask: &mask, dims, conn };
        check_watershed(&format!("random surface {conn:?}"), &ws, &g, &r, 0.95);
    }
}

#[test]
fn watershed_rejects_bad_input() {
    let ctx = ctx();
    let dims = [3, 4, 5];
    let n = 60;
    let (s, m, k) = (vec![0f32; n], vec![0u32; n], vec![1u8; n]);
    assert!(watershed::watershed(ctx, &s[1..], &m, &k, dims, Connectivity::Six).is_err());
    assert!(watershed::watershed(ctx, &s, &m, &k[1..], dims, Connectivity::Six).is_err());
    let mut nan = s.clone();
    nan[3] = f32::NAN;
    let e = watershed::watershed(ctx, &nan, &m, &k, dims, Connectivity::Six).unwrap_err();
    assert!(e.to_string().contains("NaN"), "{e}");
    let mut big = m.clone();
    big[0] = u32::MAX;
    assert!(watershed::watershed(ctx, &s, &big, &k, dims, Connectivity::Six).is_err());
    assert!(edt::edt(ctx, &k[1..], &Grid::isotropic(dims), EdtMethod::Exact).is_err());
    assert!(edt::edt(ctx, &k, &Grid::new(dims, [1.0, 0.0, 1.0]), EdtMethod::Exact).is_err());
    assert!(ccl::label(ctx, &k, [0, 4, 5], Connectivity::Six).is_err());
    let long = Grid::new([1, 1, 1025], [1.0; 3]);
    let e = edt::edt(ctx, &vec![1u8; 1025], &long, EdtMethod::Jfa).unwrap_err();
    assert!(e.to_string().contains("1024"), "{e}");
    assert!(edt::edt(ctx, &vec![1u8; 1025], &long, EdtMethod::Exact).is_ok());
}

#[test]
fn volumes_larger_than_one_binding_give_a_clear_error() {
    // 1 KiB bindings: a 7x9x11 volume (2772 bytes per array) does not fit.
    let ctx = capped_ctx(1024);
    let dims = [7, 9, 11];
    let mask = random_mask(dims, 0.8, 100);
    let grid = Grid::new(dims, [1.75, 0.8, 0.8]);
    for m in [EdtMethod::Exact, EdtMethod::Jfa] {
        let e = edt::edt(&ctx, &mask, &grid, m).unwrap_err();
        assert!(e.to_string().contains("binding"), "{e}");
    }
    let e = ccl::label(&ctx, &mask, dims, Connectivity::Six).unwrap_err();
    assert!(e.to_string().contains("binding"), "{e}");
    assert!(upload_mask(&ctx, &mask, dims, "x").is_err());
    // A volume that fits works under the same cap.
    let small = [3, 5, 7];
    let m = random_mask(small, 0.5, 101);
    let (g, n) = ccl::label(&ctx, &m, small, Connectivity::TwentySix).unwrap();
    let (r, nr) = ccl::reference::label(&m, small, Connectivity::TwentySix);
    assert_eq!((g, n), (r, nr));
}
