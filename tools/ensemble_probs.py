#!/usr/bin/env python3
"""Two networks' saved probabilities, alone and averaged, through the instance stage (optional, not in CI).

Would averaging the probabilities of two independently trained pairs (an ensemble) keep
the better pair's accuracy on BBBC050 and the other's on another appearance? Each
combination's thresholds and marker dynamic are chosen on the CHOOSE volumes only (the
grid `qcanet-gpu calibrate` searches), then every volume is scored at those settings.
The instance stage is tools/marker_variants.py's replica of `infer`'s.

    qcanet-gpu infer STACKS --save-probabilities -o A            # pair A
    qcanet-gpu infer STACKS --save-probabilities -o B --nsn .. --ndn ..   # pair B
    python3 tools/ensemble_probs.py --a A --b B --gt NAME=LABELS.tif ... --choose NAMES

Needs numpy, scipy, tifffile and scikit-image.
"""
import argparse
import itertools
import os
import sys

import numpy as np
import tifffile
from scipy import ndimage as ndi

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from marker_variants import hmax, instances, scores  # noqa: E402

THRESHOLDS = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
DYNAMICS = [0.0, 0.05, 0.1, 0.2]


def spacing_of(path):
    """(z, y, x) voxel size in um from an ImageJ TIFF written by qcanet-gpu."""
    with tifffile.TiffFile(path) as t:
        z = float((t.imagej_metadata or {}).get("spacing", 1.75))
        num, den = t.pages[0].tags["XResolution"].value
        return (z, den / num, den / num)


def stage(pn, pd, tn, td, h, sp, cache):
    key = (tn, td, h)
    if key not in cache:
        if ("hm", h) not in cache:
            cache[("hm", h)] = hmax(pd, h) if h > 0 else None
        det = pd > td
        if cache[("hm", h)] is not None:
            det = det & cache[("hm", h)]
        markers = ndi.label(det, structure=np.ones((3, 3, 3)))[0]
        if ("edt", tn) not in cache:
            seg = pn > tn
            cache[("edt", tn)] = (seg, ndi.distance_transform_edt(seg, sampling=sp))
        cache[key] = instances(pn, tn, markers, sp, cache[("edt", tn)])
    return cache[key]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="folder of NAME_nsn_prob.tif, NAME_ndn_prob.tif (pair A)")
    ap.add_argument("--b", required=True, help="the same for pair B")
    ap.add_argument("--gt", nargs="+", required=True, help="NAME=LABELS.tif for every volume to score")
    ap.add_argument("--choose", nargs="+", required=True, help="names that choose the settings")
    ap.add_argument("--combos", default="1:1,0:0,1:0,0:1,0.5:0.5",
                    help="NSN:NDN weights of A (B gets the rest) to try, comma-separated; 1:1 is A alone")
    a = ap.parse_args()
    gt = dict(x.split("=", 1) for x in a.gt)
    for n in a.choose:
        if n not in gt:
            sys.exit(f"error: choosing volume {n} has no --gt")
    prob = {}
    for n in gt:
        for k, d in (("a", a.a), ("b", a.b)):
            for net in ("nsn", "ndn"):
                p = f"{d}/{n}_{net}_prob.tif"
                if not os.path.exists(p):
                    sys.exit(f"error: {p} not found")
                prob[(k, net, n)] = tifffile.imread(p).astype(np.float32)
        prob[("sp", n)] = spacing_of(f"{a.a}/{n}_nsn_prob.tif")
    truth = {n: tifffile.imread(p).astype(np.int64) for n, p in gt.items()}
    combos = {}
    for c in a.combos.split(","):
        wn, wd = (float(x) for x in c.split(":"))
        combos[f"NSN {wn:g}A NDN {wd:g}A"] = (wn, wd)
    for name, (wn, wd) in combos.items():
        inputs = {}
        for n in gt:
            pn = wn * prob[("a", "nsn", n)] + (1 - wn) * prob[("b", "nsn", n)]
            pd = wd * prob[("a", "ndn", n)] + (1 - wd) * prob[("b", "ndn", n)]
            inputs[n] = (pn, pd, {})
        best = None
        for tn, td, h in itertools.product(THRESHOLDS, THRESHOLDS, DYNAMICS):
            s = [scores(truth[n], stage(*inputs[n][:2], tn, td, h, prob[("sp", n)], inputs[n][2])) for n in a.choose]
            f, sg = np.mean([x[0] for x in s]), np.mean([x[1] for x in s])
            if best is None or (f, sg) > best[0]:
                best = ((f, sg), (tn, td, h))
            for n in a.choose:  # free memory of the trials not chosen
                inputs[n][2].pop((tn, td, h), None)
        (f, sg), (tn, td, h) = best
        print(f"== {name}: chosen NSN {tn}, NDN {td}, dynamic {h} (choosing F1 {f:.4f}, SEG {sg:.4f})", flush=True)
        for n in gt:
            pn, pd, cache = inputs[n]
            F, S, I, tp, P = scores(truth[n], stage(pn, pd, tn, td, h, prob[("sp", n)], cache))
            tag = "choose" if n in a.choose else "scored"
            print(f"{name:16s} {n:22s} {tag}  pred {P:3d} true {int(truth[n].max()):3d} tp {tp:3d}  F1 {F:.4f} SEG {S:.4f} IoU {I:.4f}", flush=True)
            cache.clear()


if __name__ == "__main__":
    main()
