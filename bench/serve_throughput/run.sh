#!/usr/bin/env bash
# Starts `clusterfusion serve` on the default model (--max-batch 8) on a free port, measures aggregate throughput
# with 1, 4 and 8 concurrent streams (cf_bench_serve_throughput), stops the server, and prints a log for
# bench/results/. Extra arguments go to the server (e.g. --backend cuda, --threads 2). Run on a quiet machine:
#   bench/serve_throughput/run.sh [build/cpu] [serve options] > bench/results/serve_throughput_$(date +%F).txt
set -euo pipefail
build="${1:-build/cpu}"
[ $# -gt 0 ] && shift
log="$(mktemp)"
trap 'kill "$server" 2>/dev/null || true; rm -f "$log"' EXIT
"$build/clusterfusion" serve --port 0 --max-batch 8 --ctx 2048 "$@" 2> "$log" &
server=$!
for _ in $(seq 600); do
  port="$(grep -o 'on http://127.0.0.1:[0-9]*' "$log" | grep -o '[0-9]*$' || true)"
  [ -n "$port" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$port" ] || { echo "the server did not start" >&2; cat "$log" >&2; exit 1; }
echo "# $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $(head -2 "$log" | tr '\n' ' ')"
"$build/bench/serve_throughput/cf_bench_serve_throughput" --port "$port" --streams 1,4,8 --tokens 64 --rounds 2
kill -TERM "$server"
wait "$server"
