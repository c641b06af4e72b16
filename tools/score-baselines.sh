#!/usr/bin/env bash
# Scores QCANet against its two baselines the way the paper's Figure 3 compares them, on the validation
# volumes of a QCANet-layout dataset: NSN + connected components, 3-D U-Net + connected components, and
# QCANet (NSN + NDN + marker watershed), each from `qcanet-gpu figure --save-labels` (one pass of each
# network per volume, the bundled weights unless --nsn/--ndn/--unet are passed through FIGURE_ARGS), then
# `qcanet-gpu eval` per method on folders of NAME_labels.tif links.
#
#   bash tools/score-baselines.sh [DATA] [OUT]
#   (defaults: ../shared/data/bbbc050 runs/baselines; QCANET=path/to/qcanet-gpu to use a built binary)
#
# Volumes already done are skipped, so an interrupted run resumes.
set -euo pipefail
data=${1:-../shared/data/bbbc050}
out=${2:-runs/baselines}
q=${QCANET:-cargo run --release --quiet --}
list=$data/split_list/validation.txt
[ -f "$list" ] || { echo "error: $list not found (a QCANet-layout dataset with split_list/)" >&2; exit 1; }
mkdir -p "$out/labels" "$out/nsn_ccl" "$out/unet_ccl" "$out/qcanet"
while read -r n; do
  [ -n "$n" ] || continue
  s=${n%.tif}
  [ -f "$out/labels/${s}_qcanet_labels.tif" ] ||
    $q figure "$data/images_raw/$n" --truth "$data/labels_instance/$n" -o "$out/${s}_figure.png" \
      --save-labels "$out/labels" ${FIGURE_ARGS:-}
  for m in nsn_ccl unet_ccl qcanet; do ln -sf "../labels/${s}_${m}_labels.tif" "$out/$m/${s}_labels.tif"; done
done < "$list"
for m in nsn_ccl unet_ccl qcanet; do
  echo "== $m"
  $q eval --pred "$out/$m" --gt "$data/labels_instance" --list "$list" | tee "$out/$m/eval.txt"
done
