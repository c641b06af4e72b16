#!/usr/bin/env bash
# The project's test command (README and CI): every test, GPU tests on
# whatever Vulkan adapter is present (lavapipe on machines without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check || echo "warning: code is not formatted (cargo fmt)"
cargo test
