#!/usr/bin/env bash
# Installs everything latim needs on Debian 12 / Ubuntu (apt packages, a Python venv for
# the tools and tests) and builds it into build/. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential cmake pkg-config git
  libopenmpi-dev openmpi-bin libhdf5-openmpi-dev hdf5-tools
  libboost-program-options-dev libgtest-dev nlohmann-json3-dev libopenblas-openmp-dev zlib1g-dev
  python3 python3-venv python3-pip
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python tools (reference implementation, plots, copy-task metrics) live in a venv.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r tools/requirements.txt

mkdir -p build
log=build/setup.log
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE="$PWD/.venv/bin/python" > "$log" 2>&1 \
  || { cat "$log"; exit 1; }
cmake --build build -j"$(nproc)" >> "$log" 2>&1 || { tail -50 "$log"; exit 1; }
version=$(build/latim --version)
echo "setup: built build/latim (${version//$'\n'/; })"
