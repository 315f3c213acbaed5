#!/usr/bin/env bash
# The sanitizer leg: the GoogleTest suite (ctest) built with AddressSanitizer and
# UndefinedBehaviorSanitizer, then run. Only our code is instrumented (the library and the
# tests, through cmake/TorchGeometrySanitizers.cmake), not libtorch. Any sanitizer report
# aborts the test that made it, so ctest fails.
#
# Needs `make setup` first (the TorchScript test scripts its model with the project's
# Python). Environment: BUILD_DIR (default build-asan), JOBS (default 2), PYTHON (default
# .venv/bin/python), CXX (default g++: the compiler and OpenMP runtime of the real build;
# clang 14 cannot compile tests/cpp/test_hooks.cpp, which captures structured bindings in
# lambdas). scripts/fuzz.sh builds the fuzz targets with clang in a tree of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build-asan}
JOBS=${JOBS:-2}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
CXX=${CXX:-g++}

if [ ! -x "$PYTHON" ]; then
  echo "sanitize.sh: no Python at $PYTHON: run \`make setup\` first (or set PYTHON)" >&2
  exit 2
fi

# Leaks: on, with the allocations libtorch makes once per process and never frees suppressed
# (tests/sanitizers/lsan.supp names them); our own code gets no suppression.
export ASAN_OPTIONS="detect_leaks=1:check_initialization_order=1:strict_init_order=1:detect_stack_use_after_return=1:abort_on_error=0:halt_on_error=1"
export LSAN_OPTIONS="suppressions=$ROOT/tests/sanitizers/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

start=$(date +%s)
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER="$CXX" \
  -DCMAKE_PREFIX_PATH=/usr/lib/x86_64-linux-gnu/cmake \
  -DTORCH_GEOMETRY_SANITIZE="address;undefined" \
  -DTORCH_GEOMETRY_BUILD_FUZZERS=OFF \
  -DTORCH_GEOMETRY_PYTHON="$PYTHON"
cmake --build "$BUILD_DIR" -j "$JOBS"
built=$(date +%s)
(cd "$BUILD_DIR" && ctest --output-on-failure -j "$JOBS")
echo "sanitize.sh: build $((built - start)) s, ctest $(( $(date +%s) - built )) s"
