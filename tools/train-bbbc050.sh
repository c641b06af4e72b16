#!/usr/bin/env bash
# Trains QCANet's NSN and NDN on the BBBC050 training split with the authors'
# split (train Emb01-Emb10, validate Emb11) and the protocol of
# weights/README.md: checkpoints are chosen by the validation volumes' instance
# scores (each network paired with the other through the marker watershed),
# never by a volume reported as held out; then calibrates the thresholds and
# the NDN's marker dynamic on the same volumes.
#
#   bash tools/train-bbbc050.sh [DATA] [OUT]
#   (defaults: ../shared/data/bbbc050 runs/bbbc050; QCANET=path/to/qcanet-gpu to use a built binary)
#
# Settings through the environment (defaults: the settings of the fine-tuning
# run of the bundled weights, sized for a 2-core CPU with lavapipe; the NDN's
# markers are now dilated without ever joining two, so the NDN it trains is
# not the bundled one bit for bit: see weights/HISTORY.md):
#   INIT_NSN, INIT_NDN  weights to start from (default the bundled ones; set
#                       INIT_NSN= INIT_NDN= to train from scratch, e.g. on a GPU)
#   PATCH=48 STEPS=25 EPOCHS_NSN=8 EPOCHS_NDN=6 LR=3e-4 VAL_LIST=a file of validation names
#                       (default: the three stages in this script; "" for all of split_list/validation.txt)
set -euo pipefail
data=${1:-../shared/data/bbbc050}
out=${2:-runs/bbbc050}
q=${QCANET:-cargo run --release --quiet --}
here=$(cd "$(dirname "$0")/.." && pwd)
init_nsn=${INIT_NSN-$here/weights/nsn.safetensors}
init_ndn=${INIT_NDN-$here/weights/ndn.safetensors}
patch=${PATCH:-48}
steps=${STEPS:-25}
lr=${LR:-3e-4}
[ -f "$data/split_list/train.txt" ] || { echo "error: $data/split_list/train.txt not found (the BBBC050 training split)" >&2; exit 1; }
mkdir -p "$out"
if [ -z "${VAL_LIST+x}" ]; then
  # An early, a middle and a crowded stage of the validation embryo: every
  # epoch predicts each validation volume with the trained network.
  printf 'Emb11_t151.tif\nEmb11_t351.tif\nEmb11_t501.tif\n' > "$out/val3.txt"
  VAL_LIST=$out/val3.txt
fi
val=()
[ -n "$VAL_LIST" ] && val=(--val-list "$VAL_LIST")
common=(--data "$data" "${val[@]}" --patch "$patch" --steps-per-epoch "$steps" --bn-recalibration 8
  --val-tile 136 --val-overlap 0 --lr "$lr" --lr-final "$(awk -v l="$lr" "BEGIN{print l/100}")" --seed 1)
nsn_init=(); [ -n "$init_nsn" ] && nsn_init=(--init "$init_nsn")
ndn_init=(); [ -n "$init_ndn" ] && ndn_init=(--init "$init_ndn")
# 1. The NSN, validated with the starting NDN as its marker partner.
$q train --model nsn "${nsn_init[@]}" --val-partner "${init_ndn:-$here/weights/ndn.safetensors}" --class-weights 1,4 \
  --epochs "${EPOCHS_NSN:-8}" "${common[@]}" --out "$out/nsn"
# 2. The NDN, validated with the new NSN as its segmentation partner.
$q train --model ndn "${ndn_init[@]}" --val-partner "$out/nsn/best.safetensors" --dilate 4 \
  --epochs "${EPOCHS_NDN:-6}" "${common[@]}" --out "$out/ndn"
# 3. Thresholds and the NDN's marker dynamic, chosen on the same validation volumes.
calib_list=()
[ -n "$VAL_LIST" ] && calib_list=(--list "$VAL_LIST")
$q calibrate --nsn "$out/nsn/best_f16.safetensors" --ndn "$out/ndn/best_f16.safetensors" --data "$data" \
  "${calib_list[@]}" --out-dir "$out/calib" --overwrite
echo "weights: $out/calib/nsn.safetensors and $out/calib/ndn.safetensors (calibrated; score them with infer + eval)"
