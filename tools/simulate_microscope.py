#!/usr/bin/env python3
"""Makes BBBC050-style stacks look as if taken on another microscope, to measure
how the networks hold up (a robustness check; it chooses nothing).

For each NAME given, reads DATA/images_raw/NAME.tif and DATA/labels_instance/NAME.tif
(0.8 x 0.8 x 1.75 um voxels) and writes to OUT/raw/ and OUT/gt/:
  NAME_z2.tif     z resampled to SLICE um (image linear, or cubic spline with --z-order 3;
                  labels nearest), nothing else
  NAME.tif        the same, then counts -> OFFSET + GAIN * (counts - 90) + N(0, NOISE) (uint16)
Both carry their voxel size (ImageJ spacing and resolution), so `infer` reads it.
Then: qcanet-gpu infer OUT/raw/*.tif -o OUT/pred && qcanet-gpu eval --pred OUT/pred --gt OUT/gt

With --dataset, OUT is instead a QCANet-layout dataset `train` and `calibrate` read:
every file of DATA linked (images_raw, images_nsn, images_ndn, labels_instance,
split_list), plus NAME_sim.tif in each image folder (the shifted, noisy volume;
ground truth resampled nearest), so validation lists can name both.

Defaults follow what is known of BBBC050's other microscope (background near 1,700
counts, 2.0 um slices); its gain and read noise are not known: NOISE is a guess.
Needs python3 with numpy, scipy and tifffile (analysis only; not used by the program).
"""
import argparse

import numpy as np
import tifffile
from scipy import ndimage as ndi

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("names", nargs="+", help="volume names without .tif, e.g. Emb11_t451")
p.add_argument("--data", default="../shared/data/bbbc050")
p.add_argument("--out", required=True)
p.add_argument("--slice", type=float, default=2.0, help="new z step in um (source 1.75)")
p.add_argument("--offset", type=float, default=1700.0)
p.add_argument("--gain", type=float, default=2.0)
p.add_argument("--noise", type=float, default=20.0, help="Gaussian read noise, counts (after gain)")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--z-order", type=int, default=1, choices=(1, 3),
               help="image interpolation along z: 1 linear (blurs: each new slice blends two), "
               "3 cubic spline (closer to a stack acquired at SLICE um, which no resampling blurs)")
p.add_argument("--dataset", action="store_true", help="write a QCANet-layout dataset (DATA linked, NAME_sim.tif added)")
a = p.parse_args()

import os

FOLDERS = ("images_raw", "images_nsn", "images_ndn", "labels_instance", "split_list")
if a.dataset:
    for d in FOLDERS:
        os.makedirs(os.path.join(a.out, d), exist_ok=True)
        for f in os.listdir(os.path.join(a.data, d)):
            link = os.path.join(a.out, d, f)
            if not os.path.lexists(link):
                os.symlink(os.path.abspath(os.path.join(a.data, d, f)), link)
for d in ("raw", "gt") if not a.dataset else ():
    os.makedirs(os.path.join(a.out, d), exist_ok=True)
rng = np.random.default_rng(a.seed)
meta = {"spacing": a.slice, "unit": "micron", "axes": "ZYX"}


def write(path, x, dtype):
    tifffile.imwrite(path, x.astype(dtype), imagej=True, resolution=(1 / 0.8, 1 / 0.8), metadata=meta, compression="zlib")


for name in a.names:
    raw = tifffile.imread(os.path.join(a.data, "images_raw", name + ".tif")).astype(np.float64)
    gt = tifffile.imread(os.path.join(a.data, "labels_instance", name + ".tif"))
    nz = int(round(raw.shape[0] * 1.75 / a.slice))
    zz, yy, xx = np.meshgrid(np.arange(nz) * a.slice / 1.75, np.arange(raw.shape[1]), np.arange(raw.shape[2]), indexing="ij")
    r = ndi.map_coordinates(raw, [zz, yy, xx], order=a.z_order, mode="nearest")
    g = ndi.map_coordinates(gt, [zz, yy, xx], order=0, mode="nearest")
    shifted = a.offset + a.gain * (r - 90.0) + rng.normal(0.0, a.noise, r.shape)
    if a.dataset:
        write(os.path.join(a.out, "images_raw", name + "_sim.tif"), np.clip(np.round(shifted), 0, 65535), np.uint16)
        for d in ("images_nsn", "images_ndn", "labels_instance"):
            t = tifffile.imread(os.path.join(a.data, d, name + ".tif"))
            write(os.path.join(a.out, d, name + "_sim.tif"), ndi.map_coordinates(t, [zz, yy, xx], order=0, mode="nearest"), t.dtype)
        print(f"{name}: {raw.shape} -> {r.shape}, {len(np.unique(g)) - 1} nuclei")
        continue
    for suffix, img in (("_z2", r), ("", shifted)):
        write(os.path.join(a.out, "raw", name + suffix + ".tif"), np.clip(np.round(img), 0, 65535), np.uint16)
        write(os.path.join(a.out, "gt", name + suffix + ".tif"), g, gt.dtype)
    print(f"{name}: {raw.shape} -> {r.shape}, {len(np.unique(g)) - 1} nuclei")
