#!/usr/bin/env bash
# Installs Mesa's software Vulkan driver (lavapipe) and the Vulkan loader.
# Mesa 25 from bookworm-backports runs our kernels about twice as fast as
# Debian 12's Mesa 22.3, so enable backports when the suite list allows it.
set -euo pipefail
src=/etc/apt/sources.list.d/debian.sources
backports=""
if [ -f "$src" ] && grep -q '^Suites:.*\bbookworm\b' "$src"; then
  if ! grep -q 'bookworm-backports' "$src"; then
    sed -i '0,/^Suites: bookworm\b/s//Suites: bookworm bookworm-backports/' "$src"
  fi
  backports="-t bookworm-backports"
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq $backports mesa-vulkan-drivers libvulkan1 >/dev/null
dpkg-query -W -f='${Package} ${Version}\n' mesa-vulkan-drivers libvulkan1
