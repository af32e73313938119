#!/usr/bin/env python3
"""Time per llama_decoder_layer / llama_ffn_layer call from Python on a GPU: the host time of a call (argument
checks, plan lookup and launch from Python), the GPU time per call of back-to-back eager calls, and of the same
calls replayed from a CUDA graph (kernels only). Llama-2-7B layer shapes (hidden 4096, 32 heads of 128, ffn 11008),
fp16, batch 1, a token pool of 1024 positions.

    python examples/decoder_layer_timing.py [--calls 200] [--kv 1024]
"""
from __future__ import annotations

import argparse
import sys
import time

try:
    import torch
except ImportError:
    print("decoder_layer_timing.py: skipped: PyTorch is not installed")
    sys.exit(0)

import clusterfusion as cf


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--kv", type=int, default=1024, help="cached positions of the sequence [1024]")
    args = p.parse_args()
    if not (torch.cuda.is_available() and cf.cuda_available()):
        print("decoder_layer_timing.py: skipped: needs a CUDA GPU and the CUDA module")
        return 0
    dev, dt = "cuda", torch.float16
    hidden, heads, hd, ffn = 4096, 32, 128, 11008
    g = torch.Generator(device=dev).manual_seed(0)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, device=dev) * scale).to(dt)

    x, res = rnd(1, hidden), rnd(1, hidden)
    out, res_out = torch.empty_like(x), torch.empty_like(x)
    qkv, o = rnd(3 * hidden, hidden, scale=hidden ** -0.5), rnd(hidden, hidden, scale=hidden ** -0.5)
    gate_up, down = rnd(2 * ffn, hidden, scale=hidden ** -0.5), rnd(hidden, ffn, scale=ffn ** -0.5)
    norm = torch.ones(hidden, dtype=dt, device=dev)
    k_pool, v_pool = rnd(args.kv + 1, heads, hd), rnd(args.kv + 1, heads, hd)
    indptr = torch.tensor([0, args.kv], dtype=torch.int32, device=dev)
    indices = torch.arange(args.kv, dtype=torch.int32, device=dev)
    positions = torch.tensor([args.kv - 1], dtype=torch.int64, device=dev)
    pairs = torch.arange(hd // 2, dtype=torch.float64)
    ang = torch.arange(args.kv + 1, dtype=torch.float64)[:, None] * 10000.0 ** (-2 * pairs / hd)[None, :]
    cos_sin = torch.cat([ang.cos(), ang.sin()], 1).float().to(dev)

    calls = {
        "llama_decoder_layer": lambda: cf.llama_decoder_layer(out, res_out, x, res, qkv, o, indptr, indices, k_pool,
                                                              v_pool, 0, norm, 1e-5, positions, cos_sin),
        "llama_ffn_layer": lambda: cf.llama_ffn_layer(out, res_out, x, res, gate_up, down, norm, 1e-5),
    }
    # The same call straight into the extension with the tensors themselves (nanobind imports each through
    # Tensor.__dlpack__): what the package's torch fast path (torch._C._to_dlpack) saves.
    raw_stream = torch.cuda.current_stream().cuda_stream
    calls["  (extension, __dlpack__)"] = lambda: cf._cuda_ext().llama_decoder_layer(
        out, res_out, x, res, qkv, o, indptr, indices, k_pool, v_pool, 0, norm, 1e-5, positions, cos_sin, None, None,
        "neox", 10000.0, None, "auto", 0, 0, raw_stream, False)
    print(f"{torch.cuda.get_device_name()}, Llama-2-7B layer, fp16, batch 1, KV {args.kv}, {args.calls} calls")
    for name, call in calls.items():
        s = torch.cuda.Stream()
        with torch.cuda.stream(s):
            for _ in range(3):
                call()  # plan built, warm
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        host_start = time.perf_counter()
        for _ in range(args.calls):
            call()
        host_us = 1e6 * (time.perf_counter() - host_start) / args.calls
        end.record()
        torch.cuda.synchronize()
        eager_us = 1e3 * start.elapsed_time(end) / args.calls
        if name.startswith("  ("):  # fixed stream: not capturable by torch.cuda.graph's side stream
            print(f"  {name:26s} host {host_us:6.1f} us/call")
            continue
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(args.calls):
                call()
        graph.replay()
        torch.cuda.synchronize()
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        graph_us = 1e3 * start.elapsed_time(end) / args.calls
        print(f"  {name:26s} host {host_us:6.1f} us/call (Python + checks + launch)   GPU: eager {eager_us:6.1f} "
              f"us/call, CUDA-graph replay {graph_us:6.1f} us/call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
