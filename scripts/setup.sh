#!/usr/bin/env bash
# Installs the Debian packages gdn2 builds and tests with, then configures and builds into build/.
# Usage: scripts/setup.sh [BUILD_DIR=build]. Safe to run again: it installs only what is missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
packages=(build-essential cmake ninja-build pkg-config libeigen3-dev catch2 libcli11-dev nlohmann-json3-dev
          python3-numpy clang libclang-rt-14-dev
          libimgui-dev libglfw3-dev libstb-dev libgl1-mesa-dri xvfb xauth
          python3-matplotlib jupyter-nbconvert python3-nbformat python3-ipykernel
          pybind11-dev python3-dev python3-pytest)
# Optional: PyTorch for the autograd comparison (tests/independent/gdn2_torch.py) and gdn2.torch's CPU tests
# (python/tests/test_torch_cpu.py); skipped without it.
[ "${GDN2_WITH_TORCH:-0}" = 1 ] && packages+=(python3-torch)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "==> building in $build"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGDN2_BUILD_VIEWER=ON \
  -DPython3_EXECUTABLE=/usr/bin/python3 >/dev/null  # the Python package is built for the system interpreter
cmake --build "$build" -j "$(nproc)"
