#!/usr/bin/env python3
"""torch_mla_peer.py -- a torch peer for DeepSeek-V2-Lite's MLA decode block (absorbed form, plain torch ops).

What a user would write in torch: add + RMSNorm -> q = x Wq^T, kv = x Wkv_a^T -> RMSNorm of c_kv, YaRN RoPE (adjacent
pairs) of q_pe and k_pe -> the latent row [c_kv, k_pe] written to a contiguous cache [B, S, r + rope] -> q_lat =
W_UK^T q_nope (bmm over heads) -> scores = [q_lat, q_pe] . rows * scale, softmax in fp32 -> o_lat = p c_kv ->
o = W_UV o_lat (bmm over heads) -> out = o Wo^T. Captured in a CUDA graph of 20 calls that rotate over enough input
sets to defeat L2 (as bench/common's time_in_graph), timed with CUDA events; for B in --batches and L in --lens.

Prints one line per measurement in torch_decode_peer.py's format ("[peer   12.3s] MLA-BLOCK ...") and writes
--out/peer_mla.json after every measurement: dict(meta, bandwidth, mla_block=[...], errors, skipped).

Usage: python3 torch_mla_peer.py [--out DIR] [--budget SEC] [--lens 1024,4096,16384] [--batches 1,16]
                                 [--dtype fp16|bf16] [--no-bw]
       python3 torch_mla_peer.py --smoke     (CPU, tiny shapes: the absorbed block equals the expanded form)
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

T_START = time.time()

import torch  # noqa: E402

HIDDEN, HEADS, R, ROPE, NOPE, V = 2048, 16, 512, 64, 128, 128  # DeepSeek-V2-Lite
EPS = 1e-6
YARN = dict(theta=10000.0, factor=40.0, original=4096, beta_fast=32.0, beta_slow=1.0, mscale=0.707, mscale_all=0.707)


def log(msg):
    print(f"[peer {time.time() - T_START:6.1f}s] {msg}", flush=True)


# --------------------------------------------------------------------------- YaRN (docs/mla.md 1.3)
def yarn_mscale(factor, m):
    return 1.0 if factor <= 1.0 else 0.1 * m * math.log(factor) + 1.0


def yarn_inv_freq(dim, y):
    def corr(rot):
        return dim * math.log(y["original"] / (rot * 2 * math.pi)) / (2 * math.log(y["theta"]))
    low = max(math.floor(corr(y["beta_fast"])), 0)
    high = min(math.ceil(corr(y["beta_slow"])), dim - 1)
    span = (high - low) if high > low else 0.001
    out = []
    for i in range(dim // 2):
        orig = y["theta"] ** (-2.0 * i / dim)
        w = min(max((i - low) / span, 0.0), 1.0)
        out.append(orig * (1 - w) + orig / y["factor"] * w)
    return torch.tensor(out, dtype=torch.float64)


def softmax_scale(y):
    m = yarn_mscale(y["factor"], y["mscale_all"])
    return (NOPE + ROPE) ** -0.5 * m * m


def rope_cos_sin(pos, dim, y, device):
    mag = yarn_mscale(y["factor"], y["mscale"]) / yarn_mscale(y["factor"], y["mscale_all"])
    ang = pos * yarn_inv_freq(dim, y)
    return (ang.cos() * mag).float().to(device), (ang.sin() * mag).float().to(device)


def rope_adjacent(x, cos, sin):
    """Rotates adjacent pairs (2i, 2i+1) of the last dimension; cos/sin [dim/2] fp32."""
    xf = x.float().reshape(*x.shape[:-1], -1, 2)
    a, b = xf[..., 0], xf[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2).to(x.dtype)


def rms_norm(x, w, eps=EPS):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * w.float()).to(x.dtype)


# --------------------------------------------------------------------------- the block
class MlaBlock:
    """One V2-Lite MLA layer with random weights and a contiguous latent cache of B x S rows (S = L + 1)."""

    def __init__(self, batch, L, device, dtype, hidden=HIDDEN, heads=HEADS, seed=0):
        g = torch.Generator(device="cpu").manual_seed(seed)

        def rnd(*shape, scale):
            return ((torch.rand(*shape, generator=g) * 2 - 1) * scale).to(device=device, dtype=dtype)

        self.B, self.L, self.H, self.hidden = batch, L, heads, hidden
        a_in = 2.0 / math.sqrt(hidden)
        self.norm = rnd(hidden, scale=0.5) + 1.0
        self.w_q = rnd(heads * (NOPE + ROPE), hidden, scale=a_in)
        self.w_kv_a = rnd(R + ROPE, hidden, scale=a_in)
        self.kv_a_norm = rnd(R, scale=0.5) + 1.0
        self.w_uk = rnd(heads, NOPE, R, scale=2.0 / math.sqrt(NOPE))
        self.w_uv = rnd(heads, V, R, scale=2.0 / math.sqrt(R))
        self.w_o = rnd(hidden, heads * V, scale=2.0 / math.sqrt(heads * V))
        self.cache = rnd(batch, L + 1, R + ROPE, scale=1.0)
        self.hidden_in = rnd(batch, hidden, scale=1.0)
        self.residual = rnd(batch, hidden, scale=1.0)
        self.out = torch.empty(batch, hidden, device=device, dtype=dtype)
        self.scale = softmax_scale(YARN)
        self.cos, self.sin = rope_cos_sin(L, ROPE, YARN, device)
        self.pos = torch.full((batch,), L, device=device, dtype=torch.long)
        self.rows = torch.arange(batch, device=device)

    def bytes(self):
        w = (self.w_q.numel() + self.w_kv_a.numel() + self.w_uk.numel() + self.w_uv.numel() + self.w_o.numel()
             + self.norm.numel() + self.kv_a_norm.numel())
        acts = 4 * self.B * self.hidden  # hidden + residual read, residual_out + out written
        return (w + self.cache.numel() + acts) * self.cache.element_size()

    def __call__(self):
        B, H = self.B, self.H
        res = self.hidden_in + self.residual
        x = rms_norm(res, self.norm)
        q = (x @ self.w_q.t()).view(B, H, NOPE + ROPE)
        kv = x @ self.w_kv_a.t()
        c_kv = rms_norm(kv[:, :R], self.kv_a_norm)
        k_pe = rope_adjacent(kv[:, R:], self.cos, self.sin)
        self.cache[self.rows, self.pos] = torch.cat((c_kv, k_pe), dim=-1)
        q_lat = torch.bmm(q[:, :, :NOPE].transpose(0, 1), self.w_uk).transpose(0, 1)  # [B, H, R]
        q_full = torch.cat((q_lat, rope_adjacent(q[:, :, NOPE:], self.cos, self.sin)), dim=-1)  # [B, H, R + ROPE]
        scores = torch.matmul(q_full, self.cache.transpose(1, 2)).float() * self.scale  # [B, H, S]
        p = torch.softmax(scores, dim=-1).to(q.dtype)
        o_lat = torch.matmul(p, self.cache[:, :, :R])  # [B, H, R]
        o = torch.bmm(o_lat.transpose(0, 1), self.w_uv.transpose(1, 2)).transpose(0, 1)  # [B, H, V]
        torch.matmul(o.reshape(B, H * V), self.w_o.t(), out=self.out)
        return self.out

    def expanded(self):
        """The same step in the expanded form (per-head keys and values from c_kv), for --smoke."""
        B, H = self.B, self.H
        x = rms_norm(self.hidden_in + self.residual, self.norm)
        q = (x @ self.w_q.t()).view(B, H, NOPE + ROPE).float()
        q_pe = rope_adjacent(q[:, :, NOPE:], self.cos, self.sin)
        rows = self.cache.float()
        k_nope = torch.einsum("hnr,bsr->bhsn", self.w_uk.float(), rows[:, :, :R])
        v = torch.einsum("hvr,bsr->bhsv", self.w_uv.float(), rows[:, :, :R])
        scores = (torch.einsum("bhn,bhsn->bhs", q[:, :, :NOPE], k_nope)
                  + torch.einsum("bhr,bsr->bhs", q_pe, rows[:, :, R:])) * self.scale
        o = torch.einsum("bhs,bhsv->bhv", torch.softmax(scores, -1), v)
        return o.reshape(B, H * V) @ self.w_o.float().t()


# --------------------------------------------------------------------------- timing (GPU)
def ev():
    return torch.cuda.Event(enable_timing=True)


def time_rotating(blocks, calls=20, replays=20, warm=3):
    """us per call: a CUDA graph of `calls` calls rotating over `blocks`, replayed; median replay / calls."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for blk in blocks:
            blk()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(calls):
            blocks[i % len(blocks)]()
    for _ in range(warm):
        g.replay()
    torch.cuda.synchronize()
    ts = []
    for _ in range(replays):
        a, b = ev(), ev()
        a.record()
        g.replay()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b) * 1e3 / calls)
    del g
    return statistics.median(ts), min(ts)


def read_bandwidth():
    big = torch.empty(1 << 31, dtype=torch.float16, device="cuda").fill_(0.001)  # 4 GiB
    for _ in range(2):
        torch.sum(big, dtype=torch.float32)
    torch.cuda.synchronize()
    ts = []
    for _ in range(10):
        a, b = ev(), ev()
        a.record()
        torch.sum(big, dtype=torch.float32)
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    gbps = big.numel() * 2 / (statistics.median(ts) / 1e3) / 1e9
    del big
    torch.cuda.empty_cache()
    return gbps


# --------------------------------------------------------------------------- driver
def run(args):
    res = dict(meta=dict(device=torch.cuda.get_device_name(0), torch=torch.__version__, dtype=args.dtype,
                         shape=dict(hidden=HIDDEN, heads=HEADS, r=R, rope=ROPE, nope=NOPE, v=V)),
               bandwidth={}, mla_block=[], errors=[], skipped=[])
    out_path = os.path.join(args.out, "peer_mla.json")

    def save():
        os.makedirs(args.out, exist_ok=True)
        with open(out_path, "w") as f:
            json.dump(res, f, indent=1)

    dtype = torch.float16 if args.dtype == "fp16" else torch.bfloat16
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    read_gbps = None
    if not args.no_bw:
        read_gbps = read_bandwidth()
        res["bandwidth"]["read_sum_4GiB_GBps"] = read_gbps
        log(f"BW read (torch.sum 4 GiB fp16): {read_gbps:.0f} GB/s")
        save()
    for B in args.batches:
        for L in args.lens:
            left = T_START + args.budget - time.time()
            if left < 15:
                res["skipped"].append(f"mla B={B} L={L}: out of time ({left:.0f} s left)")
                log(f"MLA-BLOCK B={B} L={L}: skipped (out of time)")
                continue
            try:
                first = MlaBlock(B, L, "cuda", dtype, seed=0)
                n_sets = max(1, min(8, math.ceil(3 * l2 / first.bytes())))
                free = torch.cuda.mem_get_info()[0]
                n_sets = max(1, min(n_sets, int(0.5 * free // first.bytes())))
                blocks = [first] + [MlaBlock(B, L, "cuda", dtype, seed=s) for s in range(1, n_sets)]
                us, us_min = time_rotating(blocks)
                gbps = first.bytes() / (us * 1e-6) / 1e9
                row = dict(batch=B, L=L, us=us, us_min=us_min, bytes=first.bytes(), GBps=gbps, n_sets=n_sets)
                if read_gbps:
                    row["pct_read_bw"] = 100.0 * gbps / read_gbps
                res["mla_block"].append(row)
                log(f"MLA-BLOCK B={B:<3d} L={L:<6d}: {us:8.2f} us/call (graph of 20, {n_sets} sets; min {us_min:.2f}) "
                    f"-> {gbps:.0f} GB/s effective")
                del blocks, first
            except Exception as e:  # keep going with the next shape
                msg = f"mla B={B} L={L}: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
                res["errors"].append(msg)
                log("MLA-BLOCK " + msg)
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            save()
    log(f"wrote {out_path}")
    return 0 if not res["errors"] else 1


def smoke():
    torch.manual_seed(0)
    blk = MlaBlock(2, 5, "cpu", torch.float32, hidden=64, heads=3)
    absorbed = blk().clone()
    expanded = blk.expanded()  # reads the cache the absorbed call appended to
    err = (absorbed - expanded).abs().max().item()
    ok = err < 1e-4 * max(1.0, expanded.abs().max().item())
    print(f"[smoke] absorbed vs expanded MLA: max err {err:.2e} {'ok' if ok else 'FAIL'}")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="peer_out")
    ap.add_argument("--budget", type=float, default=120.0, help="wall-clock seconds, the torch import included")
    ap.add_argument("--lens", default="1024,4096,16384")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--dtype", choices=["fp16", "bf16"], default="fp16")
    ap.add_argument("--no-bw", action="store_true", help="skip the read-bandwidth measurement")
    ap.add_argument("--smoke", action="store_true", help="CPU self-check, no GPU")
    args = ap.parse_args()
    if args.smoke:
        return smoke()
    try:
        args.lens = [int(v) for v in args.lens.split(",") if v]
        args.batches = [int(v) for v in args.batches.split(",") if v]
    except ValueError:
        ap.error("--lens and --batches take comma-separated integers")
    if not args.lens or not args.batches or min(args.lens) < 1 or min(args.batches) < 1:
        ap.error("--lens and --batches need positive integers")
    if not torch.cuda.is_available():
        print("torch_mla_peer.py: no CUDA GPU visible to torch", file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
