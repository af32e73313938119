"""deepseek_decoder_layer (the MLA attention block of DeepSeek-V2) against a numpy oracle written in the expanded
form (per-head keys and values made from the latent rows, ordinary attention), on every backend: the CPU reference,
the fused MLA kernel on the CPU emulator and (with a GPU) on CUDA tensors. Also the RoPE table and softmax scale
helpers and the argument checks."""
from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np
import pytest

import clusterfusion
import oracle
from conftest import Device

F32 = np.float32


def make_case(q_lora: int = 0, batch: int = 2, page_size: int = 4, kv_lens=(5, 9), residual: bool = True,
              dtype=np.float16, seed: int = 0) -> Dict[str, Optional[np.ndarray]]:
    """Random inputs of one call: hidden 64, 4 heads, nope 16, rope 16, v 16, kv_lora 32 (shapes the kernel takes)."""
    rng = np.random.default_rng(seed)
    hidden, heads, nope, rope, v, r = 64, 4, 16, 16, 16, 32
    q_head = nope + rope

    def w(*shape, scale=None):
        s = scale if scale is not None else 1.0 / math.sqrt(shape[-1])
        return (rng.standard_normal(shape) * s).astype(dtype)

    pages_per_seq = [(n + page_size - 1) // page_size for n in kv_lens]
    n_pages = sum(pages_per_seq) + 2
    order = rng.permutation(n_pages)[: sum(pages_per_seq)].astype(np.int32)  # pages scattered over the pool
    indptr = np.concatenate([[0], np.cumsum(pages_per_seq)]).astype(np.int32)
    a: Dict[str, Optional[np.ndarray]] = dict(
        output=np.zeros((batch, hidden), dtype), residual_output=np.zeros((batch, hidden), dtype),
        hidden_states=w(batch, hidden, scale=1.0), residual=w(batch, hidden, scale=1.0) if residual else None,
        q_weight=None if q_lora else w(heads * q_head, hidden),
        q_a_weight=w(q_lora, hidden) if q_lora else None,
        q_a_norm=(1 + 0.1 * rng.standard_normal(q_lora)).astype(dtype) if q_lora else None,
        q_b_weight=w(heads * q_head, q_lora) if q_lora else None,
        kv_a_weight=w(r + rope, hidden), kv_a_norm=(1 + 0.1 * rng.standard_normal(r)).astype(dtype),
        uk_weight=w(heads, nope, r), uv_weight=w(heads, v, r), o_weight=w(hidden, heads * v),
        rms_weight=(1 + 0.1 * rng.standard_normal(hidden)).astype(dtype),
        latent_cache=rng.standard_normal((n_pages, page_size, r + rope)).astype(dtype),
        paged_kv_indptr=indptr, paged_kv_indices=order,
        kv_last_page_len=np.array([(n - 1) % page_size + 1 for n in kv_lens], np.int32),
        positions=np.array([n - 1 for n in kv_lens], np.int32),
        cos_sin=clusterfusion.deepseek_rope_table(rope, 64, 10000.0, YARN),
    )
    return a


YARN = {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096, "beta_fast": 32, "beta_slow": 1,
        "mscale": 0.707, "mscale_all_dim": 0.707}


def rotate_pairs(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    even, odd = x[..., 0::2], x[..., 1::2]
    out = x.copy()
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def mla_oracle(a: Dict[str, Optional[np.ndarray]], eps: float, scale: float):
    """(output, residual_output, latent_cache) in fp32: the expanded form of docs/mla.md 1.2."""
    heads, nope, r = a["uk_weight"].shape
    v = a["uv_weight"].shape[1]
    rope = a["latent_cache"].shape[-1] - r
    page_size = a["latent_cache"].shape[1]
    f = {k: (x.astype(F32) if x is not None and x.dtype != np.int32 else x) for k, x in a.items()}
    res = f["hidden_states"] + (f["residual"] if f["residual"] is not None else 0)
    res = res.astype(a["hidden_states"].dtype)
    cache = a["latent_cache"].copy()
    out = np.zeros(a["output"].shape, F32)
    for b in range(res.shape[0]):
        x = oracle.rmsnorm(res[b].astype(F32), f["rms_weight"], eps)
        if f["q_weight"] is not None:
            q = f["q_weight"] @ x
        else:
            q = f["q_b_weight"] @ oracle.rmsnorm(f["q_a_weight"] @ x, f["q_a_norm"], eps)
        q = q.reshape(heads, nope + rope)
        kv = f["kv_a_weight"] @ x
        c_kv = oracle.rmsnorm(kv[:r], f["kv_a_norm"], eps)
        pos = int(a["positions"][b])
        cos, sin = f["cos_sin"][pos, : rope // 2], f["cos_sin"][pos, rope // 2:]
        k_pe = rotate_pairs(kv[r:], cos, sin)
        q_pe = rotate_pairs(q[:, nope:], cos, sin)
        pages = a["paged_kv_indices"][a["paged_kv_indptr"][b]: a["paged_kv_indptr"][b + 1]]
        kv_len = (len(pages) - 1) * page_size + int(a["kv_last_page_len"][b])
        last = kv_len - 1
        cache[pages[last // page_size], last % page_size] = np.concatenate([c_kv, k_pe]).astype(cache.dtype)
        rows = np.stack([cache[pages[t // page_size], t % page_size] for t in range(kv_len)]).astype(F32)
        o = np.zeros((heads, v), F32)
        for h in range(heads):
            k_nope = rows[:, :r] @ f["uk_weight"][h].T  # [t, nope]
            values = rows[:, :r] @ f["uv_weight"][h].T  # [t, v]
            scores = (k_nope @ q[h, :nope] + rows[:, r:] @ q_pe[h]) * scale
            p = np.exp(scores - scores.max())
            o[h] = (p / p.sum()) @ values
        out[b] = f["o_weight"] @ o.reshape(-1)
    return out, res, cache


ORDER = ("output", "residual_output", "hidden_states", "residual", "q_weight", "kv_a_weight", "kv_a_norm",
         "uk_weight", "uv_weight", "o_weight", "rms_weight", "latent_cache", "paged_kv_indptr", "paged_kv_indices",
         "positions", "cos_sin")


def run(device: Device, a, **kwargs):
    d = {k: device.put(x) for k, x in a.items()}
    clusterfusion.deepseek_decoder_layer(
        *(d[k] for k in ORDER), q_a_weight=d["q_a_weight"], q_a_norm=d["q_a_norm"], q_b_weight=d["q_b_weight"],
        kv_last_page_len=d["kv_last_page_len"], backend="auto" if device.cuda else device.backend,
        check_status=device.cuda, **kwargs)
    return tuple(device.get(d[k]) for k in ("output", "residual_output", "latent_cache"))


@pytest.mark.parametrize("q_lora", [0, 32], ids=["q_proj", "q_lora"])
def test_matches_the_expanded_oracle(device: Device, q_lora: int):
    a = make_case(q_lora=q_lora, seed=3 + q_lora)
    scale = clusterfusion.deepseek_softmax_scale(16, 16, YARN)
    try:
        out, res, cache = run(device, a, softmax_scale=scale)
    except ValueError as e:
        if device.backend != "reference" and ("no MLA kernel" in str(e) or "no fused MLA kernel" in str(e)):
            pytest.skip(str(e))
        raise
    want_out, want_res, want_cache = mla_oracle(a, 1e-6, scale)
    rtol, atol = (2e-3, 2e-3) if device.backend == "reference" else (2e-2, 1e-2)
    np.testing.assert_allclose(out.astype(F32), want_out, rtol=rtol, atol=atol * oracle.rms(want_out))
    np.testing.assert_array_equal(res.view(np.uint8), want_res.view(np.uint8))
    # The new latent rows close to the oracle's; every other row untouched (bit-exact).
    changed = np.any(cache != a["latent_cache"], axis=-1)
    assert changed.sum() <= a["positions"].shape[0]
    np.testing.assert_allclose(cache.astype(F32), want_cache.astype(F32), rtol=1e-2, atol=1e-2)
    np.testing.assert_array_equal(cache[~changed].view(np.uint8), a["latent_cache"][~changed].view(np.uint8))


def test_float32_reference_and_in_place_outputs():
    a = make_case(dtype=np.float32, residual=False, seed=7)
    want_out, want_res, _ = mla_oracle(a, 1e-6, 0.5)
    # residual_output may be hidden_states itself (an in-place decode loop)
    b = dict(a)
    b["residual_output"] = b["hidden_states"]
    clusterfusion.deepseek_decoder_layer(*(b[k] for k in ORDER), kv_last_page_len=b["kv_last_page_len"],
                                         softmax_scale=0.5)
    np.testing.assert_allclose(b["output"], want_out, rtol=1e-4, atol=1e-4 * oracle.rms(want_out))
    np.testing.assert_array_equal(b["hidden_states"], want_res)


def test_rope_table_and_softmax_scale():
    # DeepSeek-V2-Lite: 0.11472 (docs/mla.md 1.3); plain RoPE without rope_scaling.
    assert clusterfusion.deepseek_softmax_scale(128, 64, YARN) == pytest.approx(0.11472, abs=5e-6)
    assert clusterfusion.deepseek_softmax_scale(128, 64) == pytest.approx(192 ** -0.5)
    table = clusterfusion.deepseek_rope_table(8, 5, 10000.0)
    assert table.shape == (5, 8) and table.dtype == np.float32
    np.testing.assert_allclose(table, oracle.rope_cos_sin_table(5, 8, 10000.0), rtol=1e-6, atol=1e-7)
    # YaRN: pairs below the ramp keep their frequency, pairs above it are divided by the factor.
    yarn = clusterfusion.deepseek_rope_table(64, 2, 10000.0, YARN)
    inv_freq = 10000.0 ** (-2.0 * np.arange(32) / 64)
    np.testing.assert_allclose(np.arccos(yarn[1, :10]), inv_freq[:10], rtol=1e-5)
    np.testing.assert_allclose(yarn[1, 24:32], np.cos(inv_freq[24:] / 40), rtol=1e-6)
    with pytest.raises(ValueError, match="qk_rope"):
        clusterfusion.deepseek_rope_table(7, 4)
    with pytest.raises(ValueError, match="rope_scaling"):
        clusterfusion.deepseek_rope_table(8, 4, 10000.0, {"type": "linear"})


def call_with(a, **changes):
    b = dict(a)
    b.update(changes)
    clusterfusion.deepseek_decoder_layer(*(b[k] for k in ORDER), q_a_weight=b["q_a_weight"], q_a_norm=b["q_a_norm"],
                                         q_b_weight=b["q_b_weight"], kv_last_page_len=b["kv_last_page_len"])


@pytest.mark.parametrize("change, error, message", [
    (lambda a: {"uv_weight": a["uv_weight"][:, :, :16].copy()}, ValueError, "uv_weight: has shape"),
    (lambda a: {"o_weight": a["o_weight"][:, :32].copy()}, ValueError, "o_weight: has shape"),
    (lambda a: {"kv_a_weight": a["kv_a_weight"].astype(np.float32)}, TypeError, "kv_a_weight: dtype"),
    (lambda a: {"latent_cache": a["latent_cache"][..., :40].copy()}, ValueError, "q_weight: has shape"),
    (lambda a: {"latent_cache": a["latent_cache"][..., :33].copy()}, ValueError, "qk_rope"),
    (lambda a: {"cos_sin": a["cos_sin"][:, :8].copy()}, ValueError, "cos_sin: has shape"),
    (lambda a: {"q_weight": None}, ValueError, "q_a_weight, q_a_norm and q_b_weight"),
    (lambda a: {"q_a_weight": a["kv_a_weight"]}, ValueError, "not both"),
    (lambda a: {"positions": a["positions"].astype(np.float32)}, TypeError, "positions: dtype"),
    (lambda a: {"paged_kv_indptr": np.array([0, 9, 1], np.int32)}, ValueError, "page table"),
    (lambda a: {"output": a["latent_cache"][:2, 0, :].copy()}, ValueError, "output: has shape"),
    (lambda a: {"hidden_states": [[1.0] * 64] * 2}, TypeError, "hidden_states: expected an array"),
])
def test_bad_arguments_are_one_line_errors(change, error, message):
    a = make_case()
    with pytest.raises(error) as info:
        call_with(a, **change(a))
    text = str(info.value)
    assert message in text and "\n" not in text, text


def test_output_overlapping_the_cache_is_refused():
    a = make_case()
    flat = a["latent_cache"].reshape(-1)
    with pytest.raises(ValueError, match="shares memory"):
        call_with(a, output=flat[: 2 * 64].reshape(2, 64))


# ---- deepseek_moe_layer ----------------------------------------------------------------------------------------------


def make_moe_case(shared: bool = True, batch: int = 3, dtype=np.float16, seed: int = 0):
    """hidden 64, 8 experts of width 16 (top 2), shared experts of width 32; the router scaled x4 so that the choice
    has a clear margin (the kernel routes from x rounded to the activation type, the reference from fp32 x)."""
    rng = np.random.default_rng(seed)
    hidden, experts, ffn, shared_ffn = 64, 8, 16, 32

    def w(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale / math.sqrt(shape[-1])).astype(dtype)

    return dict(
        output=np.zeros((batch, hidden), dtype), residual_output=np.zeros((batch, hidden), dtype),
        hidden_states=w(batch, hidden, scale=8.0), residual=w(batch, hidden, scale=8.0),
        router_weight=(rng.standard_normal((experts, hidden)) * 4 / math.sqrt(hidden)).astype(F32),
        gate_up_weight=w(experts, 2 * ffn, hidden), down_weight=w(experts, hidden, ffn),
        rms_weight=(1 + 0.1 * rng.standard_normal(hidden)).astype(dtype),
        shared_gate_up_weight=w(2 * shared_ffn, hidden) if shared else None,
        shared_down_weight=w(hidden, shared_ffn) if shared else None,
    )


def moe_oracle(a, top_k: int, norm_topk_prob: bool, scaling: float, eps: float, round_x: bool):
    res = (a["hidden_states"].astype(F32) + a["residual"].astype(F32)).astype(a["hidden_states"].dtype)
    out = np.zeros(res.shape, F32)
    ffn = a["gate_up_weight"].shape[1] // 2

    def swiglu(x, gate_up, down):
        g, u = gate_up[: gate_up.shape[0] // 2] @ x, gate_up[gate_up.shape[0] // 2:] @ x
        return down @ (g / (1 + np.exp(-g)) * u)

    for b in range(res.shape[0]):
        x = oracle.rmsnorm(res[b], a["rms_weight"], eps)
        xr = x.astype(res.dtype).astype(F32) if round_x else x
        logits = a["router_weight"] @ xr
        p = np.exp(logits - logits.max())
        p /= p.sum()
        chosen = sorted(range(len(p)), key=lambda e: (-p[e], e))[:top_k]
        g = np.array([p[e] for e in chosen], F32)
        if norm_topk_prob:
            g /= g.sum()
        g *= scaling
        acc = np.zeros(x.shape, F32)
        if a["shared_gate_up_weight"] is not None:
            acc += swiglu(x, a["shared_gate_up_weight"].astype(F32), a["shared_down_weight"].astype(F32))
        for e, ge in zip(chosen, g):
            acc += ge * swiglu(x, a["gate_up_weight"][e].astype(F32), a["down_weight"][e].astype(F32))
        out[b] = acc
    assert ffn > 0
    return out, res


MOE_ORDER = ("output", "residual_output", "hidden_states", "residual", "router_weight", "gate_up_weight",
             "down_weight", "rms_weight")


@pytest.mark.parametrize("shared, norm_topk_prob, scaling", [(True, False, 2.5), (False, True, 1.0)],
                         ids=["shared_scaled", "renormalised"])
def test_moe_layer_matches_the_oracle(device: Device, shared: bool, norm_topk_prob: bool, scaling: float):
    a = make_moe_case(shared=shared, seed=11 if shared else 12)
    d = {k: device.put(x) for k, x in a.items()}
    clusterfusion.deepseek_moe_layer(
        *(d[k] for k in MOE_ORDER), top_k=2, shared_gate_up_weight=d["shared_gate_up_weight"],
        shared_down_weight=d["shared_down_weight"], norm_topk_prob=norm_topk_prob, routed_scaling=scaling,
        backend="auto" if device.cuda else device.backend, check_status=device.cuda)
    out, res = device.get(d["output"]), device.get(d["residual_output"])
    want, want_res = moe_oracle(a, 2, norm_topk_prob, scaling, 1e-6, round_x=device.backend != "reference")
    rtol, atol = (2e-3, 2e-3) if device.backend == "reference" else (2e-2, 1e-2)
    np.testing.assert_allclose(out.astype(F32), want, rtol=rtol, atol=atol * oracle.rms(want))
    np.testing.assert_array_equal(res.view(np.uint8), want_res.view(np.uint8))


@pytest.mark.parametrize("change, error, message", [
    (lambda a: {"router_weight": a["router_weight"].astype(np.float16)}, TypeError, "router_weight: dtype"),
    (lambda a: {"gate_up_weight": a["gate_up_weight"][:, :31].copy()}, ValueError, "gate_up_weight: has shape"),
    (lambda a: {"down_weight": a["down_weight"][:4].copy()}, ValueError, "down_weight: has shape"),
    (lambda a: {"shared_down_weight": None}, ValueError, "pass both"),
])
def test_moe_bad_arguments_are_one_line_errors(change, error, message):
    a = make_moe_case()
    a.update(change(a))
    with pytest.raises(error) as info:
        clusterfusion.deepseek_moe_layer(*(a[k] for k in MOE_ORDER), top_k=2,
                                         shared_gate_up_weight=a["shared_gate_up_weight"],
                                         shared_down_weight=a["shared_down_weight"])
    text = str(info.value)
    assert message in text and "\n" not in text, text
    with pytest.raises(ValueError, match="top_k: 9 outside"):
        b = make_moe_case()
        clusterfusion.deepseek_moe_layer(*(b[k] for k in MOE_ORDER), top_k=9)
    with pytest.raises(ValueError, match="topk_method"):
        b = make_moe_case()
        clusterfusion.deepseek_moe_layer(*(b[k] for k in MOE_ORDER), top_k=2, topk_method="noaux_tc")
