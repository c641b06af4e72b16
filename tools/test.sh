#!/usr/bin/env bash
# The project's test command (README and CI): formatting, then every test,
# GPU tests on whatever Vulkan adapter is present (lavapipe on machines
# without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo fmt --all -- --check; then
  echo "error: the code is not formatted (diff above); run 'cargo fmt --all' and commit the result" >&2
  exit 1
fi
cargo test
