"""A float64 numpy DeepSeek-V2 forward pass (MLA attention + MoE FFN), written from the model's definition (Hugging
Face config.json + safetensors, the authors' modeling_deepseek.py semantics; docs/mla.md), independent of llama.cpp and
of our C++ code. Used by scripts/record_deepseek_golden.py as the oracle of the goldens.

Two attention forms, which must agree (the script asserts it):
  expanded  prefill over the whole sequence as modeling_deepseek.py computes it: per head k = [W_UK c_kv, k_pe],
            v = W_UV c_kv, causal softmax(q k^T * scale) v; RoPE as the HF code applies it (de-interleave each
            head's rope part into halves, then rotate-half)
  absorbed  decode one token at a time over a latent cache of [c_kv, k_pe] rows: q_lat = W_UK^T q_nope,
            score = q_lat . c_kv + q_pe . k_pe, o = W_UV (sum_t p_t c_kv_t); RoPE on adjacent pairs in place (the
            GGUF / llama.cpp layout); the cache never holds per-head keys or values

Only numpy is needed (the safetensors file is parsed here).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


class UnsupportedConfig(ValueError):
    pass


def read_safetensors(path: Path) -> dict:
    """name -> float64 array, for F32 / F16 / BF16 tensors."""
    data = Path(path).read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_len])
    base = 8 + header_len
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = data[base + begin:base + end]
        if info["dtype"] == "BF16":
            values = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] == "F16":
            values = np.frombuffer(raw, dtype="<f2")
        elif info["dtype"] == "F32":
            values = np.frombuffer(raw, dtype="<f4")
        else:
            raise UnsupportedConfig(f"{path}: tensor {name} has dtype {info['dtype']}")
        out[name] = values.astype(np.float64).reshape(info["shape"])
    return out


def yarn_get_mscale(factor: float, mscale: float) -> float:
    return 1.0 if factor <= 1.0 else 0.1 * mscale * math.log(factor) + 1.0


class Rope:
    """RoPE of the rope part of q and k (dimension `dim`, `dim/2` rotation pairs), plain or YaRN."""

    def __init__(self, dim: int, theta: float, scaling: dict | None):
        pairs = np.arange(dim // 2, dtype=np.float64)
        freq_extra = theta ** (-2.0 * pairs / dim)  # the original frequencies (extrapolation)
        self.magnitude = 1.0
        if scaling is None:
            self.inv_freq = freq_extra
            return
        kind = scaling.get("type", scaling.get("rope_type"))
        if kind != "yarn":
            raise UnsupportedConfig(f"rope_scaling type {kind!r} (only yarn)")
        factor = float(scaling["factor"])
        orig = float(scaling.get("original_max_position_embeddings", 4096))
        beta_fast, beta_slow = float(scaling.get("beta_fast", 32)), float(scaling.get("beta_slow", 1))

        def correction_dim(rotations):  # the pair whose wavelength fits `rotations` times into orig
            return dim * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(theta))

        low = max(math.floor(correction_dim(beta_fast)), 0)
        high = min(math.ceil(correction_dim(beta_slow)), dim - 1)
        span = high - low if high != low else 0.001
        interp_weight = np.clip((pairs - low) / span, 0.0, 1.0)  # 0: keep the original frequency, 1: divide by factor
        self.inv_freq = freq_extra * (1 - interp_weight) + (freq_extra / factor) * interp_weight
        self.magnitude = (yarn_get_mscale(factor, float(scaling.get("mscale", 1)))
                          / yarn_get_mscale(factor, float(scaling.get("mscale_all_dim", 0))))
        self.low, self.high = low, high

    def angles(self, positions) -> np.ndarray:
        return np.asarray(positions, dtype=np.float64)[:, None] * self.inv_freq[None, :]

    def apply_pairs(self, x: np.ndarray, positions) -> np.ndarray:
        """x [..., T, dim] rotated on adjacent pairs (2i, 2i+1) in place (GGUF / llama.cpp layout)."""
        a = self.angles(positions)
        cos, sin = np.cos(a) * self.magnitude, np.sin(a) * self.magnitude
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = even * sin + odd * cos
        return out

    def apply_hf(self, x: np.ndarray, positions) -> np.ndarray:
        """HF modeling_deepseek.py's way: de-interleave (evens then odds), then rotate-half with cos/sin duplicated.
        The result is a permutation of apply_pairs' result (the same permutation for q and k: same dot products)."""
        half = x.shape[-1] // 2
        x = np.concatenate([x[..., 0::2], x[..., 1::2]], axis=-1)
        a = self.angles(positions)
        cos = np.concatenate([np.cos(a), np.cos(a)], axis=-1) * self.magnitude
        sin = np.concatenate([np.sin(a), np.sin(a)], axis=-1) * self.magnitude
        rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return x * cos + rotated * sin


class DeepseekV2:
    """The model of an HF folder (config.json + model.safetensors), every computation in float64."""


    def __init__(self, config: dict, weights: dict):
        """config: config.json's fields; weights: HF tensor name -> float64 array."""
        c = config
        self.config = c
        if c.get("model_type") != "deepseek_v2":
            raise UnsupportedConfig(f"model_type {c.get('model_type')!r}")
        self.n_layer = c["num_hidden_layers"]
        self.hidden = c["hidden_size"]
        self.n_head = c["num_attention_heads"]
        self.q_lora_rank = c.get("q_lora_rank")
        self.kv_lora_rank = c["kv_lora_rank"]
        self.nope, self.rope_dim, self.v_dim = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
        self.q_head = self.nope + self.rope_dim
        self.eps = float(c.get("rms_norm_eps", 1e-6))
        self.n_experts = c.get("n_routed_experts")
        self.top_k = c.get("num_experts_per_tok")
        self.first_dense = c.get("first_k_dense_replace", 0)
        self.norm_topk = bool(c.get("norm_topk_prob", False))
        self.routed_scale = float(c.get("routed_scaling_factor", 1.0))
        self.topk_method = c.get("topk_method", "greedy")
        self.n_group, self.topk_group = c.get("n_group", 1), c.get("topk_group", 1)
        if c.get("scoring_func", "softmax") != "softmax":
            raise UnsupportedConfig(f"scoring_func {c.get('scoring_func')!r}")
        if c.get("moe_layer_freq", 1) != 1:
            raise UnsupportedConfig(f"moe_layer_freq {c.get('moe_layer_freq')}")
        if self.topk_method not in ("greedy", "group_limited_greedy"):
            raise UnsupportedConfig(f"topk_method {self.topk_method!r}")
        scaling = c.get("rope_scaling")
        self.rope = Rope(self.rope_dim, float(c.get("rope_theta", 10000)), scaling)
        self.scale = self.q_head ** -0.5
        if scaling is not None and scaling.get("mscale_all_dim"):
            m = yarn_get_mscale(float(scaling["factor"]), float(scaling["mscale_all_dim"]))
            self.scale *= m * m
        self.w = weights
        self.lm_head = self.w.get("lm_head.weight", self.w.get("model.embed_tokens.weight"))

    @classmethod
    def from_folder(cls, folder: Path) -> "DeepseekV2":
        folder = Path(folder)
        return cls(json.loads((folder / "config.json").read_text()), read_safetensors(folder / "model.safetensors"))

    # ---- pieces ----
    def rmsnorm(self, x, weight):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * weight

    def query(self, a: str, x):
        """q [T, n_head, q_head] before RoPE."""
        if self.q_lora_rank is None:
            q = x @ self.w[a + "q_proj.weight"].T
        else:
            q = self.rmsnorm(x @ self.w[a + "q_a_proj.weight"].T, self.w[a + "q_a_layernorm.weight"])
            q = q @ self.w[a + "q_b_proj.weight"].T
        return q.reshape(len(x), self.n_head, self.q_head)

    def latent(self, a: str, x):
        """c_kv [T, kv_lora] (normed) and k_pe [T, rope] (before RoPE) from the kv_a projection."""
        kv = x @ self.w[a + "kv_a_proj_with_mqa.weight"].T
        c_kv = self.rmsnorm(kv[:, :self.kv_lora_rank], self.w[a + "kv_a_layernorm.weight"])
        return c_kv, kv[:, self.kv_lora_rank:]

    def kv_b(self, a: str):
        """W_UK [n_head, nope, kv_lora] and W_UV [n_head, v, kv_lora] from kv_b_proj (rows per head: nope, then v)."""
        w = self.w[a + "kv_b_proj.weight"].reshape(self.n_head, self.nope + self.v_dim, self.kv_lora_rank)
        return w[:, :self.nope, :], w[:, self.nope:, :]

    def attention_expanded(self, layer: int, x, positions):
        a = f"model.layers.{layer}.self_attn."
        seq = len(x)
        q = self.query(a, x)
        c_kv, k_pe = self.latent(a, x)
        w_uk, w_uv = self.kv_b(a)
        k_nope = np.einsum("hnc,tc->thn", w_uk, c_kv)
        v = np.einsum("hvc,tc->thv", w_uv, c_kv)
        q_pe = self.rope.apply_hf(q[..., self.nope:].transpose(1, 0, 2), positions).transpose(1, 0, 2)
        k_pe = self.rope.apply_hf(k_pe, positions)
        k = np.concatenate([k_nope, np.broadcast_to(k_pe[:, None, :], (seq, self.n_head, self.rope_dim))], axis=-1)
        q = np.concatenate([q[..., :self.nope], q_pe], axis=-1)
        scores = np.einsum("qhd,khd->hqk", q, k) * self.scale
        scores = scores + np.triu(np.full((seq, seq), -np.inf), k=1)
        probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        out = np.einsum("hqk,khv->qhv", probs, v).reshape(seq, self.n_head * self.v_dim)
        return out @ self.w[a + "o_proj.weight"].T

    def attention_absorbed(self, layer: int, x, position: int, cache: list):
        """One token (x [hidden]) at `position`; appends its [c_kv, k_pe] row to cache (a list of rows)."""
        a = f"model.layers.{layer}.self_attn."
        q = self.query(a, x[None, :])[0]
        c_kv, k_pe = self.latent(a, x[None, :])
        k_pe = self.rope.apply_pairs(k_pe, [position])
        cache.append(np.concatenate([c_kv[0], k_pe[0]]))
        rows = np.stack(cache)  # [T, kv_lora + rope]
        w_uk, w_uv = self.kv_b(a)
        q_pe = self.rope.apply_pairs(q[:, self.nope:], [position])  # [n_head, rope], one position for all heads
        q_lat = np.einsum("hnc,hn->hc", w_uk, q[:, :self.nope])
        scores = (q_lat @ rows[:, :self.kv_lora_rank].T + q_pe @ rows[:, self.kv_lora_rank:].T) * self.scale
        probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        o_lat = probs @ rows[:, :self.kv_lora_rank]  # [n_head, kv_lora]
        out = np.einsum("hvc,hc->hv", w_uv, o_lat).reshape(-1)
        return out @ self.w[a + "o_proj.weight"].T

    def mlp(self, prefix: str, x):
        gate = x @ self.w[prefix + "gate_proj.weight"].T
        up = x @ self.w[prefix + "up_proj.weight"].T
        return (gate / (1.0 + np.exp(-gate)) * up) @ self.w[prefix + "down_proj.weight"].T

    def route(self, layer: int, x):
        """(expert ids [T, top_k] by score descending, their weights [T, top_k], the smallest gap between the last chosen
        and the first unchosen score, softmax scores [T, n_experts])."""
        logits = x @ self.w[f"model.layers.{layer}.mlp.gate.weight"].T
        scores = np.exp(logits - logits.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        return select_experts(scores, self.top_k, self.topk_method, self.n_group, self.topk_group,
                              self.norm_topk, self.routed_scale) + (scores,)

    def moe(self, layer: int, x):
        p = f"model.layers.{layer}.mlp."
        ids, weights, _, _ = self.route(layer, x)
        shared = self.config.get("n_shared_experts")
        out = self.mlp(p + "shared_experts.", x) if shared else np.zeros_like(x)
        for t in range(len(x)):
            for e, w in zip(ids[t], weights[t]):
                out[t] += w * self.mlp(p + f"experts.{e}.", x[t:t + 1])[0]
        return out

    def ffn(self, layer: int, x):
        if self.n_experts is None or layer < self.first_dense:
            return self.mlp(f"model.layers.{layer}.mlp.", x)
        return self.moe(layer, x)

    # ---- whole model ----
    def forward_expanded(self, tokens, start: int = 0):
        """Logits [T, vocab] of a causal prefill over tokens at positions start..start+T-1."""
        x = self.w["model.embed_tokens.weight"][np.asarray(tokens)]
        positions = np.arange(start, start + len(tokens))
        for layer in range(self.n_layer):
            p = f"model.layers.{layer}."
            x = x + self.attention_expanded(layer, self.rmsnorm(x, self.w[p + "input_layernorm.weight"]), positions)
            x = x + self.ffn(layer, self.rmsnorm(x, self.w[p + "post_attention_layernorm.weight"]))
        return self.rmsnorm(x, self.w["model.norm.weight"]) @ self.lm_head.T

    def forward_absorbed(self, tokens, start: int = 0):
        """The same logits, decoding one token at a time over per-layer latent caches."""
        caches = [[] for _ in range(self.n_layer)]
        logits = []
        for i, token in enumerate(tokens):
            x = self.w["model.embed_tokens.weight"][token]
            for layer in range(self.n_layer):
                p = f"model.layers.{layer}."
                h = self.rmsnorm(x, self.w[p + "input_layernorm.weight"])
                x = x + self.attention_absorbed(layer, h, start + i, caches[layer])
                x = x + self.ffn(layer, self.rmsnorm(x, self.w[p + "post_attention_layernorm.weight"])[None, :])[0]
            logits.append(self.rmsnorm(x, self.w["model.norm.weight"]) @ self.lm_head.T)
        return np.stack(logits)


def select_experts(scores, top_k: int, method: str, n_group: int, topk_group: int, norm_topk: bool,
                   routed_scale: float):
    """Top-k routing of modeling_deepseek.py (DeepSeek-V2): greedy, or group_limited_greedy (keep the topk_group
    groups with the highest single expert score, then greedy inside them). Ties go to the lower expert id.
    Weights: renormalised to sum 1 when norm_topk (and top_k > 1), else multiplied by routed_scale; V2's code never
    does both (llama.cpp and DeepSeek-V3 renormalise, then scale: the tiny models keep the two apart)."""
    scores = np.asarray(scores, dtype=np.float64)
    tokens, n_experts = scores.shape
    eligible = scores.copy()
    if method == "group_limited_greedy":
        if n_experts % n_group:
            raise UnsupportedConfig(f"{n_experts} experts do not split into {n_group} groups")
        group_best = scores.reshape(tokens, n_group, -1).max(axis=-1)
        keep = np.argsort(-group_best, axis=-1, kind="stable")[:, :topk_group]
        mask = np.zeros((tokens, n_group), dtype=bool)
        np.put_along_axis(mask, keep, True, axis=-1)
        eligible = np.where(np.repeat(mask, n_experts // n_group, axis=-1), scores, 0.0)
    elif method != "greedy":
        raise UnsupportedConfig(f"topk_method {method!r}")
    order = np.argsort(-eligible, axis=-1, kind="stable")
    ids = order[:, :top_k]
    ranked = np.take_along_axis(eligible, order, axis=-1)
    margin = float(np.min(ranked[:, top_k - 1] - ranked[:, top_k])) if top_k < n_experts else math.inf
    weights = np.take_along_axis(eligible, ids, axis=-1)
    if top_k > 1 and norm_topk:
        weights = weights / (weights.sum(axis=-1, keepdims=True) + 1e-20)
    else:
        weights = weights * routed_scale
    return ids, weights, margin
