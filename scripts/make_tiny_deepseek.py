#!/usr/bin/env python3
"""Makes the tiny random DeepSeek-V2-shaped test models (tests/data/deepseek/, see its README.md).

Each model is written twice:
  <name>/        a Hugging Face folder: config.json (model_type deepseek_v2), model.safetensors (BF16, written here),
                 tokenizer.json + tokenizer_config.json (the tiny Llama-3-style byte-level BPE tokenizer of
                 tests/data/tokenizer/tiny_llama3, with a BOS added as DeepSeek's tokenizer does)
  <name>.gguf    that folder converted by llama.cpp's own convert_hf_to_gguf.py at the goldens' pin
                 (scripts/build_gguf_converter.sh), --outtype bf16, so both files hold the same values

Also tiny_mla_legacy_kv_b.gguf: tiny_mla converted by the converter of an older pin (llama-cpp-python 0.3.8,
llama.cpp 7841fc7), which writes the single attn_kv_b tensor and the pre-MLA metadata (docs/mla.md §4).

Models (3 layers, the first dense, YaRN RoPE as DeepSeek-V2-Lite's config, shapes in MODELS below):
  tiny_mla        q_lora_rank null (q_proj, as V2-Lite), norm_topk_prob true, routed_scaling_factor 1.0
  tiny_mla_qlora  q_lora_rank set (q_a_proj -> RMSNorm -> q_b_proj, as V2), norm_topk_prob false, scaling 2.5

The weights come from numpy's PCG64 with fixed seeds, rounded to BF16: a rerun writes identical files.

    scripts/build_gguf_converter.sh   # once (downloads torch/transformers into a private environment)
    scripts/make_tiny_deepseek.py     # writes tests/data/deepseek/ (seconds)
    scripts/make_tiny_deepseek.py --check   # rebuilds into a temporary folder and compares with the committed files

When run by a python without numpy/torch it re-executes itself with the converter environment's python.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "tests" / "data" / "deepseek"
TOKENIZER_DIR = REPO / "tests" / "data" / "tokenizer" / "tiny_llama3"
# the tiny tokenizer's pre-tokenizer is Llama-3's regex; its vocabulary hash is unknown to the converter
TOKENIZER_PRE = "llama-bpe"
BOS_TOKEN, EOS_TOKEN = "<|endoftext|>", "<|im_end|>"

# DeepSeek-V2-Lite's YaRN settings (its config.json), kept unchanged
ROPE_SCALING = {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096, "beta_fast": 32,
                "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707}

COMMON = {
    "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 3,
    "qk_nope_head_dim": 24, "qk_rope_head_dim": 16, "v_head_dim": 12, "kv_lora_rank": 32,
    "intermediate_size": 96, "moe_intermediate_size": 16, "n_routed_experts": 6, "num_experts_per_tok": 2,
    "n_shared_experts": 2, "first_k_dense_replace": 1, "moe_layer_freq": 1,
    "topk_method": "greedy", "n_group": 1, "topk_group": 1, "scoring_func": "softmax",
    "rms_norm_eps": 1e-6, "rope_theta": 10000, "max_position_embeddings": 163840,
}
LEGACY_GGUF = {"tiny_mla": "tiny_mla_legacy_kv_b.gguf"}  # model -> file made by the legacy converter
MODELS = {
    "tiny_mla": dict(COMMON, q_lora_rank=None, norm_topk_prob=True, routed_scaling_factor=1.0, seed=1001),
    "tiny_mla_qlora": dict(COMMON, q_lora_rank=56, norm_topk_prob=False, routed_scaling_factor=2.5, seed=1002),
}


def config_json(spec: dict, vocab_size: int, bos_id: int, eos_id: int) -> dict:
    keys = [k for k in spec if k != "seed"]
    config = {"architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2"}
    config.update({k: spec[k] for k in keys})
    config.update({
        "num_key_value_heads": spec["num_attention_heads"], "vocab_size": vocab_size,
        "bos_token_id": bos_id, "eos_token_id": eos_id, "hidden_act": "silu", "attention_bias": False,
        "attention_dropout": 0.0, "aux_loss_alpha": 0.001, "seq_aux": True, "tie_word_embeddings": False,
        "initializer_range": 0.02, "pretraining_tp": 1, "use_cache": True, "torch_dtype": "bfloat16",
        "rope_scaling": dict(ROPE_SCALING),
    })
    return dict(sorted(config.items()))


# ---------------------------------------------------------------------------------------------------------------
def bf16_bits(x):
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even."""
    import numpy as np
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def random_weights(spec: dict, vocab_size: int) -> dict:
    """HF tensor name -> float32 array already representable in bf16. Matrices are [out, in] (torch Linear)."""
    import numpy as np
    rng = np.random.Generator(np.random.PCG64(spec["seed"]))
    h = spec["hidden_size"]
    n_head = spec["num_attention_heads"]
    q_head = spec["qk_nope_head_dim"] + spec["qk_rope_head_dim"]
    kv_lora, rope = spec["kv_lora_rank"], spec["qk_rope_head_dim"]
    out = {}

    def matrix(name, rows, cols, gain=1.0):
        out[name] = rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(gain / np.sqrt(cols))

    def norm(name, n):  # near 1, not exactly (a missing norm weight must show)
        out[name] = np.float32(1.0) + np.float32(0.1) * rng.standard_normal(n, dtype=np.float32)

    def mlp(prefix, inter):
        matrix(prefix + "gate_proj.weight", inter, h)
        matrix(prefix + "up_proj.weight", inter, h)
        matrix(prefix + "down_proj.weight", h, inter)

    out["model.embed_tokens.weight"] = rng.standard_normal((vocab_size, h), dtype=np.float32)
    for layer in range(spec["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        a = p + "self_attn."
        norm(p + "input_layernorm.weight", h)
        if spec["q_lora_rank"] is None:
            matrix(a + "q_proj.weight", n_head * q_head, h)
        else:
            matrix(a + "q_a_proj.weight", spec["q_lora_rank"], h)
            norm(a + "q_a_layernorm.weight", spec["q_lora_rank"])
            matrix(a + "q_b_proj.weight", n_head * q_head, spec["q_lora_rank"])
        matrix(a + "kv_a_proj_with_mqa.weight", kv_lora + rope, h)
        norm(a + "kv_a_layernorm.weight", kv_lora)
        matrix(a + "kv_b_proj.weight", n_head * (spec["qk_nope_head_dim"] + spec["v_head_dim"]), kv_lora)
        matrix(a + "o_proj.weight", h, n_head * spec["v_head_dim"])
        norm(p + "post_attention_layernorm.weight", h)
        if layer < spec["first_k_dense_replace"]:
            mlp(p + "mlp.", spec["intermediate_size"])
        else:
            # a wider router spreads the expert scores, so top-k choices are rarely near ties
            matrix(p + "mlp.gate.weight", spec["n_routed_experts"], h, gain=3.0)
            for e in range(spec["n_routed_experts"]):
                mlp(p + f"mlp.experts.{e}.", spec["moe_intermediate_size"])
            mlp(p + "mlp.shared_experts.", spec["moe_intermediate_size"] * spec["n_shared_experts"])
    norm("model.norm.weight", h)
    # a wider output layer spreads the logits of this random model, so greedy steps are rarely near ties
    matrix("lm_head.weight", vocab_size, h, gain=4.0)

    for name, w in out.items():  # exactly representable in bf16 from here on
        out[name] = (bf16_bits(w).astype(np.uint32) << 16).view(np.float32)
    return out


def write_safetensors(path: Path, tensors: dict) -> None:
    """BF16 safetensors file: 8-byte header length, JSON header (sorted names), then the data in that order."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        data = bf16_bits(tensors[name]).astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def write_hf_folder(folder: Path, name: str, spec: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = json.loads((TOKENIZER_DIR / "tokenizer.json").read_text(encoding="utf-8"))
    vocab_size = len(tokenizer["model"]["vocab"]) + sum(
        1 for t in tokenizer["added_tokens"] if t["content"] not in tokenizer["model"]["vocab"])
    ids = {t["content"]: t["id"] for t in tokenizer["added_tokens"]}
    shutil.copyfile(TOKENIZER_DIR / "tokenizer.json", folder / "tokenizer.json")
    tokenizer_config = {"add_bos_token": True, "add_eos_token": False, "bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN,
                        "clean_up_tokenization_spaces": False, "legacy": True, "model_max_length": 163840,
                        "tokenizer_class": "PreTrainedTokenizerFast"}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n", encoding="utf-8")
    config = config_json(spec, vocab_size, ids[BOS_TOKEN], ids[EOS_TOKEN])
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    write_safetensors(folder / "model.safetensors", random_weights(spec, vocab_size))
    print(f"wrote {folder} ({name})")


# ---------------------------------------------------------------------------------------------------------------
def converter_paths() -> tuple[str, Path, Path]:
    """(python of the converter environment, the pinned converter's folder, the legacy converter's folder)"""
    out = subprocess.run([str(REPO / "scripts" / "build_gguf_converter.sh"), "--print"], capture_output=True,
                         text=True)
    if out.returncode != 0:
        sys.exit("make_tiny_deepseek.py: the pinned converter is not prepared; run scripts/build_gguf_converter.sh")
    python, folder, legacy = out.stdout.split()
    return python, Path(folder), Path(legacy)


def convert(hf_folder: Path, gguf_path: Path, legacy: bool = False, outtype: str = "bf16") -> None:
    """Runs the pinned (or the legacy) convert_hf_to_gguf.py on hf_folder (through run_converter below, in the
    converter environment's python)."""
    python, current, old = converter_paths()
    folder = old if legacy else current
    cmd = [python, str(Path(__file__).resolve()), "--run-converter", str(folder), TOKENIZER_PRE, "--",
           "--outtype", outtype, "--outfile", str(gguf_path), str(hf_folder)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        sys.exit(f"make_tiny_deepseek.py: convert_hf_to_gguf.py failed on {hf_folder}")
    print(f"wrote {gguf_path} ({gguf_path.stat().st_size} bytes)")


def run_converter(folder: str, pre: str, argv: list[str]) -> None:
    """convert_hf_to_gguf.py's main, unchanged except for one thing: a BPE vocabulary whose pre-tokenizer hash the
    converter does not know (every tiny tokenizer) is given the pre-tokenizer name `pre` instead of an error."""
    sys.path.insert(0, folder)
    sys.argv = [str(Path(folder) / "convert_hf_to_gguf.py"), *argv]
    import convert_hf_to_gguf  # noqa: E402  (inserts its own gguf-py into sys.path)
    try:
        from conversion.base import TextModel as base  # the pinned converter: a package of model classes
    except ImportError:
        base = convert_hf_to_gguf.Model  # the legacy converter: one file
    known = base.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer):
        try:
            return known(self, tokenizer)
        except NotImplementedError:
            return pre

    base.get_vocab_base_pre = get_vocab_base_pre
    convert_hf_to_gguf.main()


# ---------------------------------------------------------------------------------------------------------------
def ensure_numpy() -> None:
    try:
        import numpy  # noqa: F401
        return
    except ImportError:
        pass
    python = converter_paths()[0]
    if os.environ.get("CF_MAKE_TINY_DEEPSEEK_REEXEC"):
        sys.exit("make_tiny_deepseek.py: numpy not importable in the converter environment")
    os.environ["CF_MAKE_TINY_DEEPSEEK_REEXEC"] = "1"
    os.execv(python, [python, __file__, *sys.argv[1:]])


def make_all(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, spec in MODELS.items():
        write_hf_folder(out_dir / name, name, spec)
        convert(out_dir / name, out_dir / f"{name}.gguf")
        if name in LEGACY_GGUF:
            convert(out_dir / name, out_dir / LEGACY_GGUF[name], legacy=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--run-converter":
        # --run-converter <converter folder> <pre> -- <converter arguments>
        run_converter(sys.argv[2], sys.argv[3], sys.argv[5:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=str(OUT_DIR), help="output folder (default: %(default)s)")
    parser.add_argument("--check", action="store_true",
                        help="rebuild into a temporary folder and compare with --out-dir; writes nothing")
    args = parser.parse_args()
    ensure_numpy()
    if not args.check:
        make_all(Path(args.out_dir))
        return
    with tempfile.TemporaryDirectory(prefix="cf-tiny-deepseek-") as tmp:
        make_all(Path(tmp))
        differ = []
        for path in sorted(Path(tmp).rglob("*")):
            if path.is_file():
                rel = path.relative_to(tmp)
                if not filecmp.cmp(path, Path(args.out_dir) / rel, shallow=False):
                    differ.append(str(rel))
        if differ:
            sys.exit("make_tiny_deepseek.py --check: differ from the committed files: " + ", ".join(differ))
        print("make_tiny_deepseek.py --check: identical")


if __name__ == "__main__":
    main()
