#!/usr/bin/env python3
"""What the small nuclei of a QCANet-layout ground truth are (optional, not in CI).

For every instance of DATA/labels_instance/ under --small voxels (default 300; the median
BBBC050 nucleus has about 1,600): its size, how much of it the segmentation ground truth
(images_nsn/) covers, whether every voxel of it is the detection ground truth's marker
(images_ndn/: the instance is the centre marker itself, with no drawn outline), and how
deep in the stack it lies (its centre's slice over the stack's slices). Prints counts by
size class and coverage, the depth histogram, the counts by time point, and, with --show
NAME, each small instance of that volume. Reads the ground truth only.

    python3 tools/gt_small_objects.py --data ../shared/data/bbbc050 --show Emb11_t501

Needs numpy, scipy and tifffile.
"""
import argparse
import collections
import glob
import os

import numpy as np
import tifffile
from scipy import ndimage as ndi


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dataset folder (labels_instance/, images_nsn/, images_ndn/)")
    ap.add_argument("--small", type=int, default=300, help="instances under this many voxels are small")
    ap.add_argument("--tiny", type=int, default=40, help="instances up to this many voxels are tiny")
    ap.add_argument("--show", nargs="*", default=[], help="volumes (names without .tif) whose small instances to list")
    a = ap.parse_args()
    files = sorted(glob.glob(os.path.join(a.data, "labels_instance", "*.tif")))
    if not files:
        raise SystemExit(f"error: {a.data}/labels_instance/ holds no .tif")
    classes = collections.Counter()
    depth = []
    by_time = collections.Counter()
    marker_only = 0
    total = 0
    for f in files:
        name = os.path.basename(f)
        lab = tifffile.imread(f)
        nsn = tifffile.imread(os.path.join(a.data, "images_nsn", name)) > 0
        ndn = tifffile.imread(os.path.join(a.data, "images_ndn", name)) > 0
        if not (lab.shape == nsn.shape == ndn.shape):
            raise SystemExit(f"error: {name}: shapes differ ({lab.shape}, {nsn.shape}, {ndn.shape})")
        ids = np.unique(lab)
        ids = ids[ids > 0]
        total += len(ids)
        sizes = ndi.sum(np.ones_like(lab), lab, ids)
        cover = ndi.sum(nsn, lab, ids) / sizes
        in_marker = ndi.sum(ndn, lab, ids)
        boxes = ndi.find_objects(lab)
        rows = []
        for i, s, c, m in zip(ids, sizes, cover, in_marker):
            size = f"<= {a.tiny}" if s <= a.tiny else f"{a.tiny + 1}-{a.small - 1}" if s < a.small else f">= {a.small}"
            cov = "none" if c == 0 else "< 0.5" if c < 0.5 else ">= 0.5"
            classes[(size, cov)] += 1
            if s < a.small:
                b = boxes[i - 1]
                zc = (b[0].start + b[0].stop - 1) / 2 / max(lab.shape[0] - 1, 1)
                depth.append(zc)
                by_time[name.rsplit("_", 1)[-1][:-4]] += 1
                only = m == s
                marker_only += only
                rows.append(
                    f"  {int(s):5d} voxels, slices {b[0].start}-{b[0].stop - 1} of {lab.shape[0]}, "
                    f"images_nsn covers {c:.2f}{', all of it the NDN marker' if only else ''}"
                )
        if name[:-4] in a.show:
            print(f"{name}: {len(rows)} small instances of {len(ids)}")
            print("\n".join(rows))
    print(f"{len(files)} volumes, {total} instances; by size (voxels) and the share images_nsn covers:")
    for k in sorted(classes):
        print(f"  {k[0]:>9}  covered {k[1]:>6}: {classes[k]}")
    n = len(depth)
    print(f"{n} small instances (< {a.small} voxels), {marker_only} of them exactly the NDN marker")
    if n:
        h = np.histogram(depth, bins=5, range=(0, 1))[0]
        print("  by depth (centre slice over the stack, fifths, first slices first):", " ".join(map(str, h)))
        print("  by time point:", ", ".join(f"{k} {v}" for k, v in sorted(by_time.items())))


if __name__ == "__main__":
    main()
