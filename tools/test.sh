#!/usr/bin/env bash
# Runs the whole test suite (installs and builds first, as tools/setup.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" "$@"
