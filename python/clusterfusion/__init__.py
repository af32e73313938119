"""clusterfusion: fused Llama decoder blocks built on thread-block clusters (NVIDIA Hopper), with a CPU reference,
a CPU emulator of the cluster kernels, and a small generation engine.

Kernels (the seed's ``llama_decoder_layer`` and friends) take arrays of any framework that speaks DLPack: numpy
arrays on the CPU, torch or cupy tensors on the CPU or a CUDA GPU. CUDA tensors run the fused kernels; CPU arrays
run the fp32 reference (or, with ``backend="emu"``, the fused kernels on the CPU emulator), so one test runs
everywhere. Every argument is checked: ValueError for shapes, devices, strides and values, TypeError for
non-arrays and wrong dtypes.

    >>> import clusterfusion
    >>> model = clusterfusion.Model()                      # the default model (scripts/setup.sh fetches it)
    >>> for piece in model.generate("Why is the sky blue?", max_new_tokens=64):
    ...     print(piece, end="", flush=True)
"""
from __future__ import annotations

import importlib
import math
import operator
import sys
import threading
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from . import _core

__version__: str = _core.__version__

__all__ = [
    "llama_decoder_layer",
    "llama_ffn_layer",
    "deepseek_decoder_layer",
    "deepseek_moe_layer",
    "deepseek_rope_table",
    "deepseek_softmax_scale",
    "rms_norm",
    "Model",
    "cuda_available",
    "cuda_build_error",
    "backends",
    "default_model_path",
    "clear_plans",
]

ArrayLike = Any  # numpy.ndarray, torch.Tensor, cupy.ndarray, or any object with __dlpack__

# ---- the CUDA module ---------------------------------------------------------------------------------------------

_cuda_module: Any = None
_cuda_import_error: Optional[str] = None


def _cuda_ext() -> Any:
    """The CUDA extension module, imported on first use; RuntimeError saying why when it cannot be had."""
    global _cuda_module, _cuda_import_error
    if _cuda_module is None and _cuda_import_error is None:
        try:
            _cuda_module = importlib.import_module(__name__ + "._cuda")
        except ImportError as e:
            _cuda_import_error = str(e)
    if _cuda_module is None:
        raise RuntimeError(
            "clusterfusion: CUDA tensors need the CUDA module, which could not be loaded ("
            + cuda_build_error()
            + ")"
        )
    return _cuda_module


def cuda_build_error() -> str:
    """Why the CUDA module is unavailable ('' when it loaded): e.g. the package was built without nvcc."""
    if _cuda_module is not None:
        return ""
    if _cuda_import_error is None:
        try:
            _cuda_ext()
        except RuntimeError:
            pass
    if _cuda_import_error is None:
        return ""
    if "No module named" in _cuda_import_error and "_cuda" in _cuda_import_error:
        return "this build has no CUDA module: nvcc was not found when the package was built"
    return _cuda_import_error


def cuda_available() -> bool:
    """True when the CUDA module is built and loads, and at least one CUDA device is visible."""
    try:
        return _cuda_ext().device_count() > 0
    except RuntimeError:
        return False


def clear_plans() -> None:
    """Frees the cached kernel plans of the CUDA module (one per layer and shape, built on a layer's first call)."""
    if _cuda_module is not None:
        _cuda_module.clear_plans()


def default_model_path() -> str:
    """Where Model() looks for the default model (SmolLM2-135M-Instruct Q4_1; scripts/setup.sh puts it there)."""
    return _core.default_model_path()


def backends() -> List[Dict[str, Any]]:
    """The engine's backends for Model(backend=...): [{'name', 'built', 'description'}]."""
    return list(_core.backend_list())


# ---- array helpers -------------------------------------------------------------------------------------------------

_DL_CUDA = 2
_DL_CUDA_MANAGED = 13


def _on_cuda(x: Any) -> bool:
    is_cuda = getattr(x, "is_cuda", None)  # torch: an attribute, cheaper than __dlpack_device__
    if isinstance(is_cuda, bool):
        return is_cuda
    device = getattr(x, "__dlpack_device__", None)
    if device is None:
        return False
    try:
        kind = device()[0]
    except Exception:  # noqa: BLE001 - not an array we understand: the module reports it
        return False
    return kind in (_DL_CUDA, _DL_CUDA_MANAGED)


def _plain(x: Any) -> Any:
    """A torch tensor that requires grad cannot be exported through DLPack: use its detached view (same memory)."""
    if getattr(x, "requires_grad", False):
        return x.detach()
    return x


def _exporter() -> Tuple[Any, Any]:
    """(torch.Tensor, torch's C DLPack exporter) once torch is imported, else (None, None). Exporting a tensor
    through torch._C._to_dlpack skips the Python body of Tensor.__dlpack__, several microseconds per tensor."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None, None
    return getattr(torch, "Tensor", None), getattr(getattr(torch, "_C", None), "_to_dlpack", None)


def _arrays(*objects: Any) -> List[Any]:
    """The array arguments as the extension takes them: torch tensors as DLPack capsules (detached), the rest as is."""
    tensor_type, export = _exporter()
    if export is None:
        return [_plain(x) for x in objects]
    return [export(_plain(x)) if isinstance(x, tensor_type) else _plain(x) for x in objects]


def _stream_handle(x: Any, stream: Any) -> int:
    """The cudaStream_t (as int) to run on: the given one, else the framework's current stream for x's device."""
    if stream is not None:
        if isinstance(stream, int) and not isinstance(stream, bool):
            return _int_arg(stream, "stream", 0, _UINT64_MAX)
        for attribute in ("cuda_stream", "ptr", "handle"):  # torch.cuda.Stream, cupy Stream, generic
            value = getattr(stream, attribute, None)
            if isinstance(value, int):
                return value
        raise TypeError(
            "stream: expected an int (cudaStream_t), a torch.cuda.Stream or a cupy Stream, got "
            + type(stream).__name__
        )
    module = type(x).__module__
    if module.startswith("torch"):
        torch = sys.modules["torch"]
        raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)  # an int, without a Stream object
        if raw is not None:
            return int(raw(x.get_device()))
        return int(torch.cuda.current_stream(x.device).cuda_stream)
    if module.startswith("cupy"):
        import cupy  # type: ignore[import-not-found]

        return int(cupy.cuda.get_current_stream().ptr)
    return 0


def _layer_cache(cache: Any, layer_id: int, name: str) -> Any:
    if isinstance(cache, (list, tuple)):
        if not isinstance(layer_id, int) or not 0 <= layer_id < len(cache):
            raise ValueError(f"layer_id: {layer_id} outside the {len(cache)} per-layer arrays of {name}")
        return cache[layer_id]
    return cache


_INT32_MAX = 2**31 - 1
_UINT64_MAX = 2**64 - 1


def _int_arg(value: Any, name: str, low: int, high: int) -> int:
    """value as an int in [low, high]: TypeError for a non-integer (bool and float included), ValueError, one line,
    for one out of range (nanobind would answer both with a multi-line signature listing)."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    number = operator.index(value)
    if not low <= number <= high:
        raise ValueError(f"{name}: {number} outside [{low}, {high}]")
    return number


def _float_arg(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise TypeError(f"{name}: expected a number, got {value!r}") from None


def _shape_tuple(shape: Optional[Sequence[int]]) -> Optional[List[int]]:
    if shape is None:
        return None
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise TypeError(f"kv_cache_shape: expected a sequence of ints, got {type(shape).__name__}")
    dims = list(shape)
    if len(dims) not in (3, 4):
        raise ValueError(
            f"kv_cache_shape: {len(dims)} dimensions, expected (slots, n_kv_heads, head_dim) or "
            "(n_pages, page_size, n_kv_heads, head_dim)"
        )
    return [_int_arg(d, f"kv_cache_shape[{i}]", 1, _INT32_MAX) for i, d in enumerate(dims)]


# ---- kernels ----------------------------------------------------------------------------------------------------


def llama_decoder_layer(
    output: ArrayLike,
    residual_output: ArrayLike,
    hidden_states: ArrayLike,
    residual: Optional[ArrayLike],
    qkv_weight: ArrayLike,
    o_weight: ArrayLike,
    paged_kv_indptr: ArrayLike,
    paged_kv_indices: ArrayLike,
    k_cache: Union[ArrayLike, Sequence[ArrayLike]],
    v_cache: Union[ArrayLike, Sequence[ArrayLike]],
    layer_id: int,
    rms_weight: ArrayLike,
    eps: float,
    positions: ArrayLike,
    cos_sin: Optional[ArrayLike] = None,
    *,
    kv_last_page_len: Optional[ArrayLike] = None,
    qkv_bias: Optional[ArrayLike] = None,
    rope_style: str = "neox",
    rope_theta: float = 10000.0,
    kv_cache_shape: Optional[Sequence[int]] = None,
    backend: str = "auto",
    cluster_size: int = 0,
    max_batch: int = 0,
    stream: Any = None,
    check_status: bool = False,
    emu_seed: int = 0,
) -> None:
    """The attention half of a Llama decoder layer for a batch of decode tokens, in place (the seed's API).

    With B tokens (one per sequence, 1 <= B <= 16) and H = hidden::

        residual_output = hidden_states + residual        (residual None: residual_output = hidden_states)
        x               = rmsnorm(residual_output) * rms_weight        (eps)
        q, k, v         = x @ qkv_weight.T (+ qkv_bias)                rows of q, then k, then v
        q, k            = RoPE at positions (cos_sin table, or computed from rope_theta)
        k, v           -> the KV cache at each sequence's last position (the page table includes the new token)
        output          = softmax(q K^T / sqrt(head_dim)) V @ o_weight.T    (GQA: query head h reads KV head h / G)

    Arrays (C-contiguous; activations, weights and cache share one dtype: float16 or bfloat16, float32 on the CPU
    reference too):
        output, residual_output (written), hidden_states, residual: [B, H]. Outputs may be the input arrays.
        qkv_weight [(n_heads + 2 n_kv_heads) * head_dim, H]; o_weight [H, n_heads * head_dim]; rms_weight [H].
        paged_kv_indptr int32 [B + 1], paged_kv_indices int32 [n]: FlashInfer's page table AFTER this step's append
            (sequence b owns pages paged_kv_indices[indptr[b]:indptr[b+1]], its new token in the last one).
        k_cache, v_cache: this layer's pool, [slots, n_kv_heads, head_dim] (page size 1: the seed's token pool,
            page id = slot) or [n_pages, page_size, n_kv_heads, head_dim]; or a list of per-layer pools indexed
            by layer_id; or (CUDA only) the seed's uint64 [n_layers] tables of per-layer device pointers
            (k_data_ptrs), with kv_cache_shape giving one layer's pool shape. n_kv_heads and head_dim come from
            the cache, n_heads from o_weight.
        positions int64 (the seed's) or int32 [B]; cos_sin float32 [max_positions, rot_dim] (cos of the
            rot_dim/2 pairs, then their sin; rot_dim < head_dim rotates only the first rot_dim dimensions) or None.

    Keyword arguments (beyond the seed's):
        kv_last_page_len: int32 [B], entries in each sequence's last page (None: every last page is full, as with
            page size 1).
        qkv_bias: [(n_heads + 2 n_kv_heads) * head_dim] (Qwen2-style), or None.
        rope_style: "neox" (pairs (i, i + rot_dim/2), the seed's) or "gptj" (pairs (2i, 2i+1), GGUF Llama files).
        rope_theta: RoPE base when cos_sin is None.
        backend: "auto" (CUDA tensors: the fused kernel; CPU arrays: the reference), "cuda", "reference" or "emu"
            (the fused kernel on the CPU emulator: float16/bfloat16, slow, for tests).
        cluster_size: CTAs per cluster of the fused kernel: 0 (automatic), 2, 4, 8 or 16.
        max_batch: the largest batch the layer's cached plan serves (0: this call's batch). Pass 16 to share one
            plan across batch sizes.
        stream: CUDA stream (int handle, torch.cuda.Stream or cupy Stream); default: torch's / cupy's current
            stream for torch / cupy tensors, else the legacy default stream.
        check_status: CUDA: synchronise and raise ValueError if the kernel saw a bad page table or position
            (otherwise such a token's output row is NaN and its k/v are not appended). The CPU path always checks
            the page table on the host.
        emu_seed: the emulator's schedule seed (backend "emu").

    CUDA notes: the first call of a layer (per weights, cache and shape) builds its plan (tensor maps, a small
    workspace): make it before capturing a CUDA graph; later calls are one launch, graph-capturable.
    """
    layer_id = _int_arg(layer_id, "layer_id", 0, _INT32_MAX)
    cluster_size = _int_arg(cluster_size, "cluster_size", 0, 16)
    max_batch = _int_arg(max_batch, "max_batch", 0, 16)
    emu_seed = _int_arg(emu_seed, "emu_seed", 0, _UINT64_MAX)
    eps = _float_arg(eps, "eps")
    rope_theta = _float_arg(rope_theta, "rope_theta")
    cuda = _on_cuda(hidden_states)
    stream_handle = _stream_handle(hidden_states, stream) if cuda else 0
    (output, residual_output, hidden_states, residual, qkv_weight, o_weight, paged_kv_indptr, paged_kv_indices,
     k_cache, v_cache, rms_weight, positions, cos_sin, kv_last_page_len, qkv_bias) = _arrays(
        output, residual_output, hidden_states, residual, qkv_weight, o_weight, paged_kv_indptr, paged_kv_indices,
        _layer_cache(k_cache, layer_id, "k_cache"), _layer_cache(v_cache, layer_id, "v_cache"), rms_weight,
        positions, cos_sin, kv_last_page_len, qkv_bias)
    args = (output, residual_output, hidden_states, residual, qkv_weight, o_weight, paged_kv_indptr,
            paged_kv_indices, k_cache, v_cache, layer_id, rms_weight, eps, positions, cos_sin, kv_last_page_len,
            qkv_bias, rope_style, rope_theta, _shape_tuple(kv_cache_shape), backend, cluster_size, max_batch)
    if cuda:
        _cuda_ext().llama_decoder_layer(*args, stream_handle, check_status)
    else:
        _core.llama_decoder_layer(*args, emu_seed)


def llama_ffn_layer(
    output: ArrayLike,
    residual_output: ArrayLike,
    hidden_states: ArrayLike,
    residual: Optional[ArrayLike],
    gate_up_weight: ArrayLike,
    down_weight: ArrayLike,
    rms_weight: ArrayLike,
    eps: float,
    *,
    backend: str = "auto",
    cluster_size: int = 0,
    max_batch: int = 0,
    stream: Any = None,
    check_status: bool = False,
    emu_seed: int = 0,
) -> None:
    """The FFN half of a Llama decoder layer (the fused FFN block), in place:

        residual_output = hidden_states + residual        (residual None: residual_output = hidden_states)
        x               = rmsnorm(residual_output) * rms_weight
        output          = (silu(x @ W_gate.T) * (x @ W_up.T)) @ down_weight.T

    Arrays (C-contiguous, one dtype): output, residual_output (written; distinct arrays), hidden_states, residual
    [B, H] (1 <= B <= 16); gate_up_weight [2 * ffn_hidden, H] (gate rows, then up rows: a merged gate_up_proj);
    down_weight [H, ffn_hidden]; rms_weight [H]. The fused kernel needs H % 32 == 0 and ffn_hidden % 16 == 0.
    Keywords as in llama_decoder_layer (backend "auto" | "cuda" | "reference" | "emu"; cluster_size 0, 2, 4, 8).
    """
    cluster_size = _int_arg(cluster_size, "cluster_size", 0, 16)
    max_batch = _int_arg(max_batch, "max_batch", 0, 16)
    emu_seed = _int_arg(emu_seed, "emu_seed", 0, _UINT64_MAX)
    eps = _float_arg(eps, "eps")
    cuda = _on_cuda(hidden_states)
    stream_handle = _stream_handle(hidden_states, stream) if cuda else 0
    args = (*_arrays(output, residual_output, hidden_states, residual, gate_up_weight, down_weight, rms_weight),
            eps, backend, cluster_size, max_batch)
    if cuda:
        _cuda_ext().llama_ffn_layer(*args, stream_handle, check_status)
    else:
        _core.llama_ffn_layer(*args, emu_seed)


_YARN_KEYS = ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "mscale", "mscale_all_dim")


def _yarn_args(rope_scaling: Optional[Dict[str, Any]]) -> List[float]:
    """rope_scaling (a DeepSeek-V2 config.json's dict, or None) as the six YaRN numbers (factor 1: plain RoPE)."""
    if rope_scaling is None:
        return [1.0, 4096.0, 32.0, 1.0, 1.0, 0.0]
    if not isinstance(rope_scaling, dict):
        raise TypeError(f"rope_scaling: expected a dict (config.json's rope_scaling) or None, got "
                        f"{type(rope_scaling).__name__}")
    kind = rope_scaling.get("type", rope_scaling.get("rope_type", "yarn"))
    if kind != "yarn":
        raise ValueError(f"rope_scaling: type '{kind}' is not supported (DeepSeek-V2 uses 'yarn')")
    defaults = {"factor": 1.0, "original_max_position_embeddings": 4096, "beta_fast": 32.0, "beta_slow": 1.0,
                "mscale": 1.0, "mscale_all_dim": 0.0}
    return [_float_arg(rope_scaling.get(k, defaults[k]), f"rope_scaling['{k}']") for k in _YARN_KEYS]


def deepseek_rope_table(
    qk_rope: int, max_positions: int, rope_theta: float = 10000.0, rope_scaling: Optional[Dict[str, Any]] = None
) -> Any:
    """The RoPE table deepseek_decoder_layer takes: a float32 numpy array [max_positions, qk_rope], per position the
    cos of the qk_rope/2 adjacent pairs (2i, 2i+1), then their sin, with DeepSeek-V2's YaRN frequencies and
    magnitude (docs/mla.md 1.3). rope_scaling: the config's dict (type yarn, factor, original_max_position_embeddings,
    beta_fast, beta_slow, mscale, mscale_all_dim) or None for plain RoPE. Copy it to the GPU for CUDA tensors."""
    qk_rope = _int_arg(qk_rope, "qk_rope", 2, 4096)
    if qk_rope % 2:
        raise ValueError(f"qk_rope: {qk_rope} is odd (RoPE rotates pairs)")
    max_positions = _int_arg(max_positions, "max_positions", 1, 1 << 24)
    return _core.yarn_rope_table(qk_rope, max_positions, _float_arg(rope_theta, "rope_theta"),
                                 *_yarn_args(rope_scaling))


def deepseek_softmax_scale(qk_nope: int, qk_rope: int, rope_scaling: Optional[Dict[str, Any]] = None) -> float:
    """DeepSeek-V2's attention scale: (qk_nope + qk_rope)^-0.5, times mscale(factor, mscale_all_dim)^2 under YaRN
    (the authors' code and llama.cpp; 0.11472 for DeepSeek-V2-Lite)."""
    q_head = _int_arg(qk_nope, "qk_nope", 1, 1 << 16) + _int_arg(qk_rope, "qk_rope", 1, 1 << 16)
    factor, _, _, _, _, mscale_all_dim = _yarn_args(rope_scaling)
    scale = q_head ** -0.5
    if factor > 1.0 and mscale_all_dim != 0.0:
        m = 0.1 * mscale_all_dim * math.log(factor) + 1.0
        scale *= m * m
    return scale


def deepseek_decoder_layer(
    output: ArrayLike,
    residual_output: ArrayLike,
    hidden_states: ArrayLike,
    residual: Optional[ArrayLike],
    q_weight: Optional[ArrayLike],
    kv_a_weight: ArrayLike,
    kv_a_norm: ArrayLike,
    uk_weight: ArrayLike,
    uv_weight: ArrayLike,
    o_weight: ArrayLike,
    rms_weight: ArrayLike,
    latent_cache: Union[ArrayLike, Sequence[ArrayLike]],
    paged_kv_indptr: ArrayLike,
    paged_kv_indices: ArrayLike,
    positions: ArrayLike,
    cos_sin: ArrayLike,
    *,
    layer_id: int = 0,
    q_a_weight: Optional[ArrayLike] = None,
    q_a_norm: Optional[ArrayLike] = None,
    q_b_weight: Optional[ArrayLike] = None,
    kv_last_page_len: Optional[ArrayLike] = None,
    eps: float = 1e-6,
    softmax_scale: Optional[float] = None,
    backend: str = "auto",
    cluster_size: int = 0,
    max_batch: int = 0,
    stream: Any = None,
    check_status: bool = False,
    emu_seed: int = 0,
) -> None:
    """The attention half of a DeepSeek-V2 decoder layer (multi-head latent attention, absorbed; the fused MLA
    block) for a batch of decode tokens, in place (docs/mla.md).

    With B tokens (one per sequence, 1 <= B <= 16), Hd = hidden, H heads, r = kv_lora_rank, q_head = nope + rope::

        residual_output = hidden_states + residual          (residual None: residual_output = hidden_states)
        x               = rmsnorm(residual_output) * rms_weight                          (eps)
        q               = x @ q_weight.T, or rmsnorm(x @ q_a_weight.T) * q_a_norm @ q_b_weight.T     [H, q_head]
        kv              = x @ kv_a_weight.T;  c_kv = rmsnorm(kv[:r]) * kv_a_norm;  k_pe = kv[r:]
        q_pe, k_pe      = RoPE on adjacent pairs at positions (the cos_sin table)
        [c_kv, k_pe]   -> the latent cache at each sequence's last position (the page table includes the new token)
        q_lat[h]        = [uk_weight[h].T @ q_nope[h], q_pe[h]]
        o_lat[h]        = softmax(q_lat[h] . rows * softmax_scale) @ rows[:, :r]   over the sequence's latent rows
        output          = concat_h(uv_weight[h] @ o_lat[h]) @ o_weight.T

    Arrays (C-contiguous; activations, weights and cache share one dtype: float16 or bfloat16, float32 on the CPU
    reference too):
        output, residual_output (written), hidden_states, residual: [B, Hd]. Outputs may be the input arrays.
        q_weight [H * q_head, Hd] (DeepSeek-V2-Lite), or None with q_a_weight [q_lora, Hd], q_a_norm [q_lora] and
            q_b_weight [H * q_head, q_lora] (DeepSeek-V2).
        kv_a_weight [r + rope, Hd] (kv_a_proj_with_mqa: c_kv rows, then k_pe rows); kv_a_norm [r].
        uk_weight [H, nope, r] and uv_weight [H, v, r]: kv_b_proj split per head (its nope rows, then its v rows;
            from a GGUF: attn_k_b transposed per head, attn_v_b). H, nope and r come from uk_weight, v from uv_weight.
        o_weight [Hd, H * v]; rms_weight [Hd].
        latent_cache: this layer's pool [slots, r + rope] (page size 1) or [n_pages, page_size, r + rope], rows
            [c_kv, k_pe] (rope comes from its width); or a list of per-layer pools indexed by layer_id.
        paged_kv_indptr int32 [B + 1], paged_kv_indices int32 [n], kv_last_page_len int32 [B] or None (every last
            page full): FlashInfer's page table AFTER this step's append.
        positions int32 [B] (int64 on CPU arrays too); cos_sin float32 [max_positions, rope]: deepseek_rope_table().

    Keywords: eps (every RMSNorm of the block, DeepSeek's 1e-6); softmax_scale (None: q_head^-0.5; DeepSeek-V2's
    YaRN models need deepseek_softmax_scale()); backend "auto" (CUDA tensors: the fused kernel; CPU arrays: the
    reference), "cuda", "reference" or "emu" (the fused kernel on the CPU emulator: float16/bfloat16, slow);
    cluster_size, max_batch, stream, check_status, emu_seed as in llama_decoder_layer.

    The CUDA path and backend "emu" need the fused MLA kernel in the build (ValueError saying so otherwise).
    """
    layer_id = _int_arg(layer_id, "layer_id", 0, _INT32_MAX)
    cluster_size = _int_arg(cluster_size, "cluster_size", 0, 16)
    max_batch = _int_arg(max_batch, "max_batch", 0, 16)
    emu_seed = _int_arg(emu_seed, "emu_seed", 0, _UINT64_MAX)
    eps = _float_arg(eps, "eps")
    scale = None if softmax_scale is None else _float_arg(softmax_scale, "softmax_scale")
    cuda = _on_cuda(hidden_states)
    stream_handle = _stream_handle(hidden_states, stream) if cuda else 0
    arrays = _arrays(output, residual_output, hidden_states, residual, q_weight, kv_a_weight, kv_a_norm, uk_weight,
                     uv_weight, o_weight, rms_weight, _layer_cache(latent_cache, layer_id, "latent_cache"),
                     paged_kv_indptr, paged_kv_indices, positions, cos_sin, q_a_weight, q_a_norm, q_b_weight,
                     kv_last_page_len)
    args = (*arrays, eps, scale, backend, cluster_size, max_batch)
    if cuda:
        _cuda_ext().deepseek_decoder_layer(*args, stream_handle, check_status)
    else:
        _core.deepseek_decoder_layer(*args, emu_seed)


def deepseek_moe_layer(
    output: ArrayLike,
    residual_output: ArrayLike,
    hidden_states: ArrayLike,
    residual: Optional[ArrayLike],
    router_weight: ArrayLike,
    gate_up_weight: ArrayLike,
    down_weight: ArrayLike,
    rms_weight: ArrayLike,
    *,
    top_k: int,
    shared_gate_up_weight: Optional[ArrayLike] = None,
    shared_down_weight: Optional[ArrayLike] = None,
    norm_topk_prob: bool = False,
    routed_scaling: float = 1.0,
    topk_method: str = "greedy",
    n_group: int = 1,
    topk_group: int = 1,
    eps: float = 1e-6,
    backend: str = "auto",
    cluster_size: int = 0,
    max_batch: int = 0,
    stream: Any = None,
    check_status: bool = False,
    emu_seed: int = 0,
) -> None:
    """The FFN half of a DeepSeek-V2 MoE layer (the fused MoE block), in place (docs/mla.md 2)::

        residual_output = hidden_states + residual          (residual None: residual_output = hidden_states)
        x               = rmsnorm(residual_output) * rms_weight                          (eps)
        p               = softmax(x @ router_weight.T)      top_k experts by p (ties: the lower id), groups first
                                                            with topk_method "group_limited_greedy"
        g_e             = p_e, renormalised over the chosen when norm_topk_prob, times routed_scaling
        output          = sum_e g_e expert_e(x) + shared(x),  expert(x) = (silu(x Wg^T) * (x Wu^T)) Wd^T

    Arrays (C-contiguous; one dtype as in deepseek_decoder_layer, the router float32): output, residual_output
    (written), hidden_states, residual [B, H]; router_weight float32 [n_experts, H]; gate_up_weight
    [n_experts, 2 * expert_ffn, H] (each expert's gate rows, then its up rows); down_weight [n_experts, H, expert_ffn];
    rms_weight [H]; shared_gate_up_weight [2 * shared_ffn, H] and shared_down_weight [H, shared_ffn] (the shared
    experts as one SwiGLU) or None. Only the chosen experts' weights are read. Keywords as in llama_ffn_layer; the
    fused kernel takes H % 32 == 0, expert_ffn and shared_ffn % 16 == 0, at most 256 experts and top_k 16.
    """
    top_k = _int_arg(top_k, "top_k", 1, 4096)
    n_group = _int_arg(n_group, "n_group", 1, 4096)
    topk_group = _int_arg(topk_group, "topk_group", 1, 4096)
    cluster_size = _int_arg(cluster_size, "cluster_size", 0, 16)
    max_batch = _int_arg(max_batch, "max_batch", 0, 16)
    emu_seed = _int_arg(emu_seed, "emu_seed", 0, _UINT64_MAX)
    eps = _float_arg(eps, "eps")
    routed_scaling = _float_arg(routed_scaling, "routed_scaling")
    if not isinstance(norm_topk_prob, bool):
        raise TypeError(f"norm_topk_prob: expected a bool, got {type(norm_topk_prob).__name__}")
    if not isinstance(topk_method, str):
        raise TypeError(f"topk_method: expected a str, got {type(topk_method).__name__}")
    cuda = _on_cuda(hidden_states)
    stream_handle = _stream_handle(hidden_states, stream) if cuda else 0
    arrays = _arrays(output, residual_output, hidden_states, residual, router_weight, gate_up_weight, down_weight,
                     rms_weight, shared_gate_up_weight, shared_down_weight)
    args = (*arrays, top_k, norm_topk_prob, routed_scaling, topk_method, n_group, topk_group, eps, backend,
            cluster_size, max_batch)
    if cuda:
        _cuda_ext().deepseek_moe_layer(*args, stream_handle, check_status)
    else:
        _core.deepseek_moe_layer(*args, emu_seed)


def rms_norm(
    output: ArrayLike,
    input: ArrayLike,  # noqa: A002 - the natural name
    weight: ArrayLike,
    eps: float = 1e-5,
    *,
    residual: Optional[ArrayLike] = None,
    residual_output: Optional[ArrayLike] = None,
    stream: Any = None,
) -> None:
    """RMSNorm over the last dimension, in place: output = (input [+ residual]) / rms * weight.

    input, output, residual, residual_output: [n] or [rows, n]; weight [n]; one dtype (CUDA: float16 or bfloat16;
    CPU: float32 too). With residual, the norm is taken of the fp32 sum and residual_output (optional) receives the
    sum (SGLang's fused_add_rmsnorm). output may be input. CUDA tensors run cuda-unfused's kernel (n % 8 == 0), CPU
    arrays the fp32 reference.
    """
    eps = _float_arg(eps, "eps")
    cuda = _on_cuda(input)
    stream_handle = _stream_handle(input, stream) if cuda else 0
    out, x, w, res, res_out = _arrays(output, input, weight, residual, residual_output)
    args = (out, x, w, eps, res, res_out)
    if cuda:
        _cuda_ext().rms_norm(*args, stream_handle)
    else:
        _core.rms_norm(*args)


# ---- engine ----------------------------------------------------------------------------------------------------

def _resolve_backend(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"backend: expected a str, got {type(name).__name__}")
    known = {b["name"]: b for b in _core.backend_list()}
    if name != "auto":
        if name not in known:
            raise ValueError(f"backend: unknown backend '{name}' (known: auto, {', '.join(known)})")
        if not known[name]["built"]:
            raise ValueError(f"backend '{name}' is not built in this package ({known[name]['description']})")
        return name
    if known.get("cuda", {}).get("built") and cuda_available():
        return "cuda"
    return "cpu"


class Model:
    """A model loaded for generation: weights, tokenizer, chat template, a backend and one sequence's KV cache.

    Model(path=None, backend="auto", *, context=0, threads=0, cpu_arithmetic="int16")
        path: a .gguf file or a safetensors folder; None loads the default model (default_model_path()).
        backend: an engine backend (see backends()): "cpu", and where built "emu", "cuda", "cuda-unfused";
            "auto" picks "cuda" when built and a GPU is visible, else "cpu".
        context: tokens of context (KV cache size); 0 = the model's own context length.
        threads: CPU worker threads; 0 = all cores.
        cpu_arithmetic: how the cpu backend's products with quantised weights take the activations, as the CLI's
            --cpu-arithmetic: "int16" (rounded to 16 bits per block of 32, the CLI's default), "f32" (the exact
            reference) or "int8" (as llama.cpp).

    generate() continues one sequence; consecutive calls reuse the KV cache of their common prefix (a chat's earlier
    turns). One generation at a time per Model.
    """

    def __init__(self, path: Optional[str] = None, backend: str = "auto", *, context: int = 0, threads: int = 0,
                 cpu_arithmetic: str = "int16"):
        self.backend: str = _resolve_backend(backend)
        context = _int_arg(context, "context", 0, _INT32_MAX)
        threads = _int_arg(threads, "threads", 0, 256)
        if cpu_arithmetic not in ("f32", "int16", "int8"):
            raise ValueError(f"cpu_arithmetic: {cpu_arithmetic!r} (expected 'f32', 'int16' or 'int8')")
        self._engine = _core._EngineModel(None if path is None else str(path), self.backend, context, threads,
                                          cpu_arithmetic)
        self._config: Dict[str, Any] = self._engine.config()
        self._busy = threading.Lock()
        self.last_stats: Optional[Dict[str, Any]] = None
        self.last_logprobs: Optional[List[Dict[str, Any]]] = None

    @property
    def config(self) -> Dict[str, Any]:
        """The model's configuration: n_layers, hidden, n_heads, n_kv_heads, head_dim, ffn_hidden, vocab,
        max_context, rope_theta, rope_dim, rope_style, rms_eps, chat_template, bos_id, eos_id, ... plus path,
        format, backend and context."""
        return dict(self._config)

    def tokenize(self, text: str, add_bos: Optional[bool] = None, parse_special: bool = False) -> List[int]:
        """Token ids of text. add_bos None: as the model's tokenizer says; parse_special: special-token text such as
        '<|im_start|>' becomes its token."""
        if not isinstance(text, str):
            raise TypeError(f"text: expected a str, got {type(text).__name__}")
        return list(self._engine.tokenize(text, None if add_bos is None else bool(add_bos), bool(parse_special)))

    def detokenize(self, ids: Sequence[int]) -> str:
        """The text of token ids (invalid UTF-8 from byte tokens becomes U+FFFD)."""
        return self._engine.detokenize([_int_arg(i, f"ids[{k}]", -(2**31), _INT32_MAX) for k, i in enumerate(ids)])

    @property
    def history(self) -> List[int]:
        """Token ids the KV cache holds (the last prompt and its generated tokens)."""
        return list(self._engine.history())

    def reset(self) -> None:
        """Forgets the history (the next generate() runs its whole prompt)."""
        with self._busy_or_raise():
            self._engine.reset()

    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 256,
        *,
        temperature: float = 0.2,
        top_k: int = 0,
        top_p: float = 0.9,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_window: int = 64,
        seed: int = 0,
        chat: bool = True,
        system: Optional[str] = None,
        logprobs: Optional[int] = None,
    ) -> Iterator[str]:
        """Streams the reply to prompt as pieces of text (an iterator; stop early by breaking out / close()).

        chat=True renders prompt as one user turn of the model's chat template (the CLI's `generate`), chat=False
        continues it as plain text (`generate --raw`); system overrides the template's default system prompt
        ("" for none). Sampling: temperature <= 0 is greedy; top_k (0 = off), top_p (1 = off), min_p (0 = off),
        repeat_penalty over the last repeat_window tokens (1 = off, 0.01..100), seed. The defaults are the CLI's, so
        the same arguments give the CLI's text. Stops at an end-of-generation token, max_new_tokens or a full
        context; afterwards last_stats holds the token counts, speeds and stop reason.

        logprobs=N (0..20) records, for every sampled token (an end token included), its log-probability and the N
        most likely tokens' (the CLI's --logprobs): afterwards last_logprobs is a list of {"id", "token", "bytes",
        "logprob", "top_logprobs": [{"id", "token", "bytes", "logprob"}, ...]}, the model's distribution before the
        penalty, temperature and filters.

        The model runs only while the iterator is asked for the next piece (no thread runs behind it), so a stream
        left open costs nothing; while one is open, generate() and reset() on the same Model raise RuntimeError.
        """
        if not isinstance(prompt, str):
            raise TypeError(f"prompt: expected a str, got {type(prompt).__name__}")
        if system is not None and not isinstance(system, str):
            raise TypeError(f"system: expected a str or None, got {type(system).__name__}")
        options = (
            _int_arg(max_new_tokens, "max_new_tokens", 0, _INT32_MAX),
            _float_arg(temperature, "temperature"),
            _int_arg(top_k, "top_k", 0, _INT32_MAX),
            _float_arg(top_p, "top_p"),
            _float_arg(min_p, "min_p"),
            _float_arg(repeat_penalty, "repeat_penalty"),
            _int_arg(repeat_window, "repeat_window", 0, _INT32_MAX),
            _int_arg(seed, "seed", 0, _UINT64_MAX),
            bool(chat),
            system,
            -1 if logprobs is None else _int_arg(logprobs, "logprobs", 0, 20),
        )
        _core._check_generation_options(*options[:7])
        return self._stream(prompt, options)

    def generate_text(self, prompt: str, max_new_tokens: int = 256, **options: Any) -> str:
        """generate() collected into one string (same arguments)."""
        return "".join(self.generate(prompt, max_new_tokens, **options))

    # The engine is pulled a token at a time: step() runs the model (GIL released) and returns the next piece, None
    # at the end. Closing or dropping the iterator ends the generation (stop reason "stopped") and frees the Model.
    def _stream(self, prompt: str, options: Tuple[Any, ...]) -> Iterator[str]:
        with self._busy_or_raise():
            self.last_stats = None
            self.last_logprobs = None
            self._engine.start(prompt, *options)
            try:
                while True:
                    piece = self._engine.step()
                    if piece is None:
                        return
                    if piece:
                        yield piece
            finally:
                stats = dict(self._engine.finish())
                self.last_logprobs = stats.pop("logprobs", None)
                self.last_stats = stats

    def _busy_or_raise(self) -> "_Busy":
        return _Busy(self._busy)

    def __repr__(self) -> str:
        c = self._config
        return f"Model({c['path']!r}, backend={self.backend!r}, context={c['context']})"


class _Busy:
    def __init__(self, lock: threading.Lock):
        self._lock = lock

    def __enter__(self) -> None:
        if not self._lock.acquire(blocking=False):
            raise RuntimeError(
                "this Model is generating already (one generation at a time: finish or close() the other stream)"
            )

    def __exit__(self, *exc: Any) -> None:
        self._lock.release()
