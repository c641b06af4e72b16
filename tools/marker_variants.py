#!/usr/bin/env python3
"""Marker and instance-stage variants scored on saved probabilities (optional, not in CI).

A Python replica of QCANet's instance stage (NSN mask > t_nsn, markers = 26-connected
components of NDN > t_ndn on its h-maxima, watershed of -EDT(mask) with 6-connectivity,
unmarked components dropped), used to try other markers without rebuilding the program.
It reproduces `qcanet-gpu infer`'s default labels on the volumes it was checked on
(Emb11_t151/t351/t501: 2/2, 16/16, 40 of 53 matched, 43 predicted).

    qcanet-gpu infer $D/images_raw/Emb11_t{151,351,501}.tif -o runs/prob3 --save-probabilities
    python3 tools/marker_variants.py --pred runs/prob3 --data $D Emb11_t151 Emb11_t351 Emb11_t501

With --shoulders, the instance stage as `infer` runs it now (split within NSN > --nsn, grown
to NSN > --extent, objects under --min-um3 dropped; each volume at the voxel size its
probability file states), with markers added where a Laplacian of Gaussian of the NDN has a
peak away from every NDN marker: the "shoulders" a tiny nucleus leaves on a large
neighbour's response (--diagnose), which hold no maximum of the NDN itself.

    python3 tools/marker_variants.py --pred DIR --data DIR --nsn 0.8 --extent 0.6 --shoulders NAMES

With --iso-back DIR, the probabilities of isotropic stacks (--make-iso, then infer with
--voxel-size 0.8,0.8,0.8 --save-probabilities) taken back to the stack's slices by nearest
(as `infer` does) and by linear interpolation, each through that stage.

Variants: the NDN smoothed before its h-maxima; markers from the h-maxima of the
distance transform alone; h-maxima of NDN + a * EDT. With --iso DIR, the same stage on
isotropic probabilities (infer on z-resampled stacks with --voxel-size 0.8,0.8,0.8; see
--make-iso), the labels then taken back to the stack's slices, nearest, as
`preprocess::resample` does. Needs numpy, scipy, tifffile and scikit-image.
Choose with it on validation volumes only.

With --diagnose, no variants: for each volume, every true nucleus the instance stage
misses (its size, how much of it the NSN covers, how many markers fall in it, the NDN's
peak in it, the prediction that holds it and which other nuclei that prediction holds),
every false prediction, and the score the same NSN mask and watershed reach from the
true markers (images_ndn/): what better markers alone could gain.

    python3 tools/marker_variants.py --pred runs/prob3 --data $D --nsn 0.4 --diagnose Emb11_t501

With --saddles, no variants: the stage as --shoulders runs it, then for each prediction that
holds more than half of two or more true nuclei, each nucleus's NDN peak and the saddle between
each pair (the highest level at which both peaks lie in one 26-connected component of
NDN >= level). h-maxima with dynamic h can give the two their own markers only where
min(peaks) - saddle >= h: a saddle equal to the lower peak is a shoulder, which no marker rule on
the NDN separates; only an NDN that dips between them does.

    python3 tools/marker_variants.py --pred DIR --data DIR --nsn 0.8 --extent 0.6 --saddles Emb11_t501

With --reliefs, the stage as --shoulders runs it with other surfaces for both watersheds (the
NSN's or the NDN's probability, EDT x NSN, EDT + 5 NDN, the raw image smoothed), from the NDN's
markers and from the true ones (images_ndn/): whether the relief, not the markers, loses nuclei.

    python3 tools/marker_variants.py --pred DIR --data DIR --nsn 0.8 --extent 0.6 --reliefs Emb11_t501

With --separated, ground truth masks in place of the NSN's (ground truth only but for the NDN's
markers): labels_instance > 0, and the same with the contact layer between touching nuclei taken
out as `train --separate-touching` does (the larger of two gives it up; here on the stack's grid),
each from the NDN's markers (--ndn, --dynamic) and from the true ones, with components no marker
reaches dropped, all labelled, or labelled only within 2 voxels of a labelled nucleus; then the
components alone. What an NSN that draws the borders between touching nuclei could reach.

    python3 tools/marker_variants.py --pred DIR --data DIR --ndn 0.9 --dynamic 0.3 --separated Emb11_t501
"""
import argparse
import os

import numpy as np
import tifffile
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.morphology import local_maxima, reconstruction
from skimage.segmentation import watershed

ANISO = (1.75, 0.8, 0.8)


def hmax(f, h):
    """h-maxima (regional maxima of the reconstruction by dilation of f - h under f)."""
    return local_maxima(reconstruction(f - h, f, method="dilation"), connectivity=3, allow_borders=True)


def markers_ndn(pd, td, h):
    det = pd > td
    if h > 0:
        det &= hmax(pd, h)
    return ndi.label(det, structure=np.ones((3, 3, 3)))[0]


def edt_of(pn, tn, spacing):
    """The NSN mask and its Euclidean distance transform in um."""
    seg = pn > tn
    return seg, ndi.distance_transform_edt(seg, sampling=spacing)


def instances(pn, tn, markers, spacing, mask_edt=None):
    """Watershed of -EDT from `markers` inside the NSN mask (`mask_edt` from edt_of, if already computed)."""
    seg, edt = mask_edt if mask_edt is not None else edt_of(pn, tn, spacing)
    return watershed(-edt, markers, mask=seg, connectivity=1)


def voxel_um(path):
    """(z, y, x) voxel size in um from an ImageJ TIFF (spacing, XResolution), else ANISO."""
    with tifffile.TiffFile(path) as t:
        ij = t.imagej_metadata or {}
        xr = t.pages[0].tags.get("XResolution")
        if "spacing" not in ij or xr is None:
            return ANISO
        num, den = xr.value
        xy = den / num if num else ANISO[1]
        return (float(ij["spacing"]), xy, xy)


def neg_edt(mask, spacing):
    """The instance stage's relief: -EDT of the mask, in um."""
    return -ndi.distance_transform_edt(mask, sampling=spacing)


def grown(pn, tn, te, markers, spacing, min_um3, relief=neg_edt):
    """`infer`'s stage: watershed within NSN > tn, each label grown into NSN > te by a second
    watershed, objects under min_um3 dropped. Both watersheds flood relief(mask, spacing)
    (-EDT of the mask in `infer`; --reliefs tries others)."""
    seg = pn > tn
    lab = watershed(relief(seg, spacing), markers, mask=seg, connectivity=1)
    if te < tn:
        low = (pn > te) | (lab > 0)
        lab = watershed(relief(low, spacing), lab, mask=low, connectivity=1)
    c = np.bincount(lab.ravel())
    small = c < min_um3 / np.prod(spacing)
    small[0] = False
    lab[small[lab]] = 0
    return lab


def shoulder_markers(pd, td, h, spacing, sigma_um, t_log, floor, d_um):
    """NDN markers plus one voxel at each peak of -sigma^2 LoG(NDN) above t_log, where the NDN is
    above floor, at least d_um from every NDN marker."""
    m = markers_ndn(pd, td, h)
    sp = np.asarray(spacing)
    r = -ndi.gaussian_laplace(pd.astype(np.float64), sigma=sigma_um / sp) * sigma_um**2
    dist = ndi.distance_transform_edt(m == 0, sampling=sp)
    k = int(m.max())
    for z, y, x in peak_local_max(r, min_distance=1, threshold_abs=t_log, exclude_border=False):
        if pd[z, y, x] >= floor and dist[z, y, x] >= d_um and m[z, y, x] == 0:
            k += 1
            m[z, y, x] = k
    return m


def separated(g):
    """labels_instance > 0 with the contact layer between touching nuclei taken out: a voxel goes when a
    26-neighbour holds another nucleus with fewer voxels (or as many and a lower label), as
    `train::touching::separated_nuclei` does."""
    size = np.bincount(g.ravel())
    rank = np.where(g > 0, size[g] * (int(g.max()) + 1) + g, 0)
    keep = g > 0
    gp, rp = np.pad(g, 1), np.pad(rank, 1)
    Z, Y, X = g.shape
    for dz in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                n = gp[1 + dz:1 + dz + Z, 1 + dy:1 + dy + Y, 1 + dx:1 + dx + X]
                rn = rp[1 + dz:1 + dz + Z, 1 + dy:1 + dy + Y, 1 + dx:1 + dx + X]
                keep &= ~((n > 0) & (n != g) & (rn < rank))
    return keep


def with_unmarked(lab, seg, near):
    """lab with each 6-connected component of seg that holds no label labelled too (near: only those within
    2 voxels, 26-neighbourhood, of a labelled voxel)."""
    cc = ndi.label(seg)[0]
    marked = np.zeros(int(cc.max()) + 1, bool)
    marked[np.unique(cc[lab > 0])] = True
    reach = ndi.binary_dilation(lab > 0, structure=np.ones((3, 3, 3)), iterations=2) if near else None
    out, k = lab.copy(), int(lab.max())
    for i, sl in enumerate(ndi.find_objects(cc), 1):
        if sl is None or marked[i]:
            continue
        m = cc[sl] == i
        if near and not reach[sl][m].any():
            continue
        k += 1
        out[sl][m] = k
    return out


def overlaps(g, lab):
    """Voxel counts shared by true object i and prediction j (row and column 0: background), the
    objects' sizes, the predictions' sizes, and their IoUs."""
    ov = np.zeros((int(g.max()) + 1, int(lab.max()) + 1), np.int64)
    np.add.at(ov, (g.ravel(), lab.ravel().astype(np.int64)), 1)
    gs, ps = ov.sum(1), ov.sum(0)
    return ov, gs, ps, ov / (gs[:, None] + ps[None, :] - ov + 1e-9)


def scores(g, lab):
    """F1 at IoU > 0.5 (one-to-one), SEG, foreground IoU, true positives, predicted count."""
    G, P = int(g.max()), int(lab.max())
    both = ((g > 0) & (lab > 0)).sum()
    fiou = both / max((g > 0).sum() + (lab > 0).sum() - both, 1)
    if P == 0:
        return 0.0, 0.0, fiou, 0, 0
    ov, gs, ps, iou = overlaps(g, lab)
    tp = int((iou[1:, 1:] > 0.5).sum())
    # SEG: each true object's Jaccard with the prediction covering more than half of it, else 0.
    seg = []
    for i in range(1, G + 1):
        if gs[i] == 0:
            continue
        j = int(np.argmax(ov[i, 1:])) + 1
        seg.append(iou[i, j] if ov[i, j] > 0.5 * gs[i] else 0.0)
    return 2 * tp / (G + P), float(np.mean(seg)) if seg else 0.0, fiou, tp, P


def f1(g, lab):
    """F1 at IoU > 0.5 (one-to-one), true positives, predicted count."""
    f, _, _, tp, p = scores(g, lab)
    return f, tp, p


def diagnose(name, g, pn, pd, gt_markers, tn, td, h, spacing):
    """Why nuclei are missed (see --diagnose), printed."""
    m = markers_ndn(pd, td, h)
    mask_edt = edt_of(pn, tn, spacing)
    lab = instances(pn, tn, m, spacing, mask_edt)
    G, P = int(g.max()), int(lab.max())
    ov, gs, ps, iou = overlaps(g, lab)
    match = iou[1:, 1:] > 0.5
    sizes = gs[1:][gs[1:] > 0]
    print(f"{name}: {G} true, {P} predicted, {int(match.sum())} matched; median true size {np.median(sizes):.0f} "
          f"voxels, predicted {np.median(ps[1:]) if P else 0:.0f}")
    for i in range(1, G + 1):
        if gs[i] == 0 or match[i - 1].any():
            continue
        inside = g == i
        j = int(np.argmax(ov[i, 1:])) + 1 if P else 0
        others = [k for k in range(1, G + 1) if k != i and j and ov[k, j] > 0.2 * ps[j]]
        print(f"  missed {i:4d}: {gs[i]:6d} voxels, NSN covers {(pn[inside] > tn).mean():.2f}, "
              f"{len(np.unique(m[inside & (m > 0)]))} marker(s), NDN peak {pd[inside].max():.2f}; "
              f"mostly in prediction {j} ({ps[j] if j else 0} voxels, IoU {iou[i, j] if j else 0:.2f}), "
              f"which also holds {others or 'no other nucleus'}")
    for j in range(1, P + 1):
        if not match[:, j - 1].any():
            i = int(np.argmax(ov[1:, j])) + 1
            print(f"  false {j:4d}: {ps[j]:6d} voxels, {ov[i, j] / ps[j]:.2f} of it in nucleus {i}")
    f, sg, fi, tp, p = scores(g, lab)
    gm = ndi.label(gt_markers, structure=np.ones((3, 3, 3)))[0]
    f2, sg2, _, tp2, p2 = scores(g, instances(pn, tn, gm, spacing, mask_edt))
    print(f"  F1 {f:.3f} SEG {sg:.3f} ({tp} of {G}); from the true markers F1 {f2:.3f} SEG {sg2:.3f} ({tp2} of {G}, "
          f"{p2} predicted)")


def saddle(pd, a, b, top, steps=12):
    """Highest level (to 2^-steps of top) at which voxels a and b lie in one 26-connected component
    of pd >= level; pd[a], pd[b] >= top."""
    lo, hi = 0.0, top
    for _ in range(steps):
        mid = (lo + hi) / 2
        cl = ndi.label(pd >= mid, structure=np.ones((3, 3, 3)))[0]
        if cl[a] > 0 and cl[a] == cl[b]:
            lo = mid
        else:
            hi = mid
    return lo


def saddles(name, g, lab, pd):
    """Prints, for each prediction holding more than half of two or more true nuclei, their NDN
    peaks and pairwise saddles (see --saddles); returns how many pairs are shoulders (saddle
    within 0.01 of the lower peak) and how many pairs there are."""
    ov, gs, ps, _ = overlaps(g, lab)
    shoulders = pairs = 0
    for j in range(1, int(lab.max()) + 1):
        held = [i for i in range(1, int(g.max()) + 1) if gs[i] > 0 and ov[i, j] > 0.5 * gs[i]]
        if len(held) < 2:
            continue
        peaks = []
        for i in held:
            k = int(np.argmax(np.where(g == i, pd, -1.0)))
            peaks.append((i, gs[i], np.unravel_index(k, pd.shape), float(pd.flat[k])))
        txt = []
        for x in range(len(peaks)):
            for y in range(x + 1, len(peaks)):
                (ia, sa, ca, va), (ib, sb, cb, vb) = peaks[x], peaks[y]
                s = saddle(pd, ca, cb, min(va, vb))
                pairs += 1
                shoulders += min(va, vb) - s < 0.01
                txt.append(f"{ia} ({sa} voxels, peak {va:.2f}) and {ib} ({sb}, {vb:.2f}): saddle {s:.2f}")
        print(f"  {name} prediction {j} ({ps[j]} voxels): " + "; ".join(txt))
    return shoulders, pairs


def source_z(z, d, new_d):
    """Source z of slice z when d slices become new_d, clamped to the stack (preprocess::source_z)."""
    return min(max((z + 0.5) * d / new_d - 0.5, 0), d - 1)


def nearest_back(d, nd):
    """Slice of an nd-slice isotropic stack nearest to each of the d original slices."""
    return np.array([min(int(np.floor(source_z(z, nd, d) + 0.5)), nd - 1) for z in range(d)])


def linear_z(f, new_d):
    """f (z, y, x) resampled to new_d slices, linear, voxel centres aligned (preprocess::resample)."""
    d = f.shape[0]
    out = np.empty((new_d,) + f.shape[1:], np.float32)
    for z in range(new_d):
        s = source_z(z, d, new_d)
        k0 = int(np.floor(s))
        k1 = min(k0 + 1, d - 1)
        out[z] = f[k0] + (f[k1] - f[k0]) * np.float32(s - k0)
    return out


def make_iso(data, names, out):
    """Stacks z-resampled to isotropic voxels (linear, preprocess::resample's convention)."""
    os.makedirs(out, exist_ok=True)
    for n in names:
        r = tifffile.imread(f"{data}/images_raw/{n}.tif").astype(np.float32)
        d = r.shape[0]
        sz, sy, _ = voxel_um(f"{data}/images_raw/{n}.tif")
        nd = int(np.floor(d * sz / sy + 0.5))   # as Rust rounds (half away from zero), not Python
        iso = linear_z(r, nd)
        tifffile.imwrite(f"{out}/{n}.tif", iso)
        print(f"{out}/{n}.tif", iso.shape)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pred", help="folder of NAME_nsn_prob.tif and NAME_ndn_prob.tif (infer --save-probabilities)")
    ap.add_argument("--iso", help="the same from isotropic stacks")
    ap.add_argument("--make-iso", help="write isotropic stacks of NAMES to this folder and stop")
    ap.add_argument("--data", required=True, help="dataset folder (labels_instance/)")
    ap.add_argument("--nsn", type=float, default=0.2)
    ap.add_argument("--ndn", type=float, default=0.3)
    ap.add_argument("--dynamic", type=float, default=0.1)
    ap.add_argument("--diagnose", action="store_true", help="why nuclei are missed, and the score from true markers")
    ap.add_argument("--shoulders", action="store_true", help="markers added at the NDN's shoulders (see above)")
    ap.add_argument("--saddles", action="store_true", help="the NDN's saddles between nuclei one prediction holds")
    ap.add_argument("--reliefs", action="store_true", help="other watershed surfaces, from NDN and true markers")
    ap.add_argument("--separated", action="store_true", help="true masks, touching nuclei separated or not (see above)")
    ap.add_argument("--iso-back", metavar="DIR", help="isotropic probabilities (infer --voxel-size 0.8,0.8,0.8 of "
                    "--make-iso stacks) taken back to the stack's slices, nearest and linear, then the stage as "
                    "--shoulders runs it")
    ap.add_argument("--extent", type=float, default=0.6, help="--shoulders, --saddles, --iso-back: NSN threshold nuclei grow to")
    ap.add_argument("--min-um3", type=float, default=18.0, help="--shoulders, --saddles, --iso-back: smallest object kept (um^3)")
    ap.add_argument("names", nargs="+")
    a = ap.parse_args()
    if a.make_iso:
        make_iso(a.data, a.names, a.make_iso)
        return
    truth = {n: tifffile.imread(f"{a.data}/labels_instance/{n}.tif").astype(np.int64) for n in a.names}
    if a.diagnose:
        for n in a.names:
            diagnose(n, truth[n], tifffile.imread(f"{a.pred}/{n}_nsn_prob.tif"),
                     tifffile.imread(f"{a.pred}/{n}_ndn_prob.tif"),
                     tifffile.imread(f"{a.data}/images_ndn/{n}.tif") > 0, a.nsn, a.ndn, a.dynamic, ANISO)
        return

    if a.saddles:
        for n in a.names:
            g, sp = truth[n], voxel_um(f"{a.pred}/{n}_nsn_prob.tif")
            pn = tifffile.imread(f"{a.pred}/{n}_nsn_prob.tif")
            pd = tifffile.imread(f"{a.pred}/{n}_ndn_prob.tif").astype(np.float32)
            lab = grown(pn, a.nsn, a.extent, markers_ndn(pd, a.ndn, a.dynamic), sp, a.min_um3)
            f, sg, _, tp, p = scores(g, lab)
            sh, pairs = saddles(n, g, lab, pd)
            print(f"{n}: F1 {f:.3f} SEG {sg:.3f}, {tp} of {int(g.max())} matched, {p} predicted; "
                  f"{sh} of {pairs} joined pairs are shoulders (saddle at the lower peak)", flush=True)
        return

    if a.reliefs:
        for n in a.names:
            g, sp = truth[n], voxel_um(f"{a.pred}/{n}_nsn_prob.tif")
            pn = tifffile.imread(f"{a.pred}/{n}_nsn_prob.tif")
            pd = tifffile.imread(f"{a.pred}/{n}_ndn_prob.tif").astype(np.float32)
            raw = ndi.gaussian_filter(tifffile.imread(f"{a.data}/images_raw/{n}.tif").astype(np.float32),
                                      (0.8 / sp[0], 1.0, 1.0))
            reliefs = {
                "-EDT (infer)": neg_edt,
                "-NSN": lambda m, s: -pn,
                "-NDN": lambda m, s: -pd,
                "-EDT x NSN": lambda m, s: neg_edt(m, s) * pn,
                "-(EDT + 5 NDN)": lambda m, s: neg_edt(m, s) - 5 * pd,
                "-raw (smoothed)": lambda m, s: -raw,
            }
            true_markers = ndi.label(tifffile.imread(f"{a.data}/images_ndn/{n}.tif") > 0, structure=np.ones((3, 3, 3)))[0]
            for which, mk in [("NDN markers", markers_ndn(pd, a.ndn, a.dynamic)), ("true markers", true_markers)]:
                for label, relief in reliefs.items():
                    f, sg, _, tp, p = scores(g, grown(pn, a.nsn, a.extent, mk, sp, a.min_um3, relief))
                    print(f"{n}, {which:12s} {label:16s} F1 {f:.3f} SEG {sg:.3f}, {tp} of {int(g.max())} matched, "
                          f"{p} predicted", flush=True)
        return

    if a.separated:
        for n in a.names:
            g = truth[n]
            sp = voxel_um(f"{a.data}/images_raw/{n}.tif")
            pd = tifffile.imread(f"{a.pred}/{n}_ndn_prob.tif").astype(np.float32)
            true_markers = ndi.label(tifffile.imread(f"{a.data}/images_ndn/{n}.tif") > 0, structure=np.ones((3, 3, 3)))[0]
            sizes = np.bincount(g.ravel())
            tiny = [k for k in range(1, len(sizes)) if 0 < sizes[k] < 300]

            def show(label, lab):
                f, sg, iou, tp, p = scores(g, lab)
                _, _, _, m = overlaps(g, lab)
                t = sum(bool((m[k, 1:] > 0.5).any()) for k in tiny)
                print(f"{n}, {label:44s} F1 {f:.3f} SEG {sg:.3f} IoU {iou:.3f}, {tp} of {int(g.max())} matched, "
                      f"{p} predicted, {t} of {len(tiny)} under 300 voxels", flush=True)

            for fg_label, fg in [("labels > 0", g > 0), ("separated", separated(g))]:
                for which, mk in [("NDN markers", markers_ndn(pd, a.ndn, a.dynamic)), ("true markers", true_markers)]:
                    lab = grown(fg.astype(np.float32), 0.5, 0.5, mk, sp, a.min_um3)
                    show(f"{fg_label}, {which}", lab)
                    show(f"{fg_label}, {which}, unmarked labelled", with_unmarked(lab, fg, False))
                    show(f"{fg_label}, {which}, unmarked within 2", with_unmarked(lab, fg, True))
                show(f"{fg_label}, components alone", ndi.label(fg, structure=np.ones((3, 3, 3)))[0])
        return

    if a.iso_back:
        def back(f, d, linear):
            nd = f.shape[0]
            if not linear:
                return f[nearest_back(d, nd)]
            return linear_z(f, d)

        for linear in [False, True]:
            r = []
            for n in a.names:
                g = truth[n]
                sp = voxel_um(f"{a.data}/images_raw/{n}.tif")
                pn = back(tifffile.imread(f"{a.iso_back}/{n}_nsn_prob.tif"), g.shape[0], linear)
                pd = back(tifffile.imread(f"{a.iso_back}/{n}_ndn_prob.tif"), g.shape[0], linear)
                r.append(scores(g, grown(pn, a.nsn, a.extent, markers_ndn(pd, a.ndn, a.dynamic), sp, a.min_um3)))
            print(f"{'linear' if linear else 'nearest':8s} F1 {np.mean([x[0] for x in r]):.4f} "
                  f"SEG {np.mean([x[1] for x in r]):.4f} IoU {np.mean([x[2] for x in r]):.4f}  matched/predicted "
                  + " ".join(f"{x[3]}/{x[4]}" for x in r), flush=True)
            for n, x in zip(a.names, r):
                print(f"  {n:20s} F1 {x[0]:.4f} SEG {x[1]:.4f} IoU {x[2]:.4f}")
        return

    if a.shoulders:
        vols = [(n, tifffile.imread(f"{a.pred}/{n}_nsn_prob.tif"), tifffile.imread(f"{a.pred}/{n}_ndn_prob.tif"),
                 voxel_um(f"{a.pred}/{n}_nsn_prob.tif")) for n in a.names]

        def show(label, mk):
            r = [scores(truth[n], grown(pn, a.nsn, a.extent, mk(pd, sp), sp, a.min_um3)) for n, pn, pd, sp in vols]
            print(f"{label:30s} F1 {np.mean([x[0] for x in r]):.4f} SEG {np.mean([x[1] for x in r]):.4f} "
                  f"IoU {np.mean([x[2] for x in r]):.4f}  matched/predicted " + " ".join(f"{x[3]}/{x[4]}" for x in r),
                  flush=True)

        show("as infer", lambda pd, sp: markers_ndn(pd, a.ndn, a.dynamic))
        for s in [1.0, 1.5, 2.0]:
            for t in [0.05, 0.1, 0.2]:
                for fl in [0.1, 0.2]:
                    for d in [3.0, 4.0]:
                        show(f"LoG {s} um > {t}, NDN > {fl}, {d} um", lambda pd, sp, s=s, t=t, fl=fl, d=d:
                             shoulder_markers(pd, a.ndn, a.dynamic, sp, s, t, fl, d))
        return

    def run(label, folder, fn, iso=False):
        res = []
        for n in a.names:
            pn = tifffile.imread(f"{folder}/{n}_nsn_prob.tif")
            pd = tifffile.imread(f"{folder}/{n}_ndn_prob.tif")
            g = truth[n]
            lab = fn(pn, pd, (ANISO[1],) * 3 if iso else ANISO)
            if iso:
                lab = lab[nearest_back(g.shape[0], lab.shape[0])]
            res.append(f1(g, lab))
        hits = " ".join(f"{tp}/{p}" for _, tp, p in res)
        print(f"{label:34s} mean F1 {np.mean([r[0] for r in res]):.3f}  matched/predicted {hits}", flush=True)

    tn, td, h = a.nsn, a.ndn, a.dynamic
    if a.pred:
        run(f"as infer (nsn {tn}, ndn {td}, h {h})", a.pred, lambda pn, pd, sp: instances(pn, tn, markers_ndn(pd, td, h), sp))
        for s in [0.5, 1.0]:
            for hh in [0.05, 0.1, 0.2]:
                for t in [0.2, 0.3]:
                    run(f"ndn gauss {s} h {hh} ndn {t}", a.pred,
                        lambda pn, pd, sp, s=s, hh=hh, t=t: instances(
                            pn, tn, markers_ndn(ndi.gaussian_filter(pd, (s * sp[1] / sp[0], s, s)), t, hh), sp))
        for he in [0.5, 1.0, 1.5, 2.0]:
            def edt_markers(pn, pd, sp, he=he):
                seg, edt = edt_of(pn, tn, sp)
                return instances(pn, tn, ndi.label(hmax(edt, he) & seg, structure=np.ones((3, 3, 3)))[0], sp, (seg, edt))
            run(f"edt h-maxima {he} um", a.pred, edt_markers)
        for w in [0.05, 0.1, 0.2]:
            for hh in [0.1, 0.2]:
                def combined(pn, pd, sp, w=w, hh=hh):
                    seg, edt = edt_of(pn, tn, sp)
                    m = ndi.label(hmax(pd + w * edt, hh) & (pd > td), structure=np.ones((3, 3, 3)))[0]
                    return instances(pn, tn, m, sp, (seg, edt))
                run(f"ndn + {w} edt, h {hh}", a.pred, combined)
    if a.iso:
        for t_n in [0.2, 0.3]:
            for t_d in [0.3, 0.5]:
                for hh in [0, 0.05, 0.1, 0.2]:
                    run(f"isotropic nsn {t_n} ndn {t_d} h {hh}", a.iso,
                        lambda pn, pd, sp, t_n=t_n, t_d=t_d, hh=hh: instances(pn, t_n, markers_ndn(pd, t_d, hh), sp),
                        iso=True)


if __name__ == "__main__":
    main()
