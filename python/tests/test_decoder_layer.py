"""llama_decoder_layer against the numpy oracle (oracle.py) on every backend: the CPU reference, the fused kernel on
the CPU emulator and (with a GPU) the fused kernel on CUDA tensors."""
from __future__ import annotations

import numpy as np
import pytest

import clusterfusion
import oracle
from conftest import Device, gpu_ready, gpu_skip_reason, torch_module

ARGS = ("output", "residual_output", "hidden_states", "residual", "qkv_weight", "o_weight", "paged_kv_indptr",
        "paged_kv_indices", "k_cache", "v_cache")

CASES = {
    # The seed's conventions: token pool (page size 1), int64 positions, cos/sin table, NeoX pairs, MHA-style GQA 2.
    "seed": dict(),
    # Pages of 16 with kv_last_page_len, GPT-J pairs, q/k/v bias, int32 positions, no residual (first layer),
    # partial rotary (32 of 64 dims), group of 4.
    "paged": dict(page_size=16, kv_lens=(40, 3, 16, 17), rope_style="gptj", bias=True, residual=False, rot_dim=32,
                  n_heads=8, n_kv_heads=2, positions_dtype=np.int32, seed=1),
    # RoPE computed from theta (no table), pages of 4, head_dim 128, MHA.
    "computed_rope": dict(page_size=4, cos_sin=False, head_dim=128, n_heads=2, n_kv_heads=2, kv_lens=(9, 1), seed=2),
}


def run_layer(device: Device, c: oracle.DecoderCase, **kwargs):
    a = {k: device.put(v) for k, v in c.arrays.items()}
    clusterfusion.llama_decoder_layer(
        a["output"], a["residual_output"], a["hidden_states"], a["residual"], a["qkv_weight"], a["o_weight"],
        a["paged_kv_indptr"], a["paged_kv_indices"], a["k_cache"], a["v_cache"], 0, a["rms_weight"], c.eps,
        a["positions"], a["cos_sin"], kv_last_page_len=a["kv_last_page_len"], qkv_bias=a["qkv_bias"],
        rope_style=c.rope_style, backend="auto" if device.cuda else device.backend, check_status=device.cuda,
        **kwargs)
    return tuple(device.get(a[k]) for k in ("output", "residual_output", "k_cache", "v_cache"))


def appended_rows(c: oracle.DecoderCase):
    """(page, offset) of each sequence's new token."""
    a = c.arrays
    rows = []
    for b in range(c.batch):
        slot = c.kv_lens[b] - 1
        page = a["paged_kv_indices"][a["paged_kv_indptr"][b] + slot // c.page_size]
        rows.append((int(page), slot % c.page_size))
    return rows


def check_against_oracle(c: oracle.DecoderCase, got, backend: str):
    want_out, want_res, want_k, want_v = oracle.decoder_layer(c)
    out, res, k, v = got
    # The reference rounds only its outputs and the cache; the fused kernel also rounds x, q, the softmax
    # probabilities and the attention output to the activation type (docs/attention.md, rounding points).
    rtol, atol = (2e-3, 2e-3) if backend == "reference" else (2e-2, 1e-2)
    if c.dtype == np.float32:
        rtol, atol = 1e-4, 1e-4
    scale = oracle.rms(want_out)
    assert np.isfinite(out.astype(np.float32)).all()
    np.testing.assert_allclose(out.astype(np.float32), want_out.astype(np.float32), rtol=rtol, atol=atol * scale)
    # residual_output = hidden + residual rounded once: bit-exact everywhere.
    np.testing.assert_array_equal(res.view(np.uint8), want_res.view(np.uint8))
    # The cache: appended rows close to the oracle's k, v; every other entry untouched (bit-exact).
    k4 = k.reshape(-1, c.page_size, c.n_kv_heads, c.head_dim)
    v4 = v.reshape(-1, c.page_size, c.n_kv_heads, c.head_dim)
    wk4 = want_k.reshape(k4.shape)
    wv4 = want_v.reshape(v4.shape)
    kv_tol = 1e-5 if c.dtype == np.float32 else 1e-2
    mask = np.ones(k4.shape[:2], bool)
    for page, offset in appended_rows(c):
        mask[page, offset] = False
        np.testing.assert_allclose(k4[page, offset].astype(np.float32), wk4[page, offset].astype(np.float32),
                                   rtol=kv_tol, atol=kv_tol)
        np.testing.assert_allclose(v4[page, offset].astype(np.float32), wv4[page, offset].astype(np.float32),
                                   rtol=kv_tol, atol=kv_tol)
    orig_k = c.arrays["k_cache"].reshape(k4.shape)
    orig_v = c.arrays["v_cache"].reshape(v4.shape)
    np.testing.assert_array_equal(k4[mask].view(np.uint8), orig_k[mask].view(np.uint8))
    np.testing.assert_array_equal(v4[mask].view(np.uint8), orig_v[mask].view(np.uint8))


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_numpy(device, case):
    c = oracle.make_decoder_case(**CASES[case])
    check_against_oracle(c, run_layer(device, c), device.backend)


def test_float32_reference():
    c = oracle.make_decoder_case(dtype=np.float32, page_size=8, kv_lens=(12, 30), seed=3)
    check_against_oracle(c, run_layer(Device("reference"), c), "reference")


def test_outputs_may_be_the_inputs(device):
    """output over hidden_states and residual_output over residual (the seed updates in place)."""
    c = oracle.make_decoder_case(seed=4)
    want_out, want_res, _, _ = oracle.decoder_layer(c)
    a = {k: device.put(v.copy() if v is not None else None) for k, v in c.arrays.items()}
    clusterfusion.llama_decoder_layer(
        a["hidden_states"], a["residual"], a["hidden_states"], a["residual"], a["qkv_weight"], a["o_weight"],
        a["paged_kv_indptr"], a["paged_kv_indices"], a["k_cache"], a["v_cache"], 0, a["rms_weight"], c.eps,
        a["positions"], a["cos_sin"], backend="auto" if device.cuda else device.backend)
    out, res = device.get(a["hidden_states"]), device.get(a["residual"])
    tol = 2e-3 if device.backend == "reference" else 2e-2
    np.testing.assert_allclose(out.astype(np.float32), want_out.astype(np.float32), rtol=tol,
                               atol=tol * oracle.rms(want_out))
    np.testing.assert_array_equal(res.view(np.uint16), want_res.view(np.uint16))


def test_per_layer_cache_list_uses_layer_id():
    c = oracle.make_decoder_case(seed=5)
    a = c.arrays
    other_k, other_v = a["k_cache"].copy(), a["v_cache"].copy()
    k_layers, v_layers = [other_k, a["k_cache"].copy()], [other_v, a["v_cache"].copy()]
    clusterfusion.llama_decoder_layer(
        a["output"], a["residual_output"], a["hidden_states"], a["residual"], a["qkv_weight"], a["o_weight"],
        a["paged_kv_indptr"], a["paged_kv_indices"], k_layers, v_layers, 1, a["rms_weight"], c.eps, a["positions"],
        a["cos_sin"])
    want_out, _, want_k, _ = oracle.decoder_layer(c)
    np.testing.assert_array_equal(k_layers[0], a["k_cache"])  # layer 0 untouched
    np.testing.assert_allclose(k_layers[1].astype(np.float32), want_k.astype(np.float32), rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(a["output"].astype(np.float32), want_out.astype(np.float32), rtol=2e-3,
                               atol=2e-3 * oracle.rms(want_out))


def test_emulator_matches_reference_closely():
    """The emulated fused kernel and the CPU reference agree on a SmolLM2-135M-shaped layer (hidden 576, 9 query
    heads over 3 KV heads, head_dim 64, GPT-J pairs as in its GGUF file)."""
    c = oracle.make_decoder_case(hidden=576, n_heads=9, n_kv_heads=3, kv_lens=(21,), rope_style="gptj", seed=6)
    ref = run_layer(Device("reference"), oracle.make_decoder_case(hidden=576, n_heads=9, n_kv_heads=3, kv_lens=(21,),
                                                                   rope_style="gptj", seed=6))
    emu = run_layer(Device("emu"), c)
    np.testing.assert_allclose(emu[0].astype(np.float32), ref[0].astype(np.float32), rtol=2e-2,
                               atol=1e-2 * oracle.rms(ref[0]))
    np.testing.assert_array_equal(emu[1].view(np.uint16), ref[1].view(np.uint16))


def test_bfloat16_torch_cpu_tensors():
    torch = torch_module()
    if torch is None:
        pytest.skip("torch is not installed (bfloat16 arrays come from torch)")
    c = oracle.make_decoder_case(dtype=np.float32, seed=7)
    t = {k: (torch.from_numpy(v).to(torch.bfloat16) if v is not None and v.dtype == np.float32 and k != "cos_sin"
             else (torch.from_numpy(v) if v is not None else None)) for k, v in c.arrays.items()}
    clusterfusion.llama_decoder_layer(
        t["output"], t["residual_output"], t["hidden_states"], t["residual"], t["qkv_weight"], t["o_weight"],
        t["paged_kv_indptr"], t["paged_kv_indices"], t["k_cache"], t["v_cache"], 0, t["rms_weight"], c.eps,
        t["positions"], t["cos_sin"])
    # The oracle on the same bf16-rounded inputs, in fp32.
    rounded = {k: (t[k].float().numpy() if t[k] is not None and t[k].dtype == torch.bfloat16 else c.arrays[k])
               for k in c.arrays}
    c.arrays.update(rounded)
    want_out, _, _, _ = oracle.decoder_layer(c)
    np.testing.assert_allclose(t["output"].float().numpy(), want_out, rtol=1e-2, atol=1e-2 * oracle.rms(want_out))


@pytest.mark.skipif(not gpu_ready(), reason=gpu_skip_reason())
def test_cuda_seed_pointer_tables_and_determinism():
    """The seed's form: uint64 tables of per-layer cache pointers indexed by layer_id; two runs give equal bits."""
    torch = torch_module()
    c = oracle.make_decoder_case(seed=8)
    dev = Device("cuda")
    a = {k: dev.put(v) for k, v in c.arrays.items()}
    spare_k, spare_v = torch.zeros_like(a["k_cache"]), torch.zeros_like(a["v_cache"])
    k_ptrs = torch.tensor([spare_k.data_ptr(), a["k_cache"].data_ptr()], dtype=torch.uint64, device="cuda")
    v_ptrs = torch.tensor([spare_v.data_ptr(), a["v_cache"].data_ptr()], dtype=torch.uint64, device="cuda")
    outputs = []
    for _ in range(2):
        k_before, v_before = a["k_cache"].clone(), a["v_cache"].clone()
        clusterfusion.llama_decoder_layer(
            a["output"], a["residual_output"], a["hidden_states"], a["residual"], a["qkv_weight"], a["o_weight"],
            a["paged_kv_indptr"], a["paged_kv_indices"], k_ptrs, v_ptrs, 1, a["rms_weight"], c.eps, a["positions"],
            a["cos_sin"], kv_cache_shape=tuple(a["k_cache"].shape), check_status=True)
        outputs.append(dev.get(a["output"]).copy())
        if len(outputs) == 1:
            got = (outputs[0], dev.get(a["residual_output"]), dev.get(a["k_cache"]), dev.get(a["v_cache"]))
            check_against_oracle(c, got, "cuda")
        a["k_cache"].copy_(k_before)
        a["v_cache"].copy_(v_before)
    np.testing.assert_array_equal(outputs[0].view(np.uint16), outputs[1].view(np.uint16))
    assert not spare_k.any() and not spare_v.any()  # layer 0's pool untouched


@pytest.mark.skipif(not gpu_ready(), reason=gpu_skip_reason())
def test_cuda_graph_capture_replays_the_call():
    """After a first (plan-building) call, the layer is captured into a torch CUDA graph; a replay gives the eager
    call's bits. The call runs on torch's current stream, which is the capture stream inside torch.cuda.graph."""
    torch = torch_module()
    c = oracle.make_decoder_case(seed=9)
    dev = Device("cuda")
    a = {k: dev.put(v) for k, v in c.arrays.items()}
    k_start, v_start = a["k_cache"].clone(), a["v_cache"].clone()

    def layer():
        clusterfusion.llama_decoder_layer(
            a["output"], a["residual_output"], a["hidden_states"], a["residual"], a["qkv_weight"], a["o_weight"],
            a["paged_kv_indptr"], a["paged_kv_indices"], a["k_cache"], a["v_cache"], 0, a["rms_weight"], c.eps,
            a["positions"], a["cos_sin"], max_batch=16)

    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        layer()  # builds the plan outside the capture
    side.synchronize()
    eager_out, eager_k = a["output"].clone(), a["k_cache"].clone()
    a["k_cache"].copy_(k_start)
    a["v_cache"].copy_(v_start)
    a["output"].zero_()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        layer()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(a["output"], eager_out) and torch.equal(a["k_cache"], eager_k)
    assert not torch.equal(eager_out, torch.zeros_like(eager_out))
