#!/usr/bin/env python3
"""Interleaved comparison of the cpu backend with llama.cpp's llama-bench (driven by bench/cpu_vs_llamacpp.sh).

For every model and thread count, each round runs llama-bench and our cf_bench_cpu_model (default int16 arithmetic, fp32,
and int8 + F16 KV) one after the other, in an order that alternates between rounds; the table shows the median over the
rounds of each program's mean tokens/s, and the ratios ours / llama.cpp. The generation rows also show the
memory-bandwidth floor: the tokens/s at which the weights of one token (bytes) take as long to read as a copy at the
measured copy bandwidth. With --stress N, N busy processes share the cores during every measurement (a concurrent
build, roughly).
"""
import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time


LEVELS = set()  # our kernel levels seen (the best this CPU has)


def run(cmd, timeout):
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        sys.exit(f"compare.py: {' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout


def llama_bench(binary, model, threads, prompt, gen, reps, timeout):
    out = run([binary, "-m", model, "-t", str(threads), "-p", str(prompt), "-n", str(gen), "-r", str(reps),
               "-o", "jsonl"], timeout)
    rates = {}
    for line in out.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        test = f"pp{entry['n_prompt']}" if entry["n_prompt"] > 0 else f"tg{entry['n_gen']}"
        rates[test] = float(entry["avg_ts"])
    return rates


def ours(binary, model, threads, prompt, gen, reps, extra, timeout):
    out = run([binary, "--model", model, "--threads", str(threads), "--prompt", str(prompt), "--gen", str(gen),
               "--reps", str(reps)] + extra, timeout)
    rates, weight_bytes = {}, 0
    for line in out.splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        if "test" in fields:
            rates[fields["test"]] = float(fields["tok_s"])
            weight_bytes = int(fields["weight_bytes_per_token"])
            LEVELS.add(fields.get("isa", "?"))
    return rates, weight_bytes


def bandwidth(binary, model, threads, timeout):
    out = run([binary, "--model", model, "--threads", str(threads), "--prompt", "0", "--gen", "0", "--bandwidth"],
              timeout)
    for line in out.splitlines():
        if line.startswith("copy_bandwidth_gb_s="):
            return float(line.split()[0].split("=")[1]) * 1e9
    sys.exit("compare.py: no bandwidth line from " + binary)


def load_average():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def start_stress(n):
    return [subprocess.Popen(["sh", "-c", "while :; do :; done"], start_new_session=True) for _ in range(n)]


def stop_stress(procs):
    for p in procs:
        os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        p.wait()


# Our configurations, each run beside llama.cpp: the default, the exact fp32 path, llama.cpp's own rounding.
VARIANTS = [("ours", []), ("ours-f32", ["--arithmetic", "f32"]), ("ours-int8", ["--int8", "--kv-f16"])]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-bench", required=True)
    parser.add_argument("--ours", required=True)
    parser.add_argument("--model", action="append", required=True, help="NAME=PATH, in table order")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--gen", type=int, default=64)
    parser.add_argument("--stress", type=int, default=0)
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    threads_list = [int(t) for t in args.threads.split(",") if t]
    models = [m.split("=", 1) for m in args.model]
    pp, tg = f"pp{args.prompt}", f"tg{args.gen}"
    variants = VARIANTS

    print(f"# cpu backend vs llama.cpp llama-bench, {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    print(f"# {cpu_model()}, {os.cpu_count()} cpus, load average before: {load_average()}")
    print(f"# rounds {args.rounds} (interleaved, order alternating), {args.reps} timed repetitions per program run, "
          f"median of the rounds' means; stress processes: {args.stress}")
    print("# ours = the command line's defaults (int16 activation blocks, F32 KV); ours-f32 = --arithmetic f32 (fp32 "
          "activations); "
          "ours-int8 = --int8 --kv-f16 (int8 activation blocks, F16 KV, as llama.cpp); llama.cpp = llama-bench defaults "
          "(F16 KV)")
    sys.stdout.flush()
    stress = start_stress(args.stress)
    results = []
    try:
        copy_bw = {t: bandwidth(args.ours, models[0][1], t, args.timeout) for t in threads_list}
        for name, path in models:
            for threads in threads_list:
                samples = {"llama.cpp": {pp: [], tg: []}}
                for v, _ in variants:
                    samples[v] = {pp: [], tg: []}
                weight_bytes = 0
                programs = [("llama.cpp", None)] + variants
                for r in range(args.rounds):
                    for label, extra in (programs if r % 2 == 0 else list(reversed(programs))):
                        if label == "llama.cpp":
                            rates = llama_bench(args.llama_bench, path, threads, args.prompt, args.gen, args.reps,
                                                args.timeout)
                        else:
                            rates, weight_bytes = ours(args.ours, path, threads, args.prompt, args.gen, args.reps,
                                                       extra, args.timeout)
                        for test in (pp, tg):
                            samples[label][test].append(rates[test])
                for test in (pp, tg):
                    row = {"model": name, "test": test, "threads": threads}
                    for label in samples:
                        row[label] = statistics.median(samples[label][test])
                    row["floor"] = copy_bw[threads] / weight_bytes if test == tg and weight_bytes else None
                    row["weight_mb"] = weight_bytes / 1e6
                    results.append(row)
                    print_row(row, header=len(results) == 1)
    finally:
        stop_stress(stress)
    print(f"# copy bandwidth (GB/s, read + write): " + ", ".join(f"{t} thread(s) {copy_bw[t] / 1e9:.1f}"
                                                                 for t in threads_list))
    print(f"# our kernel level: {', '.join(sorted(LEVELS))}; load average after: {load_average()}")
    ratios = [r["ours"] / r["llama.cpp"] for r in results]
    print(f"# ours / llama.cpp: min {min(ratios):.2f}, median {statistics.median(ratios):.2f}, "
          f"max {max(ratios):.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"copy_bandwidth": copy_bw, "rows": results}, f, indent=1)


def print_row(row, header):
    if header:
        cells = "".join(f" {v} t/s | {v.replace('ours-', '')} / llama.cpp |" for v, _ in VARIANTS)
        print(f"| model | test | threads | llama.cpp t/s |{cells} bandwidth floor t/s |")
        print("|---|---|---:|---:|" + "---:|---:|" * len(VARIANTS) + "---:|")
    floor = f"{row['floor']:.0f}" if row["floor"] else ""
    cells = "".join(f" {row[v]:.1f} | {row[v] / row['llama.cpp']:.2f} |" for v, _ in VARIANTS)
    print(f"| {row['model']} | {row['test']} | {row['threads']} | {row['llama.cpp']:.1f} |{cells} {floor} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
