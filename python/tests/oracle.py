"""Independent numpy implementations of the blocks clusterfusion computes (fp32 math), and test-case builders.

Written from the formulas (SGLang / ClusterFusion semantics, docs/attention.md), not from the C++ reference, so the
tests compare two implementations that share no code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

F32 = np.float32


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x.astype(np.float64)))))


def rmsnorm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    x = x.astype(F32)
    inv = F32(1.0) / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + F32(eps))
    return x * inv * weight.astype(F32)


def rope_cos_sin_table(max_positions: int, rot_dim: int, theta: float) -> np.ndarray:
    """[max_positions, rot_dim] float32: cos of the rot_dim/2 pairs, then their sin (angles in float64)."""
    pairs = np.arange(rot_dim // 2, dtype=np.float64)
    inv_freq = theta ** (-2.0 * pairs / rot_dim)
    angles = np.arange(max_positions, dtype=np.float64)[:, None] * inv_freq[None, :]
    return np.concatenate([np.cos(angles), np.sin(angles)], axis=1).astype(F32)


def rotate(t: np.ndarray, cos: np.ndarray, sin: np.ndarray, rot_dim: int, style: str) -> np.ndarray:
    """RoPE on t [heads, head_dim] with one position's cos/sin [rot_dim/2]."""
    out = t.copy()
    if style == "neox":
        first, second = t[:, : rot_dim // 2], t[:, rot_dim // 2 : rot_dim]
        out[:, : rot_dim // 2] = first * cos - second * sin
        out[:, rot_dim // 2 : rot_dim] = first * sin + second * cos
    else:
        first, second = t[:, 0:rot_dim:2], t[:, 1:rot_dim:2]
        out[:, 0:rot_dim:2] = first * cos - second * sin
        out[:, 1:rot_dim:2] = first * sin + second * cos
    return out


@dataclass
class DecoderCase:
    """Inputs of one llama_decoder_layer call (numpy, C-contiguous) and the page table behind them."""

    dtype: type
    batch: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    page_size: int
    kv_lens: List[int]
    rot_dim: int
    rope_style: str
    eps: float
    arrays: Dict[str, Optional[np.ndarray]] = field(default_factory=dict)


def make_decoder_case(
    seed: int = 0,
    *,
    dtype=np.float16,
    hidden: int = 256,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    head_dim: int = 64,
    kv_lens=(5, 17, 33),
    page_size: int = 1,
    rot_dim: Optional[int] = None,
    rope_style: str = "neox",
    cos_sin: bool = True,
    residual: bool = True,
    bias: bool = False,
    eps: float = 1e-5,
    positions_dtype=np.int64,
) -> DecoderCase:
    rng = np.random.default_rng(seed)
    batch = len(kv_lens)
    rot = rot_dim or head_dim
    q_dim, kv_dim = n_heads * head_dim, n_kv_heads * head_dim
    c = DecoderCase(dtype, batch, hidden, n_heads, n_kv_heads, head_dim, page_size, list(kv_lens), rot, rope_style, eps)

    def randn(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(dtype)

    # Pages: each sequence owns ceil(kv_len / page_size) distinct pages, shuffled across the pool.
    pages_per_seq = [(n + page_size - 1) // page_size for n in kv_lens]
    n_pages = sum(pages_per_seq) + 3  # spare pages that must stay untouched
    order = rng.permutation(n_pages).astype(np.int32)
    indptr = np.zeros(batch + 1, np.int32)
    indptr[1:] = np.cumsum(pages_per_seq)
    indices = order[: indptr[-1]].copy()
    last = np.array([n - (p - 1) * page_size for n, p in zip(kv_lens, pages_per_seq)], np.int32)
    max_positions = max(kv_lens) + 8
    a = c.arrays
    a["hidden_states"] = randn(batch, hidden)
    a["residual"] = randn(batch, hidden) if residual else None
    a["qkv_weight"] = randn(q_dim + 2 * kv_dim, hidden, scale=hidden**-0.5)
    a["o_weight"] = randn(hidden, q_dim, scale=q_dim**-0.5)
    a["rms_weight"] = (1.0 + 0.1 * rng.standard_normal(hidden)).astype(dtype)
    a["qkv_bias"] = randn(q_dim + 2 * kv_dim, scale=0.1) if bias else None
    # page size 1: the seed's token pool [slots, n_kv_heads, head_dim]; else [n_pages, page_size, n_kv_heads, head_dim]
    shape = (n_pages, n_kv_heads, head_dim) if page_size == 1 else (n_pages, page_size, n_kv_heads, head_dim)
    a["k_cache"] = randn(*shape)
    a["v_cache"] = randn(*shape)
    a["paged_kv_indptr"] = indptr
    a["paged_kv_indices"] = indices
    a["kv_last_page_len"] = last if page_size > 1 else None
    a["positions"] = (np.array(kv_lens) - 1).astype(positions_dtype)  # the new token is the last of its sequence
    a["cos_sin"] = rope_cos_sin_table(max_positions, rot, 10000.0) if cos_sin else None
    a["output"] = np.full((batch, hidden), np.nan, dtype)
    a["residual_output"] = np.full((batch, hidden), np.nan, dtype)
    return c


def decoder_layer(c: DecoderCase, theta: float = 10000.0):
    """The attention block in numpy fp32: returns (output, residual_output, k_cache, v_cache) in c.dtype."""
    a = c.arrays
    dt = c.dtype
    hd, rot = c.head_dim, c.rot_dim
    q_dim, kv_dim = c.n_heads * hd, c.n_kv_heads * hd
    group = c.n_heads // c.n_kv_heads
    s = a["hidden_states"].astype(F32)
    if a["residual"] is not None:
        s = s + a["residual"].astype(F32)
    residual_output = s.astype(dt)
    x = rmsnorm(s, a["rms_weight"], c.eps)
    qkv = x @ a["qkv_weight"].astype(F32).T
    if a["qkv_bias"] is not None:
        qkv = qkv + a["qkv_bias"].astype(F32)
    table = a["cos_sin"] if a["cos_sin"] is not None else rope_cos_sin_table(int(max(a["positions"])) + 1, rot, theta)
    k_pool = a["k_cache"].reshape(-1, c.page_size, c.n_kv_heads, hd).copy()
    v_pool = a["v_cache"].reshape(-1, c.page_size, c.n_kv_heads, hd).copy()
    out = np.zeros((c.batch, c.hidden), F32)
    indptr, indices = a["paged_kv_indptr"], a["paged_kv_indices"]
    for b in range(c.batch):
        pos = int(a["positions"][b])
        cos, sin = table[pos, : rot // 2], table[pos, rot // 2 :]
        q = rotate(qkv[b, :q_dim].reshape(c.n_heads, hd), cos, sin, rot, c.rope_style)
        k = rotate(qkv[b, q_dim : q_dim + kv_dim].reshape(c.n_kv_heads, hd), cos, sin, rot, c.rope_style)
        v = qkv[b, q_dim + kv_dim :].reshape(c.n_kv_heads, hd)
        pages = indices[indptr[b] : indptr[b + 1]]
        kv_len = c.kv_lens[b]
        slot = kv_len - 1
        k_pool[pages[slot // c.page_size], slot % c.page_size] = k.astype(dt)
        v_pool[pages[slot // c.page_size], slot % c.page_size] = v.astype(dt)
        rows = [(pages[t // c.page_size], t % c.page_size) for t in range(kv_len)]
        keys = np.stack([k_pool[p, o] for p, o in rows]).astype(F32)  # [kv_len, n_kv, hd]
        values = np.stack([v_pool[p, o] for p, o in rows]).astype(F32)
        attn = np.zeros((c.n_heads, hd), F32)
        for h in range(c.n_heads):
            scores = keys[:, h // group, :] @ q[h] / np.sqrt(F32(hd))
            p = np.exp(scores - scores.max())
            attn[h] = (p / p.sum()) @ values[:, h // group, :]
        out[b] = attn.reshape(q_dim) @ a["o_weight"].astype(F32).T
    shape = a["k_cache"].shape
    return out.astype(dt), residual_output, k_pool.reshape(shape), v_pool.reshape(shape)


def ffn_layer(hidden, residual, gate_up, down, norm, eps):
    """The FFN block in numpy fp32: returns (output, residual_output) in hidden's dtype."""
    dt = hidden.dtype
    s = hidden.astype(F32) + (residual.astype(F32) if residual is not None else F32(0))
    x = rmsnorm(s, norm, eps)
    ffn = gate_up.shape[0] // 2
    gu = x @ gate_up.astype(F32).T
    gate, up = gu[:, :ffn], gu[:, ffn:]
    act = gate / (F32(1) + np.exp(-gate)) * up
    return (act @ down.astype(F32).T).astype(dt), s.astype(dt)
