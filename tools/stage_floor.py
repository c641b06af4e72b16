#!/usr/bin/env python3
"""Per-stage floors between two `qcanet-gpu calibrate` outputs.

    python3 tools/stage_floor.py CANDIDATE_DIR BASELINE_DIR [--slack 0.01]

Each DIR is a `calibrate -o` folder: its nsn.safetensors and ndn.safetensors
carry the setting calibrate chose (thresholds, extent, marker dynamic), and
its calibration_volumes.csv every setting's scores on each volume. For the
chosen setting of each, the volumes are grouped by stage (the `tNNN` in
their names: Emb11_t501.tif, Emb11_t501_sim.tif and n10_Emb11_t501.tif are
one stage) and F1, SEG and foreground IoU averaged per stage. The candidate
holds if, on every stage, each is at least the baseline's minus the slack,
and it matches at least as many nuclei in all. A mean over volumes can hide
a stage lost to another gained (2026-12-07: an NSN adopted on the mean of
twelve lost the early stages' outlines; weights/HISTORY.md).

Prints the table; exits 0 if the candidate holds, 1 if not, 2 on bad input.
Standard library only.
"""
import argparse
import csv
import json
import os
import re
import struct
import sys
from collections import defaultdict


def fail(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def meta(path):
    """The qcanet_meta JSON of a safetensors file."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        return json.loads(header["__metadata__"]["qcanet_meta"])
    except (OSError, ValueError, KeyError, struct.error) as e:
        fail(f"{path}: not qcanet-gpu weights with metadata ({e})")


def chosen(d):
    """(nsn, extent, ndn, dynamic) as calibration_volumes.csv writes them."""
    nsn, ndn = meta(os.path.join(d, "nsn.safetensors")), meta(os.path.join(d, "ndn.safetensors"))
    if nsn.get("threshold") is None or ndn.get("threshold") is None:
        fail(f"{d}: the weights carry no calibrated threshold")
    t = nsn["threshold"]
    e = nsn.get("extent_threshold")
    e = t if e is None or e >= t else e
    return tuple(f"{v:.3f}" for v in (t, e, ndn["threshold"], ndn.get("marker_dynamic") or 0.0))


def stages(d):
    """{stage: [(f1, seg, iou, matched), ...]} at the chosen setting of d."""
    key = chosen(d)
    path = os.path.join(d, "calibration_volumes.csv")
    if not os.path.isfile(path):
        fail(f"{path}: missing (calibrate writes it since 2026-12-07)")
    out = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if (row["nsn_threshold"], row["nsn_extent"], row["ndn_threshold"], row["marker_dynamic"]) != key:
                continue
            m = re.search(r"_t(\d+)", row["volume"])
            stage = f"t{m.group(1)}" if m else row["volume"]
            out[stage].append((float(row["f1"]), float(row["seg"]), float(row["iou"]), int(row["matched"])))
    if not out:
        fail(f"{path}: no row at the weights' setting {key}")
    return key, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("candidate")
    ap.add_argument("baseline")
    ap.add_argument("--slack", type=float, default=0.01)
    a = ap.parse_args()
    ck, c = stages(a.candidate)
    bk, b = stages(a.baseline)
    if sorted(c) != sorted(b) or any(len(c[s]) != len(b[s]) for s in c):
        fail("the two calibrations scored different volumes")
    mean = lambda rows, i: sum(r[i] for r in rows) / len(rows)
    print(f"candidate at NSN {ck[0]} grown to {ck[1]}, NDN {ck[2]}, dynamic {ck[3]}; "
          f"baseline at {bk[0]} / {bk[1]} / {bk[2]} / {bk[3]}; slack {a.slack}")
    print(f"{'stage':8} {'volumes':>7}  {'F1':>15}  {'SEG':>15}  {'IoU':>15}")
    holds = True
    for s in sorted(c, key=lambda s: (len(s), s)):
        cells = []
        for i in range(3):
            cv, bv = mean(c[s], i), mean(b[s], i)
            ok = cv >= bv - a.slack
            holds &= ok
            cells.append(f"{cv:.4f}/{bv:.4f}{'' if ok else '!'}")
        print(f"{s:8} {len(c[s]):>7}  " + "  ".join(f"{x:>15}" for x in cells))
    cm, bm = sum(r[3] for s in c for r in c[s]), sum(r[3] for s in b for r in b[s])
    print(f"matched: {cm} against {bm}{'' if cm >= bm else '!'}")
    holds &= cm >= bm
    print("holds" if holds else "fails (! marks each floor broken)")
    sys.exit(0 if holds else 1)


if __name__ == "__main__":
    main()
