#!/usr/bin/env bash
# Installs the Debian packages torch_geometry needs. Harmless to run twice: when every
# package is already installed it returns at once without touching apt.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  python3 python3-dev python3-venv python3-pip python3-setuptools python3-wheel
  python3-torch libtorch-dev libeigen3-dev pybind11-dev python3-pybind11
  libgtest-dev libgmock-dev libbenchmark-dev zlib1g-dev
  clang libclang-rt-14-dev ccache
  libopenblas0-pthread
  python3-numpy python3-scipy python3-sklearn python3-pytest python3-matplotlib python3-tqdm python3-hypothesis
  python3-faiss python3-torchvision
  dataset-fashion-mnist
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#PACKAGES[@]} Debian packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install_deps: installing ${missing[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
