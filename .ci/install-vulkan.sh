#!/usr/bin/env bash
# Installs Mesa's software Vulkan driver (lavapipe) and the Vulkan loader.
# Mesa 25 from bookworm-backports runs our kernels about twice as fast as
# Debian 12's Mesa 22.3, so enable backports when the suite list allows it.
#
# Works from a root shell (a container without sudo) and for a user with
# sudo: it elevates itself through sudo only when not already root.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  if [ "${1:-}" = --via-sudo ]; then
    echo "install-vulkan.sh: sudo did not run it as root; run it from a root shell" >&2
    exit 1
  fi
  if command -v sudo >/dev/null 2>&1; then
    exec sudo bash "${BASH_SOURCE[0]}" --via-sudo "$@"
  fi
  echo "install-vulkan.sh: installing packages needs root, and sudo is not installed;" >&2
  echo "  run it from a root shell (e.g. su -c 'bash .ci/install-vulkan.sh'), or install sudo first" >&2
  exit 1
fi
if [ "${1:-}" = --via-sudo ]; then shift; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-vulkan.sh: needs apt-get (Debian or Ubuntu); elsewhere install Mesa's Vulkan drivers and the Vulkan loader with your package manager" >&2
  exit 1
fi
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
