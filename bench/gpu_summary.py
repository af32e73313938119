#!/usr/bin/env python3
"""The summary JSON of one GPU run of bench/gpu_first.sh (docs/gpu-runs.md), rebuilt after every step, so that a
run killed at any point leaves the summary of what it finished.

    python3 bench/gpu_summary.py --work DIR --out DIR --name NAME [--print]

Reads what the steps left in --work (steps.tsv, ctest_junit.xml, peer_attn/peer.json, peer_tpot/peer.json, the
benchmark JSON of the later steps) and in --out (attention.json, e2e.json, deepseek.json); writes --out/NAME (the summary) and
--out/peer.json (the torch peer's stages merged). Fixed schema: every key is present, null where nothing was
measured. Python 3 standard library only (the GPU machine's python3; this machine's for the dry run).
"""
import argparse
import json
import os
import sys
import xml.etree.ElementTree as ET

SCHEMA = "clusterfusion-gpu-summary/1"
MODELS = ("llama2-7b", "llama3-8b")
BATCHES = (1, 4, 16)
KVS = (1024, 4096, 16384)
SANITIZERS = ("memcheck", "racecheck", "synccheck")
# cf_bench_deepseek_blocks as the deepseek step runs it (DeepSeek-V2-Lite, fp16): MLA at batch x KV, MoE at batch.
DEEPSEEK_BATCHES = (1, 16)
DEEPSEEK_KVS = (1024, 4096, 16384)


def grid(leaf):
    """{model: {bN: {kv: leaf()}}} with every key of the schema."""
    return {m: {f"b{b}": {str(kv): leaf() for kv in KVS} for b in BATCHES} for m in MODELS}


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def put(table, model, batch, kv, value, key=None):
    """table[model][bN][kv] (or its [key]) = value, for the schema's keys only."""
    if model not in MODELS or batch not in BATCHES or kv not in KVS:
        return
    cell = table[model][f"b{batch}"]
    if key is None:
        cell[str(kv)] = value
    else:
        cell[str(kv)][key] = value


def read_steps(path):
    steps = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 3:
                    steps.append(dict(name=parts[0], status=parts[1], seconds=int(parts[2] or 0),
                                      note=parts[3] if len(parts) > 3 else ""))
    except OSError:
        pass
    return steps


def attention_rows(doc, summary):
    """Rows of cf_bench_decoder_attention (fp16, page 16): µs per call and the fused plans."""
    if not doc:
        return
    bw = doc.get("bandwidth", {})
    if bw.get("read_gbps") and summary["read_gb_s"] is None:
        summary["read_gb_s"] = round(bw["read_gbps"], 1)
    for r in doc.get("rows", []):
        if r.get("dtype") != "fp16" or r.get("status") != "ok":
            continue
        impl = {"fused": "ours", "cuda-unfused": "cuda-unfused"}.get(r.get("impl"))
        if impl is None:
            continue
        m, b, kv = r.get("model"), r.get("batch"), r.get("kv_len")
        put(summary["attention_us"], m, b, kv, round(r["us_median"], 2), impl)
        plan = r.get("plan")
        if impl == "ours" and plan and m in MODELS and b in BATCHES:
            summary["plans"]["attention"][m][f"b{b}"] = {
                k: plan.get(k) for k in ("cluster_size", "clusters", "max_active_clusters", "waves",
                                         "occupancy_queried", "stages")}


def e2e_rows(doc, summary):
    if not doc:
        return
    for r in doc.get("rows", []):
        if r.get("status") != "ok":
            continue
        impl = {"cuda": "ours", "cuda-unfused": "cuda-unfused"}.get(r.get("impl"))
        if impl:
            put(summary["tpot_ms"], r.get("model"), r.get("batch"), r.get("ctx"), round(r["ms_median"], 4), impl)
        if impl == "ours" and r.get("model") in MODELS and r.get("batch") in BATCHES:
            summary["plans"]["decode_step"][r["model"]][f"b{r['batch']}"] = r.get("launch")


def ffn_rows(doc, summary):
    if not doc:
        return
    for r in doc.get("rows", []):
        plan = r.get("plan")
        if r.get("impl") != "fused" or not plan or r.get("model") not in MODELS or r.get("batch") not in BATCHES:
            continue
        block = "ffn" if r.get("block") == "ffn" else "lm_head"
        summary["plans"][block][r["model"]][f"b{r['batch']}"] = {
            k: plan.get(k) for k in ("cluster_size", "clusters", "max_active_clusters", "occupancy_queried",
                                     "stages")}


def deepseek_grid():
    """{mla: {bN: {kv: {ours, cuda-unfused}}}, moe: {bN: {ours, cuda-unfused}}} with every key of the schema."""
    impls = lambda: {"ours": None, "cuda-unfused": None}  # noqa: E731
    return dict(mla={f"b{b}": {str(kv): impls() for kv in DEEPSEEK_KVS} for b in DEEPSEEK_BATCHES},
                moe={f"b{b}": impls() for b in DEEPSEEK_BATCHES})


def deepseek_rows(doc, summary):
    """Rows of cf_bench_deepseek_blocks (fp16): µs per block call, fused plans ("ours") and cuda-unfused."""
    if not isinstance(doc, dict):
        return
    for r in doc.get("rows", []):
        if not isinstance(r, dict) or r.get("dtype") != "fp16" or r.get("status") != "ok":
            continue
        impl = {"fused": "ours", "cuda-unfused": "cuda-unfused"}.get(r.get("impl"))
        block, b, us = r.get("block"), r.get("batch"), r.get("us_median")
        if impl is None or b not in DEEPSEEK_BATCHES or not isinstance(us, (int, float)):
            continue
        if block == "moe":
            summary["deepseek_us"]["moe"][f"b{b}"][impl] = round(us, 2)
        elif block == "mla" and r.get("kv_len") in DEEPSEEK_KVS:
            summary["deepseek_us"]["mla"][f"b{b}"][str(r["kv_len"])][impl] = round(us, 2)


def peer(work, out, summary):
    """The torch peer's two runs (bandwidth + attention block, decode TPOT): merged into out/peer.json."""
    merged = dict(meta={}, bandwidth={}, attn_block=[], tpot=[], errors=[], skipped=[])
    for sub in ("peer_attn", "peer_tpot", "peer_rest"):
        doc = load(os.path.join(work, sub, "peer.json"))
        if not doc:
            continue
        merged["meta"] = merged["meta"] or doc.get("meta", {})
        merged["bandwidth"] = merged["bandwidth"] or doc.get("bandwidth", {})
        for key in ("attn_block", "tpot", "errors", "skipped"):
            merged[key] += doc.get(key, [])
    p = summary["peer"]
    if merged["bandwidth"].get("read_sum_4GiB_GBps"):
        p["read_gb_s"] = round(merged["bandwidth"]["read_sum_4GiB_GBps"], 1)
    best = {}  # Llama-2-7B batch 1: the fastest SDPA backend and cache layout that ran (what a user would pick)
    for r in merged["attn_block"]:
        if r.get("us") and (r["L"] not in best or r["us"] < best[r["L"]]):
            best[r["L"]] = r["us"]
    for L, us in best.items():
        put(p["attention_us"], "llama2-7b", 1, L, round(us, 2))
    for r in merged["tpot"]:  # batch 1 (torch_batch_peer.py would give the batched ones)
        put(p["tpot_ms"], r.get("model"), 1, r.get("L"), round(r["graph_ms_median"], 4))
    p["errors"] = merged["errors"][:20]
    if any(merged[k] for k in ("bandwidth", "attn_block", "tpot")):
        with open(os.path.join(out, "peer.json"), "w") as f:
            json.dump(merged, f, indent=1)


def tests(work, summary):
    t = summary["tests"]
    junit = os.path.join(work, "ctest_junit.xml")
    if not os.path.exists(junit):
        return
    try:
        root = ET.parse(junit).getroot()
    except ET.ParseError:
        return
    cases = root.iter("testcase")
    passed = failed = skipped = 0
    failed_names = []
    for c in cases:
        status = c.get("status", "")
        if c.find("failure") is not None or status == "fail":
            failed += 1
            failed_names.append(c.get("name"))
        elif c.find("skipped") is not None or status in ("notrun", "disabled"):
            skipped += 1
        else:
            passed += 1
    t.update(passed=passed, failed=failed, skipped=skipped, failed_names=failed_names[:50])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--print", action="store_true", help="print the key numbers")
    args = ap.parse_args()
    info = load(os.path.join(args.work, "run.json")) or {}
    steps = read_steps(os.path.join(args.work, "steps.tsv"))
    summary = dict(
        schema=SCHEMA,
        date=info.get("date"), sha=info.get("sha"), device=info.get("device"), device_name=info.get("device_name"),
        budget_s=info.get("budget_s"),
        fused=dict(enabled=info.get("fused", True), reason=info.get("fused_reason")),
        attention_us=grid(lambda: {"ours": None, "cuda-unfused": None}),
        tpot_ms=grid(lambda: {"ours": None, "cuda-unfused": None}),
        deepseek_us=deepseek_grid(),
        peer=dict(attention_us=grid(lambda: None), tpot_ms=grid(lambda: None), read_gb_s=None, errors=[]),
        read_gb_s=None,
        tests=dict(passed=None, failed=None, skipped=None, failed_names=[]),
        sanitizers={tool: None for tool in SANITIZERS},
        # per model and batch (the KV length does not change a plan)
        plans={kind: {m: {f"b{b}": None for b in BATCHES} for m in MODELS}
               for kind in ("attention", "ffn", "lm_head", "decode_step")},
        steps=steps,
    )
    attention_rows(load(os.path.join(args.out, "attention.json")), summary)
    for rest in ("attention_rest_llama3.json", "attention_rest_b4.json"):
        attention_rows(load(os.path.join(args.work, rest)), summary)
    e2e_rows(load(os.path.join(args.out, "e2e.json")), summary)
    e2e_rows(load(os.path.join(args.work, "e2e_rest.json")), summary)
    ffn_rows(load(os.path.join(args.work, "ffn.json")), summary)
    deepseek_rows(load(os.path.join(args.out, "deepseek.json")), summary)
    peer(args.work, args.out, summary)
    tests(args.work, summary)
    for s in steps:  # clean | errors found | <status>: <why> (did not run, timeout, ...)
        if s["name"] in SANITIZERS:
            if s["status"] == "ok":
                summary["sanitizers"][s["name"]] = "clean"
            elif s["status"] == "failed" and s["note"].startswith("exit 99"):
                summary["sanitizers"][s["name"]] = "errors found"
            else:
                summary["sanitizers"][s["name"]] = s["status"] + (f": {s['note']}" if s["note"] else "")
    path = os.path.join(args.out, args.name)
    with open(path + ".tmp", "w") as f:
        json.dump(summary, f, indent=1)
    os.replace(path + ".tmp", path)
    if args.print:
        print_summary(summary)
    return 0


def print_summary(s):
    print(f"summary {s['date']} {s['sha']} {s['device']} ({s['device_name']}); fused "
          f"{'on' if s['fused']['enabled'] else 'OFF: ' + str(s['fused']['reason'])}")
    print(f"read bandwidth: ours {s['read_gb_s']} GB/s, peer {s['peer']['read_gb_s']} GB/s")
    fmt = lambda v: "-" if v is None else f"{v:g}"  # noqa: E731

    def table(title, ours, peer, plan_of=None):
        print(f"{title:22s} {'ours':>9s} {'unfused':>9s} {'peer':>9s}" + ("   plan (cluster x max active, waves)"
                                                                       if plan_of else ""))
        for m in MODELS:
            for b in BATCHES:
                for kv in KVS:
                    a, pr = ours[m][f"b{b}"][str(kv)], peer[m][f"b{b}"][str(kv)]
                    if a["ours"] is None and a["cuda-unfused"] is None and pr is None:
                        continue
                    plan = (plan_of[m][f"b{b}"] or {}) if plan_of else {}
                    p = f"   {plan.get('cluster_size')} x {plan.get('max_active_clusters')}, {plan.get('waves')}" \
                        if plan else ""
                    print(f"{m} b{b} kv{kv:<6d}  {fmt(a['ours']):>9s} {fmt(a['cuda-unfused']):>9s} {fmt(pr):>9s}{p}")

    table("attention us", s["attention_us"], s["peer"]["attention_us"], s["plans"]["attention"])
    table("TPOT ms", s["tpot_ms"], s["peer"]["tpot_ms"])
    ds = s["deepseek_us"]
    ds_rows = [(f"mla b{b[1:]} kv{kv}", v) for b, kvs in ds["mla"].items() for kv, v in kvs.items()]
    ds_rows += [(f"moe {b}", v) for b, v in ds["moe"].items()]
    ds_rows = [(label, v) for label, v in ds_rows if v["ours"] is not None or v["cuda-unfused"] is not None]
    if ds_rows:
        print(f"{'DeepSeek-V2-Lite us':22s} {'ours':>9s} {'unfused':>9s}")
        for label, v in ds_rows:
            print(f"{label:22s} {fmt(v['ours']):>9s} {fmt(v['cuda-unfused']):>9s}")
    t = s["tests"]
    print(f"GPU tests: {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped"
          + (f" ({', '.join(t['failed_names'][:8])})" if t["failed_names"] else ""))
    print("sanitizers: " + ", ".join(f"{k} {v}" for k, v in s["sanitizers"].items()))
    print("steps: " + ", ".join(f"{x['name']} {x['status']}" for x in s["steps"]))


if __name__ == "__main__":
    sys.exit(main())
