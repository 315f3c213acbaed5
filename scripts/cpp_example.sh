#!/usr/bin/env bash
# Builds the LibTorch trainer example as a user would (find_package(TorchGeometry) against an
# installed package) and trains it for 2 epochs on 2,000 images.
# Usage: scripts/cpp_example.sh BUILD_FOLDER "PREFIX;PREFIX..."
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1
prefix=$2
cmake -S examples/cpp_trainer -B "$out" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix"
cmake --build "$out" -j "$(nproc)"
"$out/cpp_trainer" --epochs 2 --subset 2000 --out "$out/run"
