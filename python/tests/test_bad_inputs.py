"""Bad arguments give one-line ValueError / TypeError naming the argument, never a crash."""
from __future__ import annotations

import os
import subprocess
import sys

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
    with pytest.raises(ValueError, match="output: shares memory with residual_output"):
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


def test_integer_and_number_arguments_give_one_line_errors():
    """Out-of-range ints used to reach nanobind and come back as a multi-line "incompatible function arguments"."""
    cases = [
        (dict(layer_id=2**40), ValueError, r"layer_id: 1099511627776 outside \[0, 2147483647\]"),
        (dict(layer_id=1.0), TypeError, "layer_id: expected an int, got float"),
        (dict(layer_id=True), TypeError, "layer_id: expected an int, got bool"),
        (dict(eps="small"), TypeError, "eps: expected a number"),
    ]
    for changes, error, message in cases:
        with pytest.raises(error, match=message) as info:
            call(changes)
        assert "\n" not in str(info.value)
    for kwargs, error, message in [
        (dict(cluster_size=2**70), ValueError, "cluster_size: .* outside"),
        (dict(max_batch=-1), ValueError, "max_batch: -1 outside"),
        (dict(emu_seed=-5), ValueError, "emu_seed: -5 outside"),
        (dict(emu_seed=2**64), ValueError, "emu_seed: .* outside"),
    ]:
        with pytest.raises(error, match=message) as info:
            call(**kwargs)
        assert "\n" not in str(info.value)


def test_kv_cache_shape_errors_name_the_argument():
    """A bad kv_cache_shape used to surface as a bare int() error."""
    for shape, error, message in [
        ((16, "x", 64), TypeError, r"kv_cache_shape\[1\]: expected an int, got str"),
        ((16.0, 2, 64), TypeError, r"kv_cache_shape\[0\]: expected an int, got float"),
        ((16, 2), ValueError, "kv_cache_shape: 2 dimensions"),
        ((16, 0, 2, 64), ValueError, r"kv_cache_shape\[1\]: 0 outside"),
        ("16,2,64", TypeError, "kv_cache_shape: expected a sequence of ints, got str"),
        (16, TypeError, "kv_cache_shape: expected a sequence of ints, got int"),
    ]:
        with pytest.raises(error, match=message):
            call(kv_cache_shape=shape)


def test_empty_arrays_say_what_is_wrong_with_their_shape():
    """Zero-size arrays used to be reported as "not contiguous"."""
    for changes, message in [
        (dict(hidden_states=np.zeros((0, 256), np.float16)), "batch 0 outside"),
        (dict(output=np.zeros((2, 0), np.float16)), r"output: has shape \(2, 0\), expected \(2, 256\)"),
        (dict(paged_kv_indices=np.zeros(0, np.int32)), "paged_kv_indices: has 0 entries"),
        (dict(k_cache=np.zeros((0, 2, 64), np.float16)), "k_cache: shape .* has an empty dimension"),
    ]:
        with pytest.raises(ValueError, match=message):
            call(changes)


def test_outputs_must_not_overlap_weights_caches_or_each_other():
    """Only identical pointers were refused: outputs inside a weight or the KV cache, and K / V pools that overlap
    at an offset, were accepted and silently corrupted them."""
    c = oracle.make_decoder_case(kv_lens=(4, 7), page_size=1)
    a = c.arrays
    qkv = a["qkv_weight"].copy()
    with pytest.raises(ValueError, match="output: shares memory with qkv_weight"):
        call(dict(qkv_weight=qkv, output=qkv[:2]), case=c)
    k = a["k_cache"].copy()
    with pytest.raises(ValueError, match="residual_output: shares memory with k_cache"):
        call(dict(k_cache=k, residual_output=k.reshape(-1)[:512].reshape(2, 256)), case=c)
    pool = np.zeros((a["k_cache"].shape[0] + 1,) + a["k_cache"].shape[1:], np.float16)
    with pytest.raises(ValueError, match="k_cache: shares memory with v_cache"):
        call(dict(k_cache=pool[:-1], v_cache=pool[1:]), case=c)
    with pytest.raises(ValueError, match="k_cache: shares memory with v_cache"):
        call(dict(k_cache=a["k_cache"], v_cache=a["k_cache"]), case=c)
    hidden = np.zeros((3, 256), np.float16)
    hidden[:2] = a["hidden_states"]
    with pytest.raises(ValueError, match="output: shares memory with hidden_states without being exactly that array"):
        call(dict(hidden_states=hidden[:2], output=hidden[1:3]), case=c)
    with pytest.raises(ValueError, match="output: shares memory with residual_output"):
        out = np.zeros((2, 256), np.float16)
        call(dict(output=out, residual_output=out), case=c)
    with pytest.raises(ValueError, match="output: shares memory with paged_kv_indices"):
        table = np.zeros(1024, np.int32)
        table[:11] = a["paged_kv_indices"]
        call(dict(paged_kv_indices=table[:11], output=table[:256].view(np.float16).reshape(2, 256)), case=c)
    # In place stays allowed: output is hidden_states, residual_output is residual.
    h, r = a["hidden_states"].copy(), a["residual"].copy()
    call(dict(hidden_states=h, output=h, residual=r, residual_output=r), case=c)


def test_kv_pools_beyond_32_bit_positions_are_refused(tmp_path):
    """A pool of more than 2^31 - 1 positions made (pages - 1) * page_size + last overflow int: a crash or silently
    wrong attention. The pools are sparse memory maps, never touched."""
    shape = (2, 2**30 + 1, 1, 2)  # 2^31 + 2 positions of 1 x 2 float16 values
    try:
        k = np.memmap(tmp_path / "k", np.float16, "w+", shape=shape)
        v = np.memmap(tmp_path / "v", np.float16, "w+", shape=shape)
    except (OSError, ValueError) as e:
        pytest.skip(f"no room for sparse 8 GiB files here: {e}")
    hidden = np.zeros((1, 8), np.float16)
    with pytest.raises(ValueError, match="k_cache: shape .* holds 2147483650 KV positions"):
        clusterfusion.llama_decoder_layer(
            np.zeros_like(hidden), np.zeros_like(hidden), hidden, None, np.zeros((12, 8), np.float16),
            np.zeros((8, 8), np.float16), np.array([0, 2], np.int32), np.array([0, 1], np.int32), k, v, 0,
            np.ones(8, np.float16), 1e-5, np.array([5], np.int64), kv_last_page_len=np.array([3], np.int32))


@pytest.mark.parametrize("name", ["model.gguf", "model.safetensors", "weights.bin"])
def test_a_fifo_as_the_model_is_refused_at_once(tmp_path, name):
    """Opening a FIFO for reading waits for a writer: Model() used to hang forever."""
    fifo = tmp_path / name
    os.mkfifo(fifo)
    code = f"import clusterfusion; clusterfusion.Model({str(fifo)!r}, backend='cpu')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "ValueError" in done.stderr and "a FIFO" in done.stderr, done.stderr
