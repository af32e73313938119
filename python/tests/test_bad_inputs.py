"""Bad arguments give one-line ValueError / TypeError naming the argument, never a crash."""
from __future__ import annotations

import numpy as np
import pytest

import clusterfusion
import oracle
from conftest import gpu_ready, gpu_skip_reason, torch_module

ORDER = ("output", "residual_output", "hidden_states", "residual", "qkv_weight", "o_weight", "paged_kv_indptr",
         "paged_kv_indices", "k_cache", "v_cache", "layer_id", "rms_weight", "eps", "positions", "cos_sin")


def call(changes=None, case=None, **kwargs):
    c = case or oracle.make_decoder_case(kv_lens=(4, 7), page_size=1)
    args = dict(c.arrays, layer_id=0, eps=1e-5)
    args.pop("qkv_bias")
    args.pop("kv_last_page_len")
    args.update(changes or {})
    clusterfusion.llama_decoder_layer(*(args[k] for k in ORDER), **kwargs)


def test_good_call_passes():
    call()


@pytest.mark.parametrize(
    "changes, error, message",
    [
        (dict(hidden_states=np.zeros((2, 256), np.float64)), TypeError, "hidden_states: dtype is float64"),
        (dict(qkv_weight=np.zeros((512, 256), np.float32)), TypeError, "qkv_weight: dtype is float32 but hidden_states"),
        (dict(o_weight="weights"), TypeError, "o_weight: expected an array"),
        (dict(hidden_states=None), TypeError, "hidden_states: got None"),
        (dict(positions=np.array([3, 6], np.float32)), TypeError, "positions: dtype is float32"),
        (dict(paged_kv_indptr=np.array([0, 4, 11], np.int64)), TypeError, "paged_kv_indptr: dtype is int64"),
        (dict(output=np.zeros((3, 256), np.float16)), ValueError, r"output: has shape \(3, 256\), expected \(2, 256\)"),
        (dict(qkv_weight=np.zeros((500, 256), np.float16)), ValueError, "qkv_weight: has shape"),
        (dict(o_weight=np.zeros((256, 100), np.float16)), ValueError, "o_weight: has shape"),
        (dict(rms_weight=np.zeros(255, np.float16)), ValueError, "rms_weight: has shape"),
        (dict(k_cache=np.zeros((16, 2), np.float16)), ValueError, "k_cache: has shape"),
        (dict(v_cache=np.zeros((16, 2, 32), np.float16)), ValueError, "v_cache: has shape"),
        (dict(hidden_states=np.zeros((2, 512), np.float16)[:, ::2]), ValueError, "hidden_states: the array is not contiguous"),
        (dict(hidden_states=np.zeros((17, 256), np.float16)), ValueError, "batch 17 outside"),
        (dict(paged_kv_indices=np.array([0], np.int32)), ValueError, "paged_kv_indices: has 1 entries"),
        (dict(eps=0.0), ValueError, "eps"),
        (dict(cos_sin=np.zeros((8, 63), np.float32)), ValueError, "cos_sin: has shape"),
        (dict(layer_id=-1), ValueError, "layer_id"),
    ],
)
def test_argument_checks(changes, error, message):
    with pytest.raises(error, match=message):
        call(changes)


def test_page_table_checks_name_the_entry():
    c = oracle.make_decoder_case(kv_lens=(4, 7), page_size=1)
    bad = c.arrays["paged_kv_indices"].copy()
    bad[5] = 999
    with pytest.raises(ValueError, match=r"sequence 1: kv_indices\[5\] = 999 outside"):
        call(dict(paged_kv_indices=bad), case=c)
    with pytest.raises(ValueError, match=r"kv_indptr\[2\] = 12 outside"):
        call(dict(paged_kv_indptr=np.array([0, 4, 12], np.int32)), case=c)
    with pytest.raises(ValueError, match="position 400 outside"):
        call(dict(positions=np.array([3, 400], np.int64)), case=c)
    with pytest.raises(ValueError, match="positions"):
        call(dict(positions=np.array([-1, 6], np.int64)), case=c)


def test_keyword_checks():
    with pytest.raises(ValueError, match="rope_style: 'sideways'"):
        call(rope_style="sideways")
    with pytest.raises(ValueError, match="backend: 'cuda' does not run on CPU arrays"):
        call(backend="cuda")
    with pytest.raises(TypeError, match="backend 'emu' runs the fused kernel"):
        call(case=oracle.make_decoder_case(dtype=np.float32, kv_lens=(4, 7)), backend="emu")
    with pytest.raises(ValueError, match="cluster_size 3"):
        call(backend="emu", cluster_size=3)
    with pytest.raises(ValueError, match="kv_last_page_len: has shape"):
        call(kv_last_page_len=np.ones(3, np.int32))
    with pytest.raises(ValueError, match=r"kv_last_page_len 2 outside \[1, 1\]"):
        call(kv_last_page_len=np.array([1, 2], np.int32))


def test_read_only_output_and_pointer_tables_on_cpu():
    c = oracle.make_decoder_case(kv_lens=(4, 7))
    frozen = c.arrays["output"].copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="output: the array is read-only"):
        call(dict(output=frozen), case=c)
    table = np.zeros(2, np.uint64)
    with pytest.raises(ValueError, match="per-layer cache pointers is only accepted with CUDA"):
        call(dict(k_cache=table, v_cache=table), kv_cache_shape=(16, 2, 64))
    with pytest.raises(ValueError, match="layer_id: 2 outside the 2 per-layer arrays of k_cache"):
        call(dict(k_cache=[c.arrays["k_cache"]] * 2, v_cache=[c.arrays["v_cache"]] * 2, layer_id=2))


def test_ffn_and_rms_norm_checks():
    x = np.zeros((2, 64), np.float16)
    w = np.ones(64, np.float16)
    with pytest.raises(ValueError, match="output and residual_output must be different"):
        clusterfusion.llama_ffn_layer(x, x, x, None, np.zeros((64, 64), np.float16), np.zeros((64, 32), np.float16),
                                      w, 1e-5)
    with pytest.raises(ValueError, match="gate_up_weight: has shape"):
        clusterfusion.llama_ffn_layer(np.zeros_like(x), np.zeros_like(x), x, None, np.zeros((63, 64), np.float16),
                                      np.zeros((64, 32), np.float16), w, 1e-5)
    with pytest.raises(ValueError, match="weight: has shape"):
        clusterfusion.rms_norm(np.zeros_like(x), x, np.ones(32, np.float16))
    with pytest.raises(ValueError, match="residual_output: is given without residual"):
        clusterfusion.rms_norm(np.zeros_like(x), x, w, residual_output=np.zeros_like(x))


def test_cuda_module_message_without_cuda():
    if clusterfusion.cuda_build_error() == "":
        pytest.skip("the CUDA module is built here")
    assert not clusterfusion.cuda_available()
    assert "nvcc" in clusterfusion.cuda_build_error() or clusterfusion.cuda_build_error()


@pytest.mark.skipif(not gpu_ready(), reason=gpu_skip_reason())
def test_mixed_devices_and_cuda_dtypes():
    torch = torch_module()
    c = oracle.make_decoder_case(kv_lens=(4, 7))
    on_gpu = {k: torch.from_numpy(v).cuda() if v is not None else None for k, v in c.arrays.items()}
    with pytest.raises(ValueError, match="o_weight: is on the CPU"):
        call(dict(on_gpu, o_weight=c.arrays["o_weight"]), case=c)
    f32 = oracle.make_decoder_case(dtype=np.float32, kv_lens=(4, 7))
    with pytest.raises(TypeError, match="float16 or bfloat16"):
        call({k: torch.from_numpy(v).cuda() if v is not None else None for k, v in f32.arrays.items()}, case=f32)
    with pytest.raises(ValueError, match="does not run on CUDA tensors"):
        call(on_gpu, case=c, backend="emu")
