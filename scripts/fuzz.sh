#!/usr/bin/env bash
# Builds the libFuzzer targets (preset `fuzz`: clang, -fsanitize=fuzzer,address,undefined) and runs them one after
# another on one core, each for a given time or number of executions. docs/reliability.md explains the targets.
#
#   scripts/fuzz.sh [--time SECONDS] [--runs N] [--no-build] [TARGET...]   run TARGETs (default: all); each stops
#                                                   after SECONDS (default 600) or N executions, whichever comes first
#   scripts/fuzz.sh --list                                                 list the targets
#   scripts/fuzz.sh --keep TARGET FILE NAME                                copy a crashing input into the regressions
#
# Corpora grow under build/fuzz/corpus/<target> (seeded by cf_fuzz_seeds, plus every recorded regression input);
# crashing inputs land in tests/fuzz/artifacts/<target>/ (git-ignored); logs in build/fuzz/logs/<target>.log.
# The summary line per target gives executions, exec/s, corpus size and findings. Exit status: 1 when anything
# crashed, timed out, ran out of memory or broke a property.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Largest input per target: a little above the biggest seed (bigger inputs only slow the search down).
declare -A max_len=([gguf]=65536 [safetensors]=8192 [hf_config]=4096 [tokenizer_json]=65536 [sentencepiece]=16384
                    [tokenize]=4096 [json]=8192 [chat_template]=8192)

seconds=600
runs=
build=1
list=0
targets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --time) seconds="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --list) list=1; shift ;;
    --keep)
      [[ $# -eq 4 ]] || { echo "usage: scripts/fuzz.sh --keep TARGET FILE NAME" >&2; exit 2; }
      mkdir -p "tests/fuzz/regressions/$2"
      cp "$3" "tests/fuzz/regressions/$2/$4"
      echo "kept $3 as tests/fuzz/regressions/$2/$4"
      exit 0 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

bin=build/fuzz/tests/fuzz
if [[ $build == 1 ]]; then
  cmake --preset fuzz >/dev/null
  cmake --build --preset fuzz --target cf_fuzz_all -j 1
fi
if [[ $list == 1 ]]; then "$bin/cf_fuzz_seeds" --list; exit 0; fi
mapfile -t targets_all < <("$bin/cf_fuzz_seeds" --list | awk '{print $1}')
[[ ${#targets[@]} -gt 0 ]] || targets=("${targets_all[@]}")
seeds=build/fuzz/seeds
"$bin/cf_fuzz_seeds" "$seeds" >/dev/null
mkdir -p build/fuzz/logs

status=0
for t in "${targets[@]}"; do
  [[ -x "$bin/cf_fuzz_$t" ]] || { echo "no fuzz target '$t' (scripts/fuzz.sh --list)" >&2; exit 2; }
  corpus="build/fuzz/corpus/$t"
  artifacts="tests/fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  [[ -d "$seeds/$t" ]] && cp -n "$seeds/$t"/* "$corpus"/ 2>/dev/null || true
  if [[ -d "tests/fuzz/regressions/$t" ]]; then
    find "tests/fuzz/regressions/$t" -type f ! -name README.md -exec cp -n {} "$corpus"/ \;
  fi
  dict=()
  [[ -f "tests/fuzz/dicts/$t.dict" ]] && dict=("-dict=tests/fuzz/dicts/$t.dict")
  budget=("-max_total_time=$seconds")
  [[ -n $runs ]] && budget+=("-runs=$runs")
  before=$(find "$artifacts" -type f | wc -l)
  log="build/fuzz/logs/$t.log"
  # -malloc_limit_mb: no single allocation may exceed 256 MB for inputs of at most 64 KB (memory stays proportional
  # to the input); -rss_limit_mb catches slow growth; -timeout: any input taking 10 s is a hang.
  set +e
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$bin/cf_fuzz_$t" "$corpus" "${dict[@]}" "${budget[@]}" -max_len="${max_len[$t]:-65536}" -timeout=10 \
    -rss_limit_mb=2048 -malloc_limit_mb=256 -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  units=$(find "$corpus" -type f | wc -l)
  after=$(find "$artifacts" -type f | wc -l)
  found=$((after - before))
  printf '%-15s executions %-10s exec/s %-7s corpus %-6s new findings %s%s\n' "$t" "$execs" "$speed" "$units" \
    "$found" "$([[ $rc != 0 ]] && echo " (exit $rc, see $log)")"
  if [[ $rc != 0 || $found != 0 ]]; then status=1; fi
done
exit $status
