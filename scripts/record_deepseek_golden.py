#!/usr/bin/env python3
"""Records the DeepSeek-V2 goldens (tests/data/golden/deepseek/, fields in README.md there) for the tiny models of
tests/data/deepseek/ (scripts/make_tiny_deepseek.py), from implementations independent of ours:

1. llama.cpp (llama-cpp-python at the goldens' pin, scripts/build_llama_cpp_python.sh) on the BF16 GGUF as converted:
   its tokenization of every prompt, a greedy continuation, the top-k (id, logit) pairs and log-sum-exp per position.
   Its CPU path rounds activations to BF16 for BF16 weights and keeps an F16 cache, so these logits are noisy.
2. llama.cpp on an F32 copy of the same weights with an F32 cache, fed the same tokens (teacher forcing), plus its own
   free-running greedy continuation.
3. scripts/deepseek_oracle.py, a float64 numpy model of the HF folder, in its expanded (prefill) and absorbed
   (latent-cache decode) forms, which must agree to 1e-9.
Before any of that it checks that the GGUF holds exactly the HF folder's values under the tensor mapping of
docs/mla.md (so the two files are one model).

Also writes reference_cases.json: small random MLA and MoE layers (weights on a 2^-k grid, exact in fp32/fp16/bf16)
with the oracle's outputs, for the C++ reference's unit tests. `--cases-only` writes just that (numpy only).

    scripts/build_llama_cpp_python.sh        # once
    scripts/record_deepseek_golden.py        # writes tests/data/golden/deepseek/*.json (about a minute)
    scripts/record_deepseek_golden.py --compare-only

When run by a python without llama_cpp it re-executes itself with the private environment's python.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record_golden as rg  # noqa: E402  (helpers shared with the default model's goldens)

REPO = Path(__file__).resolve().parent.parent
MODEL_DIR = REPO / "tests" / "data" / "deepseek"
DEFAULT_OUT = REPO / "tests" / "data" / "golden" / "deepseek"
MODELS = ["tiny_mla", "tiny_mla_qlora"]
LEGACY_GGUF = {"tiny_mla": "tiny_mla_legacy_kv_b.gguf"}  # scripts/make_tiny_deepseek.py
N_PREDICT = 32
TOP_K = 10
ORACLE_FORMS_TOLERANCE = 1e-9

PROMPTS = [
    ("hello", "Hello world"),
    ("fox", "The quick brown fox jumps over the lazy dog."),
    ("question", "Question: what is the capital of France?\nAnswer:"),
    ("code", "def add(a, b):\n    return a + b\n"),
    ("numbers", "1, 2, 3, 5, 8, 13, 21,"),
    ("long", "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
             "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of"),
]


# ---------------------------------------------------------------------------------------------------------------
def hf_to_gguf(hf: dict, config: dict, legacy: bool = False) -> dict:
    """The GGUF tensors (name -> array in the GGUF's numpy order, outermost first) that llama.cpp's converter makes
    from the HF tensors: docs/mla.md's table. Experts are stacked, kv_b_proj is split per head into attn_k_b
    (transposed: [head, kv_lora, nope]) and attn_v_b ([head, v, kv_lora]), or kept whole as attn_kv_b (legacy)."""
    import numpy as np
    n_head, nope, v_dim = config["num_attention_heads"], config["qk_nope_head_dim"], config["v_head_dim"]
    kv_lora = config["kv_lora_rank"]
    simple = {"self_attn.q_proj": "attn_q", "self_attn.q_a_proj": "attn_q_a", "self_attn.q_a_layernorm": "attn_q_a_norm",
              "self_attn.q_b_proj": "attn_q_b", "self_attn.kv_a_proj_with_mqa": "attn_kv_a_mqa",
              "self_attn.kv_a_layernorm": "attn_kv_a_norm", "self_attn.o_proj": "attn_output",
              "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
              "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "mlp.gate": "ffn_gate_inp",
              "mlp.shared_experts.gate_proj": "ffn_gate_shexp", "mlp.shared_experts.up_proj": "ffn_up_shexp",
              "mlp.shared_experts.down_proj": "ffn_down_shexp"}
    out = {"token_embd.weight": hf["model.embed_tokens.weight"], "output_norm.weight": hf["model.norm.weight"],
           "output.weight": hf["lm_head.weight"]}
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        for src, dst in simple.items():
            if p + src + ".weight" in hf:
                out[f"blk.{layer}.{dst}.weight"] = hf[p + src + ".weight"]
        kv_b = hf[p + "self_attn.kv_b_proj.weight"].reshape(n_head, nope + v_dim, kv_lora)
        if legacy:
            out[f"blk.{layer}.attn_kv_b.weight"] = hf[p + "self_attn.kv_b_proj.weight"]
        else:
            out[f"blk.{layer}.attn_k_b.weight"] = kv_b[:, :nope, :].transpose(0, 2, 1)
            out[f"blk.{layer}.attn_v_b.weight"] = kv_b[:, nope:, :]
        if p + "mlp.experts.0.gate_proj.weight" in hf:
            for w, name in (("gate_proj", "ffn_gate_exps"), ("up_proj", "ffn_up_exps"), ("down_proj", "ffn_down_exps")):
                out[f"blk.{layer}.{name}.weight"] = np.stack(
                    [hf[p + f"mlp.experts.{e}.{w}.weight"] for e in range(config["n_routed_experts"])])
    return out


def gguf_tensors(path: Path) -> dict:
    import gguf
    import numpy as np
    reader = gguf.GGUFReader(str(path))
    return {t.name: gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64).reshape(
        [int(n) for n in reversed(t.shape)]) for t in reader.tensors}


def check_same_model(gguf_file: str, model, legacy: bool = False) -> None:
    """The GGUF must hold the HF folder's values exactly, under hf_to_gguf's mapping."""
    import numpy as np
    name = gguf_file
    want = hf_to_gguf(model.w, model.config, legacy)
    got = gguf_tensors(MODEL_DIR / gguf_file)
    assert set(want) == set(got), f"{name}: tensor names differ: {sorted(set(want) ^ set(got))}"
    for key in want:
        assert want[key].shape == got[key].shape, f"{name}: {key} shape {got[key].shape}, expected {want[key].shape}"
        assert np.array_equal(want[key], got[key]), f"{name}: {key} differs from the HF tensor"
    print(f"{name}: the GGUF holds the HF folder's {len(want)} tensors exactly")


def rewrite_gguf(src: Path, dst: Path, to_f32: bool, extra: dict) -> None:
    """Copy of src (every tensor as F32 when to_f32, else unchanged bytes) with extra uint32 metadata keys."""
    import gguf
    import numpy as np
    reader = gguf.GGUFReader(str(src))
    writer = gguf.GGUFWriter(str(dst), arch=str(reader.fields["general.architecture"].contents()))
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = field.contents()
        if key == "general.file_type" and to_f32:
            value = int(gguf.LlamaFileType.ALL_F32)
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, field.types[0], sub_type=sub_type)
    for key, value in extra.items():
        writer.add_uint32(key, value)
    for t in reader.tensors:
        if to_f32 or t.tensor_type == gguf.GGMLQuantizationType.F32:
            values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            writer.add_tensor(t.name, values.reshape([int(n) for n in reversed(t.shape)]))
        else:
            writer.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)  # bytes, shape from them
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def llama_cpp_copies(gguf_file: str, model, tmp: Path) -> tuple[Path, Path]:
    """The BF16 file llama.cpp is run on, and its F32 copy. llama.cpp's deepseek2 loader requires the key
    attention.q_lora_rank unless the layer count is one of the real "Lite" models' (26, 27, 48): a model without
    q_lora gets q_lora_rank = 0 (what llama.cpp itself assumes for those), nothing else changes."""
    extra = {} if model.q_lora_rank is not None else {"deepseek2.attention.q_lora_rank": 0}
    bf16, f32 = tmp / f"bf16-{gguf_file}", tmp / f"f32-{gguf_file}"
    rewrite_gguf(MODEL_DIR / gguf_file, bf16, to_f32=False, extra=extra)
    rewrite_gguf(MODEL_DIR / gguf_file, f32, to_f32=True, extra=extra)
    return bf16, f32


# ---------------------------------------------------------------------------------------------------------------
def record_model(name: str, args, deepseek_oracle):
    import numpy as np
    model = deepseek_oracle.DeepseekV2.from_folder(MODEL_DIR / name)
    check_same_model(f"{name}.gguf", model)
    tmp_dir = tempfile.TemporaryDirectory(prefix="cf-deepseek-golden-")
    bf16_path, f32_path = llama_cpp_copies(f"{name}.gguf", model, Path(tmp_dir.name))
    llm = rg.load_llama_cpp(bf16_path)
    llm_f32 = rg.load_llama_cpp_f32(f32_path)
    legacy_file = LEGACY_GGUF.get(name)
    llm_legacy, legacy_max = None, 0.0
    if legacy_file:  # the same model in the pre-split format, which llama.cpp runs in its expanded (non-MLA) path
        check_same_model(legacy_file, model, legacy=True)
        llm_legacy = rg.load_llama_cpp_f32(llama_cpp_copies(legacy_file, model, Path(tmp_dir.name))[1])
    bos, eos = llm.token_bos(), llm.token_eos()
    prompts_out, summary = [], []
    for prompt_name, text in PROMPTS:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        assert rg.detokenize(llm, ids[1:]) == text.encode("utf-8"), f"{prompt_name}: llama.cpp round trip failed"
        generated, logits = rg.llama_cpp_run(llm, ids, args.n_predict)
        sequence = (ids + generated)[:-1]
        f32 = rg.llama_cpp_teacher_forced(llm_f32, sequence)
        ref64 = model.forward_expanded(sequence)
        absorbed = model.forward_absorbed(sequence)
        forms_diff = float(np.max(np.abs(ref64 - absorbed)))
        assert forms_diff < ORACLE_FORMS_TOLERANCE, f"{name}/{prompt_name}: expanded != absorbed ({forms_diff:.2e})"

        top_ids, top_logits, f32_at_top, ref64_at_top = [], [], [], []
        for row_llama, row_f32, row64 in zip(logits, f32, ref64):
            t = rg.top_k_ids(row_llama, TOP_K)
            top_ids.append([int(i) for i in t])
            top_logits.append(rg.rounded(row_llama[t]))
            f32_at_top.append(rg.rounded(row_f32[t]))
            ref64_at_top.append(rg.rounded(row64[t]))

        if llm_legacy is not None:
            legacy_diff = float(np.max(np.abs(rg.llama_cpp_teacher_forced(llm_legacy, sequence) - ref64)))
            assert legacy_diff < 1e-4, f"{legacy_file}/{prompt_name}: llama.cpp F32 vs fp64 {legacy_diff:.2e}"
            legacy_max = max(legacy_max, legacy_diff)

        generated_f32, _ = rg.llama_cpp_run(llm_f32, ids, args.n_predict)
        ref64_f32 = model.forward_expanded((ids + generated_f32)[:-1])[len(ids) - 1:]
        ordered = np.sort(ref64_f32, axis=1)
        margins = ordered[:, -1] - ordered[:, -2]
        disagree = [i for i, (r, t) in enumerate(zip(ref64_f32, generated_f32)) if int(np.argmax(r)) != t]
        assert all(margins[i] < 1e-4 for i in disagree), f"{name}/{prompt_name}: f32 greedy != fp64 at {disagree}"
        gen_text, text_exact = rg.decode_text(llm, generated)
        prompts_out.append({
            "name": prompt_name,
            "prompt": text,
            "prompt_tokens": [int(i) for i in ids],
            "generated_tokens": [int(i) for i in generated],
            "generated_text": gen_text,
            "generated_text_exact": text_exact,
            "first_eos_step": next((i for i, t in enumerate(generated) if t == eos), None),
            "llama_cpp_bf16": {"top_ids": top_ids, "top_logits": top_logits,
                               "lse": rg.rounded(rg.log_sum_exp(logits.astype(np.float64)))},
            "llama_cpp_f32": rg.table_at(f32, f32_at_top),
            "numpy_fp64": rg.table_at(ref64, ref64_at_top),
            "f32_greedy": {
                "generated_tokens": [int(i) for i in generated_f32],
                "top2_margin_fp64": rg.rounded(margins),
                "same_as_bf16_steps": next((i for i, (a, b) in enumerate(zip(generated, generated_f32)) if a != b),
                                           len(generated)),
            },
        })
        summary.append(differences(prompt_name, len(ids), logits, f32, ref64))
        print(f"{name}/{prompt_name}: {len(ids)} prompt tokens, expanded-absorbed {forms_diff:.1e}, "
              f"f32cpp-fp64 {np.max(np.abs(f32 - ref64)):.2e}, bf16cpp-fp64 {np.max(np.abs(logits - ref64)):.2e}")
    llm.close()
    llm_f32.close()
    if llm_legacy is not None:
        llm_legacy.close()
        print(f"{legacy_file}: llama.cpp F32 (expanded path) vs fp64 max |dlogit| {legacy_max:.2e} over all rows")
    tmp_dir.cleanup()
    model_info = {"gguf": f"tests/data/deepseek/{name}.gguf", "hf_folder": f"tests/data/deepseek/{name}/",
                  "gguf_sha256": rg.sha256_of(MODEL_DIR / f"{name}.gguf"),
                  "safetensors_sha256": rg.sha256_of(MODEL_DIR / name / "model.safetensors"),
                  "add_bos_token": True, "bos_id": int(bos), "eos_id": int(eos), "n_vocab": int(llm.n_vocab()),
                  "q_lora_rank": model.q_lora_rank}
    if legacy_file:
        model_info["legacy_kv_b_gguf"] = {
            "file": f"tests/data/deepseek/{legacy_file}", "sha256": rg.sha256_of(MODEL_DIR / legacy_file),
            "converter": "llama-cpp-python 0.3.8 (llama.cpp 7841fc7): attn_kv_b, no *_mla keys",
            "llama_cpp_f32_vs_numpy_fp64_max": float(f"{legacy_max:.3g}")}
    return prompts_out, summary, model_info


def differences(name: str, n_prompt: int, bf16, f32, fp64) -> dict:
    """Per prompt: max |difference| over llama.cpp BF16's top-k ids of each row, argmax agreement, BF16 margins."""
    import numpy as np
    rows = np.arange(len(bf16))
    top = np.stack([rg.top_k_ids(r, TOP_K) for r in bf16])
    tables = {"bf16": bf16.astype(np.float64), "f32": f32.astype(np.float64), "fp64": fp64}
    ordered = np.sort(tables["bf16"], axis=1)
    result = {"name": name, "rows": len(bf16), "gen_rows": np.arange(n_prompt - 1, len(bf16)),
              "margin_bf16": ordered[:, -1] - ordered[:, -2]}
    for a, b in (("bf16", "fp64"), ("f32", "fp64"), ("bf16", "f32")):
        diff = np.abs(tables[a][rows[:, None], top] - tables[b][rows[:, None], top])
        result[f"{a}-{b}"] = {"diff_top": diff, "max_top": float(diff.max()),
                              "max_all": float(np.max(np.abs(tables[a] - tables[b]))),
                              "disagree": np.nonzero(np.argmax(tables[a], 1) != np.argmax(tables[b], 1))[0]}
    return result


def print_summary(model: str, summary: list) -> None:
    import numpy as np
    print(f"{model}: max |dlogit| at llama.cpp BF16's top-{TOP_K} ids (all-vocab max), rows where argmax differ")
    for pair in ("bf16-fp64", "f32-fp64", "bf16-f32"):
        rows = sum(s["rows"] for s in summary)
        disagree = [(round(float(s["margin_bf16"][r]), 4), s["name"], int(r)) for s in summary
                    for r in s[pair]["disagree"]]
        diffs = np.concatenate([s[pair]["diff_top"].ravel() for s in summary])
        print(f"  {pair:10} top max {diffs.max():.3e} p99 {np.percentile(diffs, 99):.3e} median "
              f"{np.median(diffs):.3e} (all "
              f"{max(s[pair]['max_all'] for s in summary):.3e}); argmax differs on {len(disagree)}/{rows} rows "
              f"{sorted(disagree, reverse=True)[:8]}")
    margins = np.concatenate([s["margin_bf16"][s["gen_rows"]] for s in summary])
    for x in (0.05, 0.1, 0.25, 0.5):
        print(f"  generated steps with BF16 top-2 margin > {x}: {int(np.sum(margins > x))}/{len(margins)}")


def record(args) -> None:
    import deepseek_oracle
    out_dir = Path(args.out_dir)
    for name in MODELS:
        prompts_out, summary, model_info = record_model(name, args, deepseek_oracle)
        print_summary(name, summary)
        if args.compare_only:
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        rg.write_json(out_dir / f"{name}.json", {
            "description": "Golden data for a tiny random DeepSeek-V2 model; fields are described in README.md in "
                           "this folder. Row r of every per-row table is the prediction after token r of "
                           "prompt_tokens + generated_tokens; llama_cpp_f32 and numpy_fp64 are given at "
                           "llama_cpp_bf16.top_ids.",
            "producer": rg.producer_info("scripts/record_deepseek_golden.py",
                                         {"bf16_run_kv_cache_type": "f16", "f32_run_kv_cache_type": "f32"}),
            "model": model_info,
            "top_k": TOP_K,
            "n_predict": args.n_predict,
            "prompts": prompts_out,
        })
    if not args.compare_only:
        record_reference_cases(out_dir)


# ---------------------------------------------------------------------------------------------------------------
def grid_tensor(rng, shape, exponent: int) -> tuple:
    """Random integers in [-127, 127] times 2^-exponent: exact in fp32, fp16 (normal range) and bf16."""
    import numpy as np
    q = rng.integers(-127, 128, size=shape)
    return q, q.astype(np.float64) * 2.0 ** -exponent


def grid_exponent(fan_in: int) -> int:
    """2^-e with 127 * 2^-e / sqrt(3) ~ 1/sqrt(fan_in): unit-variance outputs for unit-variance inputs."""
    import math
    return max(0, round(math.log2(127 / math.sqrt(3) * math.sqrt(fan_in))))


def packed(q, exponent: int) -> dict:
    return {"shape": list(q.shape), "exponent": exponent, "q": [int(v) for v in q.reshape(-1)]}


def numbers(values) -> list:
    import numpy as np
    return [float(f"{v:.10g}") for v in np.asarray(values, dtype=np.float64).reshape(-1)]


MLA_CASES = [  # name, q_lora_rank (None: q_proj), start position, tokens
    ("mla_plain_q", None, 0, 7),
    ("mla_q_lora_far", 12, 5000, 5),
]
MLA_SHAPE = {"hidden_size": 32, "num_attention_heads": 3, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8,
             "v_head_dim": 6, "kv_lora_rank": 16, "rms_norm_eps": 1e-6, "rope_theta": 10000,
             "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                              "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707}}
MOE_CASES = [  # name, experts, top_k, n_shared, norm_topk_prob, routed_scaling_factor, method, n_group, topk_group
    ("moe_greedy", 8, 2, 2, False, 1.0, "greedy", 1, 1),
    ("moe_greedy_norm", 8, 3, 1, True, 1.0, "greedy", 1, 1),
    ("moe_scaled_no_shared", 8, 2, 0, False, 2.5, "greedy", 1, 1),
    ("moe_group_limited", 8, 3, 2, False, 16.0, "group_limited_greedy", 4, 2),
]
MOE_HIDDEN, MOE_FFN, MOE_TOKENS = 16, 4, 6


def mla_case(name, q_lora_rank, start, n_tokens, rng, deepseek_oracle) -> dict:
    import numpy as np
    s = dict(MLA_SHAPE, q_lora_rank=q_lora_rank, model_type="deepseek_v2", num_hidden_layers=1)
    h, n_head = s["hidden_size"], s["num_attention_heads"]
    q_head = s["qk_nope_head_dim"] + s["qk_rope_head_dim"]
    kv_lora, rope = s["kv_lora_rank"], s["qk_rope_head_dim"]
    shapes = {"kv_a_proj_with_mqa": (kv_lora + rope, h), "kv_a_layernorm": (kv_lora,),
              "kv_b_proj": (n_head * (s["qk_nope_head_dim"] + s["v_head_dim"]), kv_lora),
              "o_proj": (h, n_head * s["v_head_dim"])}
    if q_lora_rank is None:
        shapes["q_proj"] = (n_head * q_head, h)
    else:
        shapes.update({"q_a_proj": (q_lora_rank, h), "q_a_layernorm": (q_lora_rank,),
                       "q_b_proj": (n_head * q_head, q_lora_rank)})
    weights, packed_weights = {}, {}
    for key, shape in shapes.items():
        if len(shape) == 1:  # norm weights in [0.75, 1.25]: integers below 256 are exact in bf16 too
            q = rng.integers(96, 161, size=shape)
            v = q.astype(np.float64) * 2.0 ** -7
            packed_weights[key] = packed(q, 7)
        else:
            e = grid_exponent(shape[1])
            q, v = grid_tensor(rng, shape, e)
            packed_weights[key] = packed(q, e)
        weights[f"model.layers.0.self_attn.{key}.weight"] = v
    xq, x = grid_tensor(rng, (n_tokens, h), 7)  # inputs of rms ~0.6
    model = deepseek_oracle.DeepseekV2(s, weights)
    positions = list(range(start, start + n_tokens))
    a = "model.layers.0.self_attn."
    q = model.query(a, x)
    q[..., s["qk_nope_head_dim"]:] = model.rope.apply_pairs(q[..., s["qk_nope_head_dim"]:].transpose(1, 0, 2),
                                                             positions).transpose(1, 0, 2)
    c_kv, k_pe = model.latent(a, x)
    latent = np.concatenate([c_kv, model.rope.apply_pairs(k_pe, positions)], axis=-1)
    w_uk, _ = model.kv_b(a)
    q_latent = np.concatenate([np.einsum("hnc,thn->thc", w_uk, q[..., :s["qk_nope_head_dim"]]),
                               q[..., s["qk_nope_head_dim"]:]], axis=-1)
    expanded = model.attention_expanded(0, x, positions)
    cache = []
    absorbed = np.stack([model.attention_absorbed(0, x[t], positions[t], cache) for t in range(n_tokens)])
    assert np.max(np.abs(expanded - absorbed)) < ORACLE_FORMS_TOLERANCE, f"{name}: expanded != absorbed"
    return {
        "name": name,
        "shape": {"hidden": h, "n_heads": n_head, "q_lora_rank": q_lora_rank or 0, "kv_lora_rank": kv_lora,
                  "qk_nope": s["qk_nope_head_dim"], "qk_rope": rope, "v_head": s["v_head_dim"],
                  "eps": s["rms_norm_eps"], "rope_theta": s["rope_theta"], **s["rope_scaling"]},
        "weights": packed_weights,
        "x": packed(xq, 7),
        "start_position": start,
        "expected": {
            "inv_freq": numbers(model.rope.inv_freq), "rope_magnitude": model.rope.magnitude,
            "ramp_low": model.rope.low, "ramp_high": model.rope.high, "softmax_scale": model.scale,
            "q": numbers(q), "latent": numbers(latent), "q_latent": numbers(q_latent), "out": numbers(expanded),
        },
    }


def moe_case(spec, rng, deepseek_oracle) -> dict:
    import numpy as np
    name, n_experts, top_k, n_shared, norm, scale, method, n_group, topk_group = spec
    h, ffn = MOE_HIDDEN, MOE_FFN
    weights, packed_weights = {}, {"experts": []}

    def add(key, shape, gain_exponent=0):
        e = grid_exponent(shape[1]) - gain_exponent
        q, v = grid_tensor(rng, shape, e)
        weights[f"model.layers.0.mlp.{key}.weight"] = v
        return packed(q, e)

    packed_weights["router"] = add("gate", (n_experts, h), gain_exponent=2)  # spread scores: clear top-k
    for e in range(n_experts):
        packed_weights["experts"].append({w: add(f"experts.{e}.{w}_proj", shape) for w, shape in
                                          (("gate", (ffn, h)), ("up", (ffn, h)), ("down", (h, ffn)))})
    if n_shared:
        packed_weights["shared"] = {w: add(f"shared_experts.{w}_proj", shape) for w, shape in
                                    (("gate", (ffn * n_shared, h)), ("up", (ffn * n_shared, h)),
                                     ("down", (h, ffn * n_shared)))}
    xq, x = grid_tensor(rng, (MOE_TOKENS, h), 7)
    config = {"model_type": "deepseek_v2", "num_hidden_layers": 1, "hidden_size": h, "num_attention_heads": 1,
              "qk_nope_head_dim": 1, "qk_rope_head_dim": 2, "v_head_dim": 1, "kv_lora_rank": 1,
              "n_routed_experts": n_experts, "num_experts_per_tok": top_k, "n_shared_experts": n_shared or None,
              "norm_topk_prob": norm, "routed_scaling_factor": scale, "topk_method": method, "n_group": n_group,
              "topk_group": topk_group, "first_k_dense_replace": 0}
    model = deepseek_oracle.DeepseekV2(config, weights)
    ids, gates, margin, scores = model.route(0, x)
    assert margin > 1e-5, f"{name}: a near tie in the expert choice ({margin:.1e}): pick another seed"
    if method != "greedy":  # the case must show what the groups change
        greedy_ids = deepseek_oracle.select_experts(scores, top_k, "greedy", 1, 1, norm, scale)[0]
        assert (greedy_ids != ids).any(), f"{name}: the groups change no choice: pick another seed"
    out = model.moe(0, x)
    return {
        "name": name,
        "shape": {"hidden": h, "n_experts": n_experts, "top_k": top_k, "expert_ffn": ffn, "shared_ffn": ffn * n_shared,
                  "norm_topk_prob": norm, "routed_scaling_factor": scale, "topk_method": method, "n_group": n_group,
                  "topk_group": topk_group},
        "weights": packed_weights,
        "x": packed(xq, 7),
        "expected": {"probs": numbers(scores), "ids": [[int(i) for i in row] for row in ids],
                     "weights": numbers(gates), "out": numbers(out),
                     "selection_margin": margin},
    }


def record_reference_cases(out_dir: Path) -> None:
    import numpy as np
    import deepseek_oracle
    rng = np.random.Generator(np.random.PCG64(2024))
    v2_lite = deepseek_oracle.Rope(64, 10000.0, MLA_SHAPE["rope_scaling"])
    doc = {
        "description": "Small random MLA and MoE layers with the float64 oracle's outputs (scripts/deepseek_oracle.py)"
                       "; fields in README.md in this folder. A tensor is {shape, exponent, q}: value = q * 2^-exponent "
                       "(exact in fp32, fp16 and bf16).",
        "producer": {"script": "scripts/record_deepseek_golden.py", "numpy": np.__version__},
        "v2_lite_rope": {"dim": 64, "theta": 10000.0, **MLA_SHAPE["rope_scaling"],
                         "inv_freq": numbers(v2_lite.inv_freq), "magnitude": v2_lite.magnitude,
                         "ramp_low": v2_lite.low, "ramp_high": v2_lite.high},
        "mla": [mla_case(*case, rng, deepseek_oracle) for case in MLA_CASES],
        "moe": [moe_case(spec, rng, deepseek_oracle) for spec in MOE_CASES],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "reference_cases.json"
    path.write_text(json.dumps(doc, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=str(DEFAULT_OUT), help="output folder (default: %(default)s)")
    parser.add_argument("--n-predict", type=int, default=N_PREDICT, help="greedy tokens per prompt")
    parser.add_argument("--compare-only", action="store_true", help="print differences, write nothing")
    parser.add_argument("--cases-only", action="store_true", help="write reference_cases.json only (numpy only)")
    args = parser.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")
    if args.cases_only:
        record_reference_cases(Path(args.out_dir))
        return
    rg.ensure_llama_cpp(__file__)
    record(args)


if __name__ == "__main__":
    main()
