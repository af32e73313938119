#!/usr/bin/env python3
"""Records dequantisation goldens from the python `gguf` package (an implementation independent of ours).

Writes tests/data/dequant/golden.json:
  cases:         small tensors of every type we dequantise (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K): the raw bytes
                 (hex) and the expected fp32 results as uint32 bit patterns, from gguf.quants.dequantize.
                 Bytes come both from gguf.quants.quantize of random floats and from random block bytes (with
                 random fp16 scales, including subnormal and negative ones; k-quants: random bytes only).
  model_samples: a few rows of tensors of the default model (SmolLM2-135M-Instruct Q4_1 GGUF), dequantised by
                 gguf.GGUFReader + gguf.quants.dequantize, for the real-model test.

Usage: python3 scripts/make_dequant_golden.py [--model PATH]   (needs: pip install gguf numpy)
"""
import argparse
import importlib.metadata
import json
import os
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "dequant" / "golden.json"


def default_model():
    cache = os.environ.get("CF_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "clusterfusion")
    return os.path.join(cache, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def bits(a):
    return [int(x) for x in np.asarray(a, dtype=np.float32).reshape(-1).view(np.uint32)]


def case(name, qtype, raw, n):
    raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
    expected = dequantize(raw.reshape(1, -1), qtype).reshape(-1)
    assert expected.size == n, (name, expected.size, n)
    return {"name": name, "type": qtype.name, "n": n, "bytes_hex": raw.tobytes().hex(), "expected_bits": bits(expected)}


def random_blocks(rng, qtype, n_blocks):
    """Random block bytes with finite fp16 scales of varied magnitude (normal, subnormal, negative)."""
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    # Byte offsets of the fp16 scales in a block (Q6_K keeps its d at the end).
    offsets = {T.Q4_1: [0, 2], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}.get(qtype, [0])
    for b in range(n_blocks):
        for off in offsets:
            kind = b % 4
            if kind == 0:
                v = np.float16(rng.normal() * 0.05)
            elif kind == 1:
                v = np.float16(rng.normal() * 2.0)
            elif kind == 2:
                v = np.uint16(rng.integers(1, 0x400)).view(np.float16)  # subnormal
            else:
                v = np.float16(-abs(rng.normal()) * 1e-3)
            raw[b, off:off + 2] = np.frombuffer(np.float16(v).tobytes(), dtype=np.uint8)
    return raw, n_blocks * block_elems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=default_model())
    args = ap.parse_args()
    rng = np.random.default_rng(20261126)
    cases = []

    x = rng.normal(size=96).astype(np.float32)
    x[:4] = [0.0, -0.0, 1e-40, 3.4e38]
    cases.append(case("f32", T.F32, x.view(np.uint8), 96))

    h = rng.integers(0, 0x10000, size=512, dtype=np.uint32).astype(np.uint16)
    h[:8] = [0x0000, 0x8000, 0x0001, 0x03ff, 0x0400, 0x7bff, 0x7c00, 0xfc00]  # zeros, subnormals, max, +-inf
    h = h[((h & 0x7c00) != 0x7c00) | ((h & 0x3ff) == 0)]  # no NaNs (payload handling is tested against half.hpp)
    cases.append(case("f16", T.F16, h.view(np.uint8), h.size))

    bf = rng.integers(0, 0x10000, size=256, dtype=np.uint32).astype(np.uint16)
    bf = bf[(bf & 0x7f80) != 0x7f80]
    cases.append(case("bf16", T.BF16, bf.view(np.uint8), bf.size))

    for qtype in (T.Q8_0, T.Q4_0, T.Q4_1):
        values = (rng.normal(size=(2, 64)) * np.array([[0.02], [3.0]])).astype(np.float32)
        q = quantize(values, qtype)
        cases.append(case(f"{qtype.name.lower()}_quantized", qtype, q, 128))
        raw, n = random_blocks(rng, qtype, 8)
        cases.append(case(f"{qtype.name.lower()}_random_blocks", qtype, raw, n))

    # k-quants (appended last so the cases above keep their random draws): random super-blocks.
    for qtype in (T.Q4_K, T.Q5_K, T.Q6_K):
        raw, n = random_blocks(rng, qtype, 6)
        cases.append(case(f"{qtype.name.lower()}_random_blocks", qtype, raw, n))

    samples = []
    if os.path.exists(args.model):
        reader = gguf.GGUFReader(args.model)
        wanted = {"token_embd.weight": [0, 1, 49151], "blk.0.attn_q.weight": [0, 575],
                  "blk.29.ffn_down.weight": [7], "output_norm.weight": [0]}
        for t in reader.tensors:
            if t.name not in wanted:
                continue
            rows = dequantize(t.data, t.tensor_type)
            rows = rows.reshape(-1, int(t.shape[0]))  # gguf shape is ne (innermost first)
            for r in wanted[t.name]:
                samples.append({"tensor": t.name, "type": t.tensor_type.name, "row": r, "cols": int(t.shape[0]),
                                "expected_bits": bits(rows[r])})
    else:
        print(f"warning: {args.model} not found; model_samples left empty")

    doc = {
        "generator": f"scripts/make_dequant_golden.py: python gguf {importlib.metadata.version('gguf')}"
                     f" (gguf.quants.dequantize), numpy {np.__version__}",
        "model": os.path.basename(args.model),
        "cases": cases,
        "model_samples": samples,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(cases)} cases, {len(samples)} model rows)")


if __name__ == "__main__":
    main()
