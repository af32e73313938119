#!/usr/bin/env bash
# The collectives' GPU checks in one go, for a borrowed Hopper machine (about a minute): the benchmark (table + JSON)
# and the GPU test binary, logs into OUT_DIR (default bench/results).
#   bench/cluster_collectives/run_gpu_checks.sh [OUT_DIR]
# Binaries: from build/default (cmake --preset default && cmake --build --preset default --target
# cf_bench_cluster_collectives cf_test_collectives_gpu), or from a flat folder named by $CF_BIN_DIR holding both.
set -o pipefail
out=${1:-bench/results}
mkdir -p "$out"
find_bin() {
  if [ -n "$CF_BIN_DIR" ]; then echo "$CF_BIN_DIR/$1"; else echo "build/default/$2/$1"; fi
}
bench=$(find_bin cf_bench_cluster_collectives bench/cluster_collectives)
tests=$(find_bin cf_test_collectives_gpu tests/gpu/primitives)
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,driver_version --format=csv 2>&1 | tee "$out/cluster_collectives_device.txt"
timeout 120 "$bench" --json "$out/cluster_collectives.json" 2>&1 | tee "$out/cluster_collectives.txt"
bench_rc=$?
timeout 300 "$tests" 2>&1 | tee "$out/cluster_collectives_gpu_tests.log" | grep -v '^\[ RUN'
tests_rc=$?
echo "benchmark exit $bench_rc, GPU tests exit $tests_rc"
[ $bench_rc -eq 0 ] && [ $tests_rc -eq 0 ]
