#!/usr/bin/env bash
# GPU determinism check, meant as a step of bench/gpu_first.sh (docs/reliability.md): for every GPU backend of the
# build, the same `clusterfusion generate` command (greedy, and sampled with a seed) gives byte-identical output on
# repeated runs. Backends that are not built, or that cannot run here, are SKIPped. Prints one line per check:
#
#   determinism cuda-unfused greedy: PASS (3 identical runs, 64 tokens, sha256 1a2b3c4d5e6f)
#
# Exit status 1 when any check FAILs (the differing outputs are printed), else 0.
# Environment: CF_CLI (default build/default/clusterfusion), CF_DET_MODEL (default: the CLI's default model),
# CF_DET_BACKENDS (default "cuda cuda-unfused"; "cpu" dry-runs the script without a GPU), CF_DET_RUNS (3),
# CF_DET_TOKENS (64).
set -u -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cli="${CF_CLI:-build/default/clusterfusion}"
backends="${CF_DET_BACKENDS:-cuda cuda-unfused}"
runs="${CF_DET_RUNS:-3}"
tokens="${CF_DET_TOKENS:-64}"
model=()
[[ -n "${CF_DET_MODEL:-}" ]] && model=(-m "$CF_DET_MODEL")
prompt="Explain in two sentences why the sky is blue."

if [[ ! -x "$cli" ]]; then
  echo "determinism: SKIP (no $cli; build the default preset first)"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
status=0
for backend in $backends; do
  if ! "$cli" generate "${model[@]}" --backend "$backend" -p hi -n 1 -q >"$tmp/probe.out" 2>"$tmp/probe.err"; then
    echo "determinism $backend: SKIP ($(tail -1 "$tmp/probe.err"))"
    continue
  fi
  for mode in greedy sampled; do
    if [[ $mode == greedy ]]; then flags=(--temp 0); else flags=(--temp 0.8 --top-p 0.95 --min-p 0.02 --seed 7); fi
    for ((i = 1; i <= runs; ++i)); do
      "$cli" generate "${model[@]}" --backend "$backend" -p "$prompt" -n "$tokens" "${flags[@]}" -q \
        >"$tmp/$backend.$mode.$i" 2>"$tmp/$backend.$mode.$i.err" || {
        echo "determinism $backend $mode: FAIL (run $i exited with an error: $(tail -1 "$tmp/$backend.$mode.$i.err"))"
        status=1
        continue 2
      }
    done
    first="$tmp/$backend.$mode.1"
    same=1
    for ((i = 2; i <= runs; ++i)); do
      if ! cmp -s "$first" "$tmp/$backend.$mode.$i"; then
        same=0
        echo "determinism $backend $mode: FAIL (run $i differs from run 1)"
        diff <(fold -w 80 "$first") <(fold -w 80 "$tmp/$backend.$mode.$i") | head -20
      fi
    done
    if [[ $same == 1 ]]; then
      echo "determinism $backend $mode: PASS ($runs identical runs, $tokens tokens, sha256 $(sha256sum <"$first" | cut -c1-12))"
    else
      status=1
    fi
  done
done
exit $status
