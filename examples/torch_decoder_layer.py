#!/usr/bin/env python3
"""A tiny Llama decoded with clusterfusion's fused blocks from PyTorch, checked against plain torch math.

The decode loop is SGLang-style, as the seed's users call it: a token pool per layer (page size 1), a FlashInfer
page table (paged_kv_indptr / paged_kv_indices) rebuilt every step, two sequences decoded in lockstep, the residual
stream carried between blocks:

    for each layer:
        llama_decoder_layer(hidden, residual, hidden, residual, qkv, o, indptr, indices, k_pools, v_pools, layer, ...)
        llama_ffn_layer(hidden, residual, hidden, residual, gate_up, down, ffn_norm, eps)
    rms_norm(x, hidden, final_norm, eps, residual=residual);  logits = x @ lm_head.T

On a GPU the tensors are CUDA tensors (the fused cluster kernels; the KV pools passed as the seed's uint64 tables
of per-layer pointers); without one they are CPU tensors (clusterfusion's CPU reference, or --backend emu for the
fused kernels on the CPU emulator). Every step's logits are compared with the same model written in plain torch
(fp32 math on the same fp16 weights, its own KV cache), teacher-forced on the same tokens.

    python examples/torch_decoder_layer.py [--steps 12] [--layers 2] [--backend auto|reference|emu] [--cpu]
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time

try:
    import torch
except ImportError:
    print("torch_decoder_layer.py: skipped: PyTorch is not installed (pip install torch); clusterfusion itself "
          "works without it (numpy on the CPU, cupy on the GPU)")
    sys.exit(0)

import clusterfusion as cf

# A small Llama with GQA (4 query heads over 2 KV heads), shapes the fused kernels take.
HIDDEN, N_HEADS, N_KV_HEADS, HEAD_DIM, FFN_HIDDEN, VOCAB = 256, 4, 2, 64, 512, 1000
EPS, THETA = 1e-5, 10000.0


def make_weights(layers: int, device, dtype=torch.float16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(dtype).to(device)

    q_dim, kv_dim = N_HEADS * HEAD_DIM, N_KV_HEADS * HEAD_DIM
    w = {"embed": rnd(VOCAB, HIDDEN), "final_norm": (1 + 0.1 * torch.randn(HIDDEN, generator=g)).to(dtype).to(device),
         "lm_head": rnd(VOCAB, HIDDEN, scale=HIDDEN ** -0.5), "layers": []}
    for _ in range(layers):
        w["layers"].append({
            "attn_norm": (1 + 0.1 * torch.randn(HIDDEN, generator=g)).to(dtype).to(device),
            "qkv": rnd(q_dim + 2 * kv_dim, HIDDEN, scale=HIDDEN ** -0.5),
            "o": rnd(HIDDEN, q_dim, scale=q_dim ** -0.5),
            "ffn_norm": (1 + 0.1 * torch.randn(HIDDEN, generator=g)).to(dtype).to(device),
            "gate_up": rnd(2 * FFN_HIDDEN, HIDDEN, scale=HIDDEN ** -0.5),
            "down": rnd(HIDDEN, FFN_HIDDEN, scale=FFN_HIDDEN ** -0.5),
        })
    return w


def cos_sin_table(max_positions: int, device):
    pairs = torch.arange(HEAD_DIM // 2, dtype=torch.float64)
    angles = torch.arange(max_positions, dtype=torch.float64)[:, None] * THETA ** (-2 * pairs / HEAD_DIM)[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=1).float().to(device)


class FusedLlama:
    """The decode loop on clusterfusion's blocks (seed-style arguments)."""

    def __init__(self, w, max_slots: int, device, backend: str, pointer_tables: bool):
        self.w, self.device, self.backend = w, device, backend
        n = len(w["layers"])
        self.k_pools = [torch.zeros(max_slots, N_KV_HEADS, HEAD_DIM, dtype=torch.float16, device=device) for _ in range(n)]
        self.v_pools = [torch.zeros_like(k) for k in self.k_pools]
        self.cos_sin = cos_sin_table(max_slots, device)
        if pointer_tables:  # the seed's k_data_ptrs / v_data_ptrs
            self.k_arg = torch.tensor([k.data_ptr() for k in self.k_pools], dtype=torch.uint64, device=device)
            self.v_arg = torch.tensor([v.data_ptr() for v in self.v_pools], dtype=torch.uint64, device=device)
            self.kv_shape = tuple(self.k_pools[0].shape)
        else:
            self.k_arg, self.v_arg, self.kv_shape = self.k_pools, self.v_pools, None
        self.slots = []  # per sequence: its token-pool slots in order
        self.next_slot = 0

    def step(self, tokens):
        """One decode step for tokens[b] of sequence b (a new sequence when b == len(self.slots)). Returns logits."""
        for b in range(len(tokens)):
            if b == len(self.slots):
                self.slots.append([])
            self.slots[b].append(self.next_slot)
            self.next_slot += 1
        lens = [len(s) for s in self.slots]
        indptr = torch.tensor([0] + list(itertools.accumulate(lens)), dtype=torch.int32, device=self.device)
        indices = torch.tensor([i for s in self.slots for i in s], dtype=torch.int32, device=self.device)
        positions = torch.tensor([n - 1 for n in lens], dtype=torch.int64, device=self.device)
        hidden = self.w["embed"][torch.tensor(tokens, device=self.device)].contiguous()
        residual = torch.empty_like(hidden)
        first = True
        for layer_id, lw in enumerate(self.w["layers"]):
            # Outputs over the inputs, as the seed updates in place; the first layer has no residual yet.
            cf.llama_decoder_layer(hidden, residual, hidden, None if first else residual, lw["qkv"], lw["o"],
                                   indptr, indices, self.k_arg, self.v_arg, layer_id, lw["attn_norm"], EPS,
                                   positions, self.cos_sin, kv_cache_shape=self.kv_shape, backend=self.backend)
            first = False
            cf.llama_ffn_layer(hidden, residual, hidden, residual, lw["gate_up"], lw["down"], lw["ffn_norm"], EPS,
                               backend=self.backend)
        normed = torch.empty_like(hidden)
        cf.rms_norm(normed, hidden, self.w["final_norm"], EPS, residual=residual)
        return normed.float() @ self.w["lm_head"].float().T


class TorchLlama:
    """The same model in plain torch, fp32 math: pre-norm blocks h += attn(norm(h)); h += ffn(norm(h))."""

    def __init__(self, w, device):
        self.w = {k: v for k, v in w.items()}
        self.cos_sin = cos_sin_table(4096, device)
        self.cache = []  # per sequence: per layer [k list, v list]

    @staticmethod
    def norm(x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * weight.float()

    def rope(self, t, pos):  # NeoX pairs (i, i + head_dim/2)
        cos, sin = self.cos_sin[pos, : HEAD_DIM // 2], self.cos_sin[pos, HEAD_DIM // 2:]
        a, b = t[..., : HEAD_DIM // 2], t[..., HEAD_DIM // 2:]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)

    def step(self, tokens):
        out = []
        for b, tok in enumerate(tokens):
            if b == len(self.cache):
                self.cache.append([[[], []] for _ in self.w["layers"]])
            h = self.w["embed"][tok].float()
            pos = len(self.cache[b][0][0])
            for layer_id, lw in enumerate(self.w["layers"]):
                x = self.norm(h, lw["attn_norm"])
                qkv = x @ lw["qkv"].float().T
                q_dim, kv_dim = N_HEADS * HEAD_DIM, N_KV_HEADS * HEAD_DIM
                q = self.rope(qkv[:q_dim].view(N_HEADS, HEAD_DIM), pos)
                k = self.rope(qkv[q_dim:q_dim + kv_dim].view(N_KV_HEADS, HEAD_DIM), pos)
                v = qkv[q_dim + kv_dim:].view(N_KV_HEADS, HEAD_DIM)
                ks, vs = self.cache[b][layer_id]
                ks.append(k.half().float())  # the cache holds fp16, as the fused path's pool does
                vs.append(v.half().float())
                keys, values = torch.stack(ks), torch.stack(vs)  # [len, n_kv, hd]
                group = N_HEADS // N_KV_HEADS
                keys, values = keys.repeat_interleave(group, dim=1), values.repeat_interleave(group, dim=1)
                scores = torch.einsum("hd,thd->ht", q, keys) / HEAD_DIM ** 0.5
                attn = torch.einsum("ht,thd->hd", scores.softmax(-1), values)
                h = h + attn.reshape(-1) @ lw["o"].float().T
                x = self.norm(h, lw["ffn_norm"])
                gate, up = (x @ lw["gate_up"].float().T).split(FFN_HIDDEN)
                h = h + (torch.nn.functional.silu(gate) * up) @ lw["down"].float().T
            out.append(self.norm(h, self.w["final_norm"]) @ self.w["lm_head"].float().T)
        return torch.stack(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="decode steps [12]")
    parser.add_argument("--layers", type=int, default=2, help="decoder layers [2]")
    parser.add_argument("--backend", default="auto", help="auto | reference | emu (the last two: CPU tensors) [auto]")
    parser.add_argument("--cpu", action="store_true", help="CPU tensors even when a GPU is there")
    args = parser.parse_args()

    gpu = torch.cuda.is_available() and cf.cuda_available() and not args.cpu and args.backend in ("auto", "cuda")
    device = torch.device("cuda" if gpu else "cpu")
    if gpu:
        print(f"device: {torch.cuda.get_device_name()} (fused cluster kernels)")
    else:
        why = ("asked for" if args.cpu or args.backend not in ("auto", "cuda") else "no CUDA device"
               if not torch.cuda.is_available() else "CUDA module: " + (cf.cuda_build_error() or "no device"))
        print(f"device: CPU ({why}); backend {args.backend}")
    torch.manual_seed(0)
    with torch.no_grad():
        w = make_weights(args.layers, device)
        fused = FusedLlama(w, max_slots=4 * args.steps + 8, device=device, backend=args.backend, pointer_tables=gpu)
        plain = TorchLlama(w, device)
        tokens = [1, 2]  # two sequences; the second joins one step later
        worst, agree, compared = 0.0, 0, 0
        elapsed = 0.0
        for step in range(args.steps):
            batch = tokens[:1] if step == 0 else tokens
            start = time.perf_counter()
            got = fused.step(batch)
            if gpu:
                torch.cuda.synchronize()
            elapsed += time.perf_counter() - start
            want = plain.step(batch)
            err = ((got - want).abs().max() / want.pow(2).mean().sqrt()).item()
            worst = max(worst, err)
            top2 = want.topk(2, dim=-1).values
            for b in range(len(batch)):
                if (top2[b, 0] - top2[b, 1]).item() > 0.05 * want[b].std().item():  # a clear winner
                    compared += 1
                    agree += int(got[b].argmax().item() == want[b].argmax().item())
            tokens = got.argmax(-1).tolist() if step > 0 else [int(got[0].argmax()), 7]
    print(f"{args.steps} steps x {args.layers} layers: max |logit error| / rms = {worst:.2e}; "
          f"greedy tokens equal at {agree}/{compared} clear-margin positions; {1e3 * elapsed / args.steps:.2f} ms/step")
    ok = worst < 3e-2 and agree == compared
    print("OK: the fused blocks match plain torch math" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
