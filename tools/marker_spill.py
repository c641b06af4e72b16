#!/usr/bin/env python3
"""How much of each dilated NDN target lies in another nucleus (optional, not in CI).

`train` dilates the detection ground truth's markers (images_ndn/) by --radius voxels on
the 0.8 um grid the networks learn on (`--dilate`). For every marker of the listed volumes
this replicates that dilation (each voxel within the radius goes to the nearest marker, as
`train::patch::dilate` assigns it; its one-voxel gaps between markers are not replicated)
and counts the share of the marker's target that lies in ANOTHER nucleus of
labels_instance/, by the size of the marker's own nucleus. `train --dilate-within-nuclei`
makes that share zero. Reads the ground truth only; chooses nothing.

    python3 tools/marker_spill.py --data ../shared/data/bbbc050 --radius 3

Needs numpy, scipy and tifffile.
"""
import argparse
import os

import numpy as np
import tifffile
from scipy import ndimage as ndi


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dataset folder (images_ndn/, labels_instance/, split_list/)")
    ap.add_argument("--list", help="volumes to read, one a line (default: split_list/train.txt)")
    ap.add_argument("--times", default="t401,t451,t501", help="only names holding one of these (comma-separated; '' for all)")
    ap.add_argument("--radius", type=int, default=3, help="dilation radius in voxels of the 0.8 um grid")
    ap.add_argument("--z-um", type=float, default=1.75, help="slice spacing of the stacks (um)")
    ap.add_argument("--pixel-um", type=float, default=0.8, help="the grid's voxel (um)")
    ap.add_argument("--small", type=int, default=300, help="nuclei under this many voxels (stack grid) are small")
    a = ap.parse_args()
    lst = a.list or os.path.join(a.data, "split_list", "train.txt")
    times = [t for t in a.times.split(",") if t]
    names = [l.strip() for l in open(lst) if l.strip() and not l.startswith("#")]
    names = [n for n in names if not times or any(t in n for t in times)]
    if not names:
        raise SystemExit(f"error: {lst} lists no volume at {a.times}")
    zoom = (a.z_um / a.pixel_um, 1, 1)
    rows = []
    for n in names:
        m = tifffile.imread(os.path.join(a.data, "images_ndn", n)) > 0
        lab = tifffile.imread(os.path.join(a.data, "labels_instance", n)).astype(np.int64)
        sizes = np.bincount(lab.ravel())
        m = ndi.zoom(m.astype(np.uint8), zoom, order=0) > 0
        lab = ndi.zoom(lab, zoom, order=0)
        obj, k = ndi.label(m, structure=np.ones((3, 3, 3)))
        dist, idx = ndi.distance_transform_edt(obj == 0, return_indices=True)
        grown = np.where(dist <= a.radius, obj[tuple(idx)], 0)
        for o in range(1, k + 1):
            under = lab[obj == o]
            under = under[under > 0]
            own = np.bincount(under).argmax() if under.size else 0
            g = lab[grown == o]
            rows.append((sizes[own] if own else 0, g.size, np.count_nonzero((g > 0) & (g != own))))
    size, total, other = np.array(rows, dtype=float).T
    print(f"{len(names)} volumes, {len(rows)} markers dilated by {a.radius} voxels of {a.pixel_um} um")
    for label, sel in [(f"nuclei under {a.small} voxels", (size > 0) & (size < a.small)),
                       (f"nuclei of {a.small} voxels or more", size >= a.small),
                       ("markers in no nucleus", size == 0)]:
        if not sel.any():
            print(f"{label}: none")
            continue
        f = other[sel] / total[sel]
        print(f"{label}: {sel.sum()} markers; share of the target in another nucleus: mean {f.mean():.3f}, "
              f"median {np.median(f):.3f}, over a quarter in {(f > 0.25).sum()}")


if __name__ == "__main__":
    main()
