#!/usr/bin/env bash
# Builds the training set the bundled weights were trained on (weights/HISTORY.md, "Earlier weights (before BBBC050)"):
# the 8-cell example embryo, listed 5 times so that about a third of the
# training patches are real, plus 10 synthetic embryos from `qcanet-gpu synth`;
# validation on 3 further synthetic embryos, so the 16-cell example embryo is
# used neither for training nor for choosing checkpoints.
#
#   bash tools/make-training-set.sh [EXAMPLE_DIR] [OUT_DIR]
#   (defaults: ../shared/data/qcanet-example runs/mix; QCANET=path/to/qcanet-gpu to use a built binary)
set -euo pipefail
src=${1:-../shared/data/qcanet-example}
out=${2:-runs/mix}
q=${QCANET:-cargo run --release --quiet --}
for k in raw nsn ndn; do
  [ -f "$src/images_$k/8_cell_stage.tif" ] || { echo "error: $src/images_$k/8_cell_stage.tif not found" >&2; exit 1; }
done
if [ -e "$out" ]; then echo "error: $out already exists" >&2; exit 1; fi
$q synth -o "$out.synth" --count 13 --validation 3 --seed 11 --nuclei 4..48
mkdir -p "$out/split_list"
for k in raw nsn ndn; do
  mkdir -p "$out/images_$k"
  cp "$src/images_$k/8_cell_stage.tif" "$out.synth/images_$k/"*.tif "$out/images_$k/"
done
{ for _ in 1 2 3 4 5; do echo 8_cell_stage.tif; done; cat "$out.synth/split_list/train.txt"; } > "$out/split_list/train.txt"
cp "$out.synth/split_list/validation.txt" "$out/split_list/validation.txt"
rm -r "$out.synth"
echo "training set in $out: $(wc -l < "$out/split_list/train.txt") training entries, $(wc -l < "$out/split_list/validation.txt") validation stacks"
