#!/usr/bin/env python3
"""Plots bench/e2e results (cf_bench_e2e --json) as a PNG.

Top row: batch-1 TPOT (ms/token) against context for each model, cuda vs cuda-unfused, with the bandwidth floor
measured in the same run and, for Llama-2-7B, issue 7's goal and the torch peer (ANCHORS.md). Bottom row: decode
throughput (tokens/s) against batch at the shortest context.

usage: python3 bench/e2e/plot_e2e.py e2e.json [--out e2e.png]   (needs matplotlib)
"""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("json_path")
    ap.add_argument("--out", default=None, help="PNG path (default: the JSON path with .png)")
    args = ap.parse_args()
    out = args.out or (args.json_path.rsplit(".", 1)[0] + ".png")
    with open(args.json_path) as f:
        data = json.load(f)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_e2e.py: matplotlib is not installed; no plot", file=sys.stderr)
        return 3

    rows = [r for r in data.get("rows", []) if r.get("status") == "ok"]
    models = sorted({r["model"] for r in rows})
    if not models:
        print("plot_e2e.py: no successful rows", file=sys.stderr)
        return 1
    styles = {"cuda": ("tab:red", "o"), "cuda-unfused": ("tab:blue", "s")}
    fig, axes = plt.subplots(2, len(models), figsize=(6 * len(models), 8), squeeze=False)
    device = data.get("device", {}).get("name", "?")
    read_bw = data.get("bandwidth", {}).get("read_gbps", 0)
    for col, model in enumerate(models):
        ax = axes[0][col]
        b1 = [r for r in rows if r["model"] == model and r["batch"] == 1]
        for impl, (color, marker) in styles.items():
            pts = sorted((r["ctx"], r["ms_median"]) for r in b1 if r["impl"] == impl)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color, label=impl)
        floor = sorted({(r["ctx"], r["floor_ms"]) for r in b1})
        if floor:
            ax.plot([p[0] for p in floor], [p[1] for p in floor], linestyle=":", color="gray",
                    label=f"bytes / read bandwidth ({read_bw:.0f} GB/s)")
        anchors = [a for a in data.get("anchors", []) if a["model"] == model and a["batch"] == 1]
        if anchors:
            xs = [a["ctx"] for a in anchors]
            ax.plot(xs, [a["goal_ms"] for a in anchors], linestyle="--", color="black", label="goal (issue 7)")
            ax.plot(xs, [a["torch_compile_graph_ms"] for a in anchors], linestyle="--", color="tab:green",
                    label="torch.compile + graph (ANCHORS.md)")
            ax.plot(xs, [a["torch_graph_ms"] for a in anchors], linestyle="--", color="tab:olive",
                    label="torch graph (ANCHORS.md)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context (tokens)")
        ax.set_ylabel("ms per token")
        ax.set_title(f"{model}, batch 1")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)

        ax = axes[1][col]
        model_rows = [r for r in rows if r["model"] == model]
        if model_rows:
            ctx = min(r["ctx"] for r in model_rows)
            for impl, (color, marker) in styles.items():
                pts = sorted((r["batch"], r["tok_per_s"]) for r in model_rows if r["impl"] == impl and r["ctx"] == ctx)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color, label=impl)
            ax.set_title(f"{model}, context {ctx}")
        ax.set_xlabel("batch (sequences decoded in lockstep)")
        ax.set_ylabel("tokens / s")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"decode TPOT, random fp16 weights, {device}, git {data.get('git_sha', '?')}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"plot_e2e.py: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
