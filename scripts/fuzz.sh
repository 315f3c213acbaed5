#!/usr/bin/env bash
# The fuzz leg: every libFuzzer target of tests/fuzz (built by clang with ASan + UBSan +
# libFuzzer, in a build tree of its own) runs for a bounded number of inputs and seconds, starting from
# its seed corpus tests/fuzz/corpus/<target>; any crash, sanitizer report or violated
# property fails the leg and leaves the input in $BUILD_DIR/fuzz-artifacts.
#
# Faults that are reported and not fixed yet are listed in KNOWN_FAULTS below, each with the
# input that shows it (tests/fuzz/reproducers/<fault>). The bounded runs tolerate them; each
# reproducer is then replayed with nothing tolerated and must still fail, so that a fix
# makes this script fail until its entry is removed (like a strict xfail).
#
# Environment: BUILD_DIR (default build-fuzz), JOBS (default 2), FUZZ_SECONDS per target
# (default 20), FUZZ_RUNS per target (default 20000), FUZZ_SEED (default 1; 0 = random),
# CXX (default clang++). Needs clang with its libFuzzer runtime (Debian: clang,
# libclang-rt-14-dev). Only the library and the fuzz targets are built.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build-fuzz}
JOBS=${JOBS:-2}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
FUZZ_RUNS=${FUZZ_RUNS:-20000}
FUZZ_SEED=${FUZZ_SEED:-1}
CXX=${CXX:-clang++}

# fault name -> the target that shows it (the reproducer is tests/fuzz/reproducers/<name>).
# All reported in issue 13 or in the report that added this script.
declare -A KNOWN_FAULTS=(
  # None open. The faults fixed since (a positive weight on a padding slot, NaN errors, a
  # half-loaded state after a refused load, non-UTF-8 JSON, a check counter of INT64_MAX, a
  # node listed twice in a row with weight 0) have their reproducers in the targets'
  # corpora, replayed on every run.
)

# The fuzzers judge results, not threads (those have their own tests); leaks are the
# sanitizer leg's job (libtorch keeps per-process caches that look like leaks per input).
export OMP_NUM_THREADS=1
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER="$CXX" \
  -DCMAKE_PREFIX_PATH=/usr/lib/x86_64-linux-gnu/cmake \
  -DTORCH_GEOMETRY_SANITIZE="address;undefined" \
  -DTORCH_GEOMETRY_BUILD_FUZZERS=ON \
  -DTORCH_GEOMETRY_PYTHON="$ROOT/.venv/bin/python" > /dev/null

targets=()
for src in tests/fuzz/fuzz_*.cpp; do targets+=("$(basename "$src" .cpp)"); done
cmake --build "$BUILD_DIR" -j "$JOBS" --target "${targets[@]}"

known=$(IFS=,; echo "${!KNOWN_FAULTS[*]}")
mkdir -p "$BUILD_DIR/fuzz-artifacts"
status=0
for t in "${targets[@]}"; do
  work="$BUILD_DIR/fuzz-corpus/$t"
  mkdir -p "$work"
  start=$(date +%s)
  if TG_FUZZ_KNOWN_FAULTS="$known" "$BUILD_DIR/$t" "$work" "tests/fuzz/corpus/$t" \
      -runs="$FUZZ_RUNS" -max_total_time="$FUZZ_SECONDS" -seed="$FUZZ_SEED" -max_len=512 \
      -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
      -artifact_prefix="$BUILD_DIR/fuzz-artifacts/$t-" > "$BUILD_DIR/fuzz-artifacts/$t.log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$BUILD_DIR/fuzz-artifacts/$t.log" | grep -o '[0-9]*$')
    echo "fuzz.sh: $t: ${runs:-?} inputs in $(( $(date +%s) - start )) s, no failure"
  else
    echo "fuzz.sh: $t FAILED; its log ($BUILD_DIR/fuzz-artifacts/$t.log) ends with:" >&2
    tail -40 "$BUILD_DIR/fuzz-artifacts/$t.log" >&2
    status=1
  fi
done

for fault in "${!KNOWN_FAULTS[@]}"; do
  t=${KNOWN_FAULTS[$fault]}
  # Every other fault stays tolerated: the reproducer must fail because of this one.
  others=$(for f in "${!KNOWN_FAULTS[@]}"; do [ "$f" = "$fault" ] || echo "$f"; done | paste -sd, -)
  if TG_FUZZ_KNOWN_FAULTS="$others" "$BUILD_DIR/$t" "tests/fuzz/reproducers/$fault" \
      > "$BUILD_DIR/fuzz-artifacts/known-$fault.log" 2>&1; then
    echo "fuzz.sh: known fault $fault no longer fails ($t tests/fuzz/reproducers/$fault):" \
         "fixed? remove it from KNOWN_FAULTS in scripts/fuzz.sh and the reproducer" >&2
    status=1
  else
    echo "fuzz.sh: known fault $fault still fails (expected until fixed)"
  fi
done
exit $status
