#!/usr/bin/env python3
"""Where the small nuclei of one volume went in a prediction (optional, not in CI).

For every true nucleus under --max-voxels voxels (labels_instance/), prints its best IoU with
a predicted label, and each predicted label that covers it: how many of its voxels, how large
that label is and which true nuclei the rest of it covers. Shows whether a missed small nucleus
was left as background or absorbed by a neighbour's segment (no marker of its own). Then the
matched counts (IoU >= 0.5) of the small and the larger nuclei. Measures; chooses nothing.

    python3 tools/small_nuclei_fate.py --gt GT.tif --pred PRED_labels.tif [--max-voxels 150]

Needs numpy and tifffile.
"""
import argparse

import numpy as np
import tifffile


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gt", required=True, help="true instance labels (z, y, x)")
    ap.add_argument("--pred", required=True, help="predicted instance labels of the same shape")
    ap.add_argument("--max-voxels", type=int, default=150, help="a nucleus under this many voxels is small")
    a = ap.parse_args()
    gt = tifffile.imread(a.gt).astype(np.int64)
    pred = tifffile.imread(a.pred).astype(np.int64)
    if gt.shape != pred.shape:
        raise SystemExit(f"{a.pred}: shape {pred.shape} differs from {a.gt}'s {gt.shape}")
    pred_size = np.bincount(pred.ravel())
    matched = {True: 0, False: 0}
    total = {True: 0, False: 0}
    for i, size in zip(*np.unique(gt[gt > 0], return_counts=True)):
        inside = gt == i
        labels, counts = np.unique(pred[inside], return_counts=True)
        best, parts = 0.0, []
        for l, c in zip(labels, counts):
            if l == 0:
                parts.append(f"background {c}")
                continue
            best = max(best, c / (size + pred_size[l] - c))
            if size < a.max_voxels:
                rest = np.unique(gt[(pred == l) & ~inside], return_counts=True)
                big = ", ".join(f"{int(g) or 'bg'}: {int(n)}" for g, n in sorted(zip(*rest), key=lambda t: -t[1])[:3])
                parts.append(f"label {l}: {c} of its {pred_size[l]} (rest mostly on {big})")
        small = size < a.max_voxels
        total[small] += 1
        matched[small] += best >= 0.5
        if small:
            z, y, x = np.argwhere(inside).mean(0)
            print(f"nucleus {i}, {size} voxels at z {z:.0f} y {y:.0f} x {x:.0f}: IoU {best:.2f}; " + "; ".join(parts))
    print(f"matched at IoU 0.5: {matched[True]} of {total[True]} small, {matched[False]} of {total[False]} larger")


if __name__ == "__main__":
    main()
