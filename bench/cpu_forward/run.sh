#!/usr/bin/env bash
# Measures the cpu backend on the default model (CLI, real weights) and on random weights of its shapes (per weight
# type), 1 and 2 threads, and prints a log for bench/results/. Run on a quiet machine:
#   bench/cpu_forward/run.sh [build/cpu] > bench/results/cpu_forward_$(date +%F).txt
set -euo pipefail
build="${1:-build/cpu}"
echo "# cpu backend throughput, $(date -u +%FT%TZ), git $(git rev-parse --short HEAD)"
echo "# $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "## default model (SmolLM2-135M-Instruct Q4_1), README prompt, 200 tokens, seed 0"
for t in 1 2; do
  "$build/clusterfusion" generate -p "Why is the sky blue?" -n 200 --repeat-penalty 1 -t "$t" 2>&1 >/dev/null | grep '^\['
done
echo "## default model, a 256-token prompt (prompt processing)"
long="$(printf 'The history of the city goes back many centuries, and its streets remember it. %.0s' {1..16})"
for t in 1 2; do
  "$build/clusterfusion" generate --raw -p "$long" -n 16 -t "$t" 2>&1 >/dev/null | grep '^\['
done
echo "## random weights of SmolLM2-135M shapes: weight type x threads (64-token prompt, 128 generated)"
for d in q4_1 q8_0 f16 f32; do
  for t in 1 2; do "$build/bench/cpu_forward/cf_bench_cpu_forward" --dtype "$d" --threads "$t" --prompt 64 --gen 128; done
done
echo "## q4_1 per instruction set, 1 thread"
for isa in avx2 portable; do
  "$build/bench/cpu_forward/cf_bench_cpu_forward" --dtype q4_1 --threads 1 --isa "$isa" --prompt 32 --gen 32
done
