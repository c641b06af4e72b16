#!/usr/bin/env bash
# Prepares a lent-GPU training session (tools/device-train.sh runs it there).
#
# One `device` call carries at most 64 MiB together with the working tree
# (about 17 MB), and the BBBC050 training split is about 105 MB, so the kit is
# cut into parts of at most PART_MB (default 40) that successive calls carry;
# files left by one call stay on the machine for the next while it is warm
# (30 s). Each part holds files hard-linked from DATA (the same inodes: nothing
# is copied, and runs/ is ignored by git); part1 also holds the stripped
# release binary, built here (the device machine has no Rust toolchain).
#
#   bash tools/device-kit.sh [DATA]   (default ../shared/data/bbbc050)
#   bash tools/device-kit.sh --clean  (removes runs/device)
#
# It prints the calls to make: every part but the last with a no-op command,
# then the last with `bash tools/device-train.sh` (and `.gl`, the Vulkan
# loader package, see /work/.library/device/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
kit=runs/device
if [ "${1:-}" = --clean ]; then
  rm -rf "$kit"
  exit 0
fi
data=${1:-../shared/data/bbbc050}
part_mb=${PART_MB:-40}
[ -f "$data/split_list/train.txt" ] || { echo "error: $data/split_list/train.txt not found (the BBBC050 training split)" >&2; exit 1; }
rm -rf "$kit"
mkdir -p "$kit/part1/bin"
cargo build --release --quiet
strip -o "$kit/part1/bin/qcanet-gpu" target/release/qcanet-gpu
limit=$((part_mb * 1000 * 1000))
part=1
used=$(stat -c %s "$kit/part1/bin/qcanet-gpu")
# Ground truth and lists first (small, needed whatever the split), then the images in name order.
while IFS= read -r rel; do
  size=$(stat -c %s "$data/$rel")
  if [ $((used + size)) -gt "$limit" ]; then
    part=$((part + 1))
    used=0
  fi
  mkdir -p "$kit/part$part/bbbc050/$(dirname "$rel")"
  ln "$data/$rel" "$kit/part$part/bbbc050/$rel" 2>/dev/null || cp "$data/$rel" "$kit/part$part/bbbc050/$rel"
  used=$((used + size))
done < <(cd "$data" && { find . -type f ! -path './images_raw/*' | sort; find ./images_raw -type f | sort; } | sed 's|^\./||')
# The three choosing volumes as BBBC050's other microscope would take them
# (2.0 um slices, cubic spline along z, offset 1,700, gain 2, no read noise:
# what is known of it), NAME_sim.tif beside the originals, so device-train.sh
# also chooses checkpoints and thresholds on them.
sim=$(mktemp -d)
if python3 tools/simulate_microscope.py Emb11_t151 Emb11_t351 Emb11_t501 --data "$data" --dataset --noise 0 \
  --z-order 3 --out "$sim" > "$sim.log" 2>&1; then
  size=$(find "$sim" -name '*_sim.tif' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
  if [ $((used + size)) -gt "$limit" ]; then
    part=$((part + 1))
    used=0
  fi
  for f in "$sim"/*/*_sim.tif; do
    rel=${f#"$sim"/}
    mkdir -p "$kit/part$part/bbbc050/$(dirname "$rel")"
    cp "$f" "$kit/part$part/bbbc050/$rel"
  done
  used=$((used + size))
  echo "simulated choosing volumes (2.0 um slices) added to part $part: $(find "$sim" -name '*_sim.tif' | wc -l) files" >&2
else
  echo "warning: the simulated choosing volumes could not be made (tools/simulate_microscope.py needs numpy," \
    "scipy and tifffile; $sim.log): device-train.sh will choose on the three originals only" >&2
  cat "$sim.log" >&2
fi
rm -rf "$sim" "$sim.log"
echo "$part" > "$kit/part$part/LAST_PART_OF"
du -sh "$kit"/part* >&2
[ -f .gl/libvulkan1_*.deb ] 2>/dev/null || ls .gl/libvulkan1_*.deb >/dev/null 2>&1 ||
  echo "note: no .gl/libvulkan1_*.deb: fetch the Vulkan loader as /work/.library/device/README.md says" >&2
for ((k = 1; k < part; k++)); do
  echo "device run $k: command 'du -sh runs/device', carry [\"$kit/part$k\"], back to back (the machine stays warm 30 s)"
done
echo "device run $part: command 'bash tools/device-train.sh', carry [\"$kit/part$part\", \".gl\"], timeout_s 600"
