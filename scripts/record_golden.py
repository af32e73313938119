#!/usr/bin/env python3
"""Records golden data for the default model from independent implementations (see tests/data/golden/README.md).

1. llama.cpp on the Q4_1 file (llama-cpp-python, built by scripts/build_llama_cpp_python.sh): its tokenization of
   every prompt, a greedy continuation, and at every position the top-k (token id, logit) pairs and the log-sum-exp
   of the full logit vector. Its CPU path quantises activations to 8 bits, so its logits are noisy (~0.2 rms).
2. llama.cpp on an F32 copy of the same weights (F32 KV cache): the same math as an fp32 engine; fed the same tokens
   (teacher forcing), plus its own free-running greedy continuation.
3. A plain numpy forward pass written here (weights dequantised with the `gguf` package, all math in float64), fed
   the same tokens.

Also records llama.cpp's tokenization of tricky strings (tokenize.json).

    scripts/build_llama_cpp_python.sh        # once (several minutes)
    scripts/record_golden.py                 # writes tests/data/golden/{greedy,tokenize}.json (a few minutes)
    scripts/record_golden.py --compare-only  # prints the differences between the implementations, writes nothing

When run by a python without llama_cpp it re-executes itself with the private environment's python.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DEFAULT_OUT = REPO / "tests" / "data" / "golden"

N_PREDICT = 48
TOP_K = 10
SEED = 1234
N_CTX = 512
LOGIT_DECIMALS = 4
GGML_TYPE_F32 = 0

SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def chatml(messages: list[tuple[str, str]]) -> str:
    """SmolLM2's chat template (ChatML; default system prompt when none is given) with the generation prompt."""
    if not messages or messages[0][0] != "system":
        messages = [("system", SYSTEM_PROMPT)] + messages
    text = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in messages)
    return text + "<|im_start|>assistant\n"


# (name, kind, text). kind "text": plain continuation, tokenized without special-token parsing;
# kind "chat": ChatML, tokenized with special tokens parsed.
PROMPTS = [
    ("prose_en", "text",
     "The history of the printing press begins in the fifteenth century, when"),
    ("short", "text", "Once upon a time"),
    ("code_python", "text",
     'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    if n < 2:\n        return n\n'),
    ("list", "text", "Shopping list:\n1. Milk\n2. Eggs\n3. Bread\n4."),
    ("arithmetic", "text",
     "Question: What is 17 + 25?\nAnswer: 17 + 25 = 42.\nQuestion: What is 123 * 4?\nAnswer:"),
    ("unicode_emoji", "text",
     "Le café de la gare 🚂 est très célèbre — 東京 et la façade naïve 😀. In English, this means"),
    ("whitespace", "text",
     "    indented line\n\n\n\tTabbed\t\tcolumns   and   spaces\n        more indent:"),
    ("json", "text", '{"name": "Alice", "age": 30, "languages": ["English", "'),
    ("dialogue", "text", "\"I can't believe it's already December,\" she said. \"We'll"),
    ("chat_capital", "chat", chatml([("user", "What is the capital of France?")])),
    ("chat_explain", "chat", chatml([("user", "Explain in two sentences what a CPU does.")])),
    ("chat_multiturn", "chat", chatml([("user", "Hi! My name is Sam."),
                                        ("assistant", "Hello Sam! How can I help you today?"),
                                        ("user", "What is 2 + 2?")])),
]

# Strings for the tokenizer test: (text, parse_special).
TOKENIZE_STRINGS = [
    ("", False), (" ", False), ("  ", False), ("   leading spaces", False), ("trailing spaces   ", False),
    ("\n", False), ("\n\n", False), ("\n\n\n", False), ("line1\nline2", False), ("\r\n", False),
    ("    \n    \n", False), ("\t", False), ("\ttab\t\ttabs", False),
    ("Hello world", False), (" Hello world", False), ("Hello, World!", False), ("HELLO hello HeLLo", False),
    ("don't I'm we'll they've it's you're He'd", False), ("DON'T WE'LL", False),
    ("1234567890", False), ("3.14159", False), ("1,000,000", False), ("2024-01-15", False), ("x = 42 + 7", False),
    ("café naïve façade", False), ("Ünïcödé", False), ("日本語のテキスト", False), ("中文", False),
    ("Привет, мир!", False), ("مرحبا بالعالم", False), ("a\u00a0b", False), ("ﬁ ligature", False),
    ("ℕ ∑ ∫ √ ≤ ≥", False),
    ("😀", False), ("👍🏽", False), ("👨‍👩‍👧‍👦", False), ("🚀 launch", False), ("a😀b", False),
    ("def f(x):\n    return x ** 2\n", False), ("for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}", False),
    ("<html><body>Hi</body></html>", False), ("https://example.com/path?q=1&r=2", False),
    ("email@example.com", False), ("$100.00 (approx.)", False), ("!!!???...", False), ("—–-", False),
    ("<|im_start|>user\nHi<|im_end|>\n", False), ("<|im_start|>user\nHi<|im_end|>\n", True),
    ("<|endoftext|>", False), ("<|endoftext|>", True),
]


# ---------------------------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    if os.environ.get("CF_CACHE_DIR"):
        return Path(os.environ["CF_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clusterfusion"


def ensure_llama_cpp(script: str = __file__) -> None:
    """Re-executes `script` with the private environment's python when llama_cpp is not importable here."""
    try:
        import llama_cpp  # noqa: F401
        import gguf  # noqa: F401
        return
    except ImportError:
        pass
    venv_python = cache_dir() / "llama-cpp-venv" / "bin" / "python"
    # (the venv's python is a symlink to the base interpreter, so compare by the guard variable, not by path)
    if venv_python.exists() and not os.environ.get("CF_RECORD_GOLDEN_REEXEC"):
        os.environ["CF_RECORD_GOLDEN_REEXEC"] = "1"
        os.execv(str(venv_python), [str(venv_python), script, *sys.argv[1:]])
    sys.exit(f"{Path(script).name}: llama_cpp/gguf not importable; run scripts/build_llama_cpp_python.sh first")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rounded(values) -> list[float]:
    return [round(float(v), LOGIT_DECIMALS) for v in values]


def log_sum_exp(logits):
    import numpy as np
    m = np.max(logits, axis=-1, keepdims=True)
    return (m + np.log(np.sum(np.exp(logits - m), axis=-1, keepdims=True)))[..., 0]


# ---------------------------------------------------------------------------------------------------------------
class NumpyLlama:
    """A direct Llama forward pass in numpy, used as an oracle independent of llama.cpp and of our engine.

    mode "fp64": weights dequantised exactly, every activation and accumulation in float64.
    mode "fp32": the same in float32 (what a plain fp32 engine does).
    mode "llama_cpp_rounding": float64 math, but rounding where llama.cpp's CPU path rounds: matmul inputs
      quantised to Q8_1 (for Q4_1 weights, block sum stored in fp16) or Q8_0 (for Q8_0 weights) with fp16 block
      scales, and the KV cache, the attention query and the attention probabilities in fp16.
    """

    def __init__(self, model_path: Path):
        import numpy as np
        import gguf
        self.np = np
        reader = gguf.GGUFReader(str(model_path))

        def field(name):
            return reader.fields[name].contents()

        self.n_layer = int(field("llama.block_count"))
        self.n_embd = int(field("llama.embedding_length"))
        self.n_head = int(field("llama.attention.head_count"))
        self.n_head_kv = int(field("llama.attention.head_count_kv"))
        self.head_dim = self.n_embd // self.n_head
        self.eps = float(np.float32(field("llama.attention.layer_norm_rms_epsilon")))
        self.rope_base = float(field("llama.rope.freq_base"))
        self.weights = {}      # name -> float32 array (out, in) or (n,)
        self.q4_1_mins = {}    # name -> float64 array (out, in/32): Q4_1 block minimum (for the Q8_1 sum term)
        self.types = {}
        for t in reader.tensors:
            w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            self.weights[t.name] = w
            self.types[t.name] = t.tensor_type.name
            if t.tensor_type == gguf.GGMLQuantizationType.Q4_1:
                blocks = np.asarray(t.data).reshape(w.shape[0], -1, 20)  # d f16, m f16, 16 bytes of nibbles
                self.q4_1_mins[t.name] = blocks[:, :, 2:4].copy().view(np.float16)[..., 0].astype(np.float64)
        self.output_name = "output.weight" if "output.weight" in self.weights else "token_embd.weight"

    # -- rounding helpers for the llama_cpp_rounding mode --
    def _f16(self, x):
        return x.astype(self.np.float16).astype(self.np.float64)

    def _q8_blocks(self, x):
        """Q8 quantisation of rows of x in blocks of 32 (llama.cpp's quantize_row_q8_0/q8_1)."""
        np = self.np
        x32 = x.astype(np.float32).reshape(x.shape[0], -1, 32)
        amax = np.max(np.abs(x32), axis=-1, keepdims=True)
        d = amax / np.float32(127)
        inv = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
        q = np.rint(x32 * inv)  # round half to even, as the AVX2 path
        d16 = d.astype(np.float16).astype(np.float64)
        return q.astype(np.float64), d.astype(np.float64), d16

    def _matmul(self, x, name, mode):
        np = self.np
        w = self.weights[name]
        if mode == "fp32":
            return x.astype(np.float32) @ w.T
        if mode == "fp64":
            return x @ w.T.astype(np.float64)
        q, d, d16 = self._q8_blocks(x)
        xq = (q * d16).reshape(x.shape)
        out = xq @ w.T.astype(np.float64)
        if self.types[name] == "Q4_1":
            # llama.cpp adds min * s with s = fp16(d * sum(q)) instead of fp16(d) * sum(q)
            sum_q = q.sum(axis=-1)
            delta = self._f16(d[..., 0] * sum_q) - d16[..., 0] * sum_q
            out += delta @ self.q4_1_mins[name].T
        elif self.types[name] not in ("Q8_0",):
            raise ValueError(f"llama_cpp_rounding: no rounding model for tensor type {self.types[name]} ({name})")
        return out

    def _rmsnorm(self, x, weight_name, mode):
        np = self.np
        dtype = np.float32 if mode == "fp32" else np.float64
        x = x.astype(dtype)
        scale = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + dtype(self.eps))
        return (x * scale * self.weights[weight_name].astype(dtype)).astype(dtype)

    def _rope(self, x, positions, dtype):
        """Adjacent-pair rotation (llama.cpp 'NORM' RoPE; the GGUF stores q/k rows already permuted for it)."""
        np = self.np
        half = self.head_dim // 2
        inv_freq = self.rope_base ** (-2.0 * np.arange(half, dtype=np.float64) / self.head_dim)
        angle = positions[:, None].astype(np.float64) * inv_freq[None, :]
        cos = np.cos(angle).astype(dtype)[:, None, :]
        sin = np.sin(angle).astype(dtype)[:, None, :]
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = even * sin + odd * cos
        return out

    def forward(self, tokens, mode="fp64"):
        """Logits for every position of a causal pass over tokens (positions 0..T-1): array (T, n_vocab)."""
        np = self.np
        dtype = np.float32 if mode == "fp32" else np.float64
        tokens = np.asarray(tokens, dtype=np.int64)
        seq = len(tokens)
        positions = np.arange(seq)
        x = self.weights["token_embd.weight"][tokens].astype(dtype)
        group = self.n_head // self.n_head_kv
        causal = np.triu(np.full((seq, seq), -np.inf, dtype=dtype), k=1)
        for layer in range(self.n_layer):
            p = f"blk.{layer}."
            h = self._rmsnorm(x, p + "attn_norm.weight", mode)
            q = self._matmul(h, p + "attn_q.weight", mode).astype(dtype).reshape(seq, self.n_head, self.head_dim)
            k = self._matmul(h, p + "attn_k.weight", mode).astype(dtype).reshape(seq, self.n_head_kv, self.head_dim)
            v = self._matmul(h, p + "attn_v.weight", mode).astype(dtype).reshape(seq, self.n_head_kv, self.head_dim)
            q = self._rope(q, positions, dtype)
            k = self._rope(k, positions, dtype)
            if mode == "llama_cpp_rounding":
                q, k, v = self._f16(q), self._f16(k), self._f16(v)
            k = np.repeat(k, group, axis=1)  # query head i uses kv head i // group
            v = np.repeat(v, group, axis=1)
            scores = np.einsum("qhd,khd->hqk", q, k) * dtype(1.0 / math.sqrt(self.head_dim)) + causal
            scores = scores - scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs = probs / probs.sum(axis=-1, keepdims=True)
            if mode == "llama_cpp_rounding":
                probs = self._f16(probs)
            attn = np.einsum("hqk,khd->qhd", probs, v).reshape(seq, self.n_embd)
            x = x + self._matmul(attn, p + "attn_output.weight", mode).astype(dtype)
            h = self._rmsnorm(x, p + "ffn_norm.weight", mode)
            gate = self._matmul(h, p + "ffn_gate.weight", mode).astype(dtype)
            up = self._matmul(h, p + "ffn_up.weight", mode).astype(dtype)
            act = gate / (1.0 + np.exp(-gate)) * up
            x = x + self._matmul(act, p + "ffn_down.weight", mode).astype(dtype)
        h = self._rmsnorm(x, "output_norm.weight", mode)
        return self._matmul(h, self.output_name, mode).astype(np.float64)


# ---------------------------------------------------------------------------------------------------------------
def load_llama_cpp(model_path: Path):
    import llama_cpp
    llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX, n_threads=1,
                          n_threads_batch=1, seed=SEED, logits_all=True, flash_attn=False, n_gpu_layers=0,
                          verbose=False)
    return llm


def write_f32_gguf(src: Path, dst: Path, oracle: "NumpyLlama") -> None:
    """Copies src with every tensor dequantised to F32 (metadata unchanged but the file type), so llama.cpp can run
    the same weights without quantising activations."""
    import gguf
    reader = gguf.GGUFReader(str(src))
    writer = gguf.GGUFWriter(str(dst), arch=str(reader.fields["general.architecture"].contents()))
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":  # the writer adds the architecture itself
            continue
        value = field.contents()
        if key == "general.file_type":
            value = int(gguf.LlamaFileType.ALL_F32)
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, field.types[0], sub_type=sub_type)
    for t in reader.tensors:
        writer.add_tensor(t.name, oracle.weights[t.name])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def load_llama_cpp_f32(model_path: Path):
    """llama.cpp on an F32 copy of the model with an F32 KV cache: no activation quantisation, no fp16 rounding."""
    import llama_cpp
    return llama_cpp.Llama(model_path=str(model_path), n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX, n_threads=1,
                           n_threads_batch=1, seed=SEED, logits_all=True, flash_attn=False, n_gpu_layers=0,
                           type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, verbose=False)


def llama_cpp_teacher_forced(llm, tokens: list[int]):
    """Logits after each of tokens (one batch)."""
    import numpy as np
    llm.reset()
    llm.eval(tokens)
    return np.array(llm.scores[:len(tokens)], dtype=np.float32)


def llama_cpp_run(llm, prompt_tokens: list[int], n_predict: int):
    """Evaluates the prompt in one batch, then greedy-decodes one token at a time (EOS does not stop it).

    Returns (generated ids, logits array (len(prompt)+n_predict-1, n_vocab)): row p holds the logits after
    token p, i.e. the prediction of token p+1.
    """
    import numpy as np
    llm.reset()
    llm.eval(prompt_tokens)
    generated = []
    for step in range(n_predict):
        last = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        token = int(np.argmax(last))
        generated.append(token)
        if step + 1 < n_predict:
            llm.eval([token])
    rows = len(prompt_tokens) + n_predict - 1
    logits = np.array(llm.scores[:rows], dtype=np.float32)
    return generated, logits


def table_at(logits, at_top):
    """A second implementation's logits at llama.cpp's top ids, plus its own log-sum-exp, argmax and top-2 margin."""
    import numpy as np
    logits = logits.astype(np.float64)
    top2 = np.sort(logits, axis=1)[:, -2:]
    return {
        "logits_at_top_ids": at_top,
        "lse": rounded(log_sum_exp(logits)),
        "argmax": [int(i) for i in np.argmax(logits, axis=1)],
        "top2_margin": rounded(top2[:, 1] - top2[:, 0]),
    }


def decode_text(llm, tokens: list[int]) -> tuple[str, bool]:
    """Detokenized text and whether it is exact (False: it ends inside a UTF-8 sequence, bytes were replaced)."""
    data = detokenize(llm, tokens)
    try:
        return data.decode("utf-8"), True
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), False


def detokenize(llm, tokens: list[int]) -> bytes:
    return llm.detokenize(tokens, special=True)


def top_k_ids(row, k: int):
    import numpy as np
    ids = np.argpartition(-row, k)[:k]
    return ids[np.lexsort((ids, -row[ids]))]  # by logit descending, ties by id


def record(args) -> None:
    import numpy as np
    import llama_cpp

    model_path = Path(args.model) if args.model else cache_dir() / "models" / MODEL_FILE
    if not model_path.exists():
        sys.exit(f"record_golden.py: model not found at {model_path}; run scripts/setup.sh")
    digest = sha256_of(model_path)
    if digest != MODEL_SHA256:
        sys.exit(f"record_golden.py: {model_path} has sha256 {digest}, expected {MODEL_SHA256}")

    llm = load_llama_cpp(model_path)
    oracle = NumpyLlama(model_path)
    bos = llm.token_bos()
    eos = llm.token_eos()
    # ~540 MB, kept until the end because llama.cpp maps the file
    f32_dir = tempfile.TemporaryDirectory(prefix="cf-golden-")
    f32_path = Path(f32_dir.name) / "model-f32.gguf"
    write_f32_gguf(model_path, f32_path, oracle)
    llm_f32 = load_llama_cpp_f32(f32_path)

    prompts_out = []
    summary = []
    for name, kind, text in PROMPTS:
        special = kind == "chat"
        ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=special)
        ids_no_bos = llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)
        assert detokenize(llm, ids) == text.encode("utf-8"), f"{name}: llama.cpp round trip failed"
        generated, logits = llama_cpp_run(llm, ids, args.n_predict)
        all_tokens = ids + generated
        f32 = llama_cpp_teacher_forced(llm_f32, all_tokens[:-1])
        ref64 = oracle.forward(all_tokens[:-1], "fp64")
        ref32 = oracle.forward(all_tokens[:-1], "fp32")
        emul = oracle.forward(all_tokens[:-1], "llama_cpp_rounding")

        top_ids, top_logits, f32_at_top, ref64_at_top = [], [], [], []
        for row_llama, row_f32, row64 in zip(logits, f32, ref64):
            t = top_k_ids(row_llama, TOP_K)
            top_ids.append([int(i) for i in t])
            top_logits.append(rounded(row_llama[t]))
            f32_at_top.append(rounded(row_f32[t]))
            ref64_at_top.append(rounded(row64[t]))

        gen_text, text_exact = decode_text(llm, generated)
        first_eos = next((i for i, t in enumerate(generated) if t == eos), None)

        # free-running greedy decoding with the same math as an fp32 engine (llama.cpp on the F32 copy), checked
        # step by step against the fp64 oracle fed the same tokens
        generated_f32, _ = llama_cpp_run(llm_f32, ids, args.n_predict)
        ref64_f32 = oracle.forward((ids + generated_f32)[:-1], "fp64")[len(ids) - 1:]
        ordered = np.sort(ref64_f32, axis=1)
        assert all(int(np.argmax(r)) == t for r, t in zip(ref64_f32, generated_f32)), f"{name}: f32 greedy != fp64"
        f32_text, f32_text_exact = decode_text(llm, generated_f32)
        same_prefix = next((i for i, (a, b) in enumerate(zip(generated, generated_f32)) if a != b), len(generated))
        prompts_out.append({
            "name": name,
            "kind": kind,
            "parse_special": special,
            "prompt": text,
            "bos_added": ids != ids_no_bos,
            "prompt_tokens": [int(i) for i in ids],
            "generated_tokens": [int(i) for i in generated],
            "generated_text": gen_text,
            "generated_text_exact": text_exact,
            "first_eos_step": first_eos,
            "llama_cpp_q4_1": {
                "top_ids": top_ids,
                "top_logits": top_logits,
                "lse": rounded(log_sum_exp(logits.astype(np.float64))),
            },
            "llama_cpp_f32": table_at(f32, f32_at_top),
            "numpy_fp64": table_at(ref64, ref64_at_top),
            "f32_greedy": {
                "generated_tokens": [int(i) for i in generated_f32],
                "generated_text": f32_text,
                "generated_text_exact": f32_text_exact,
                "first_eos_step": next((i for i, t in enumerate(generated_f32) if t == eos), None),
                "top2_margin_fp64": rounded(ordered[:, -1] - ordered[:, -2]),
                "same_as_q4_1_steps": same_prefix,
            },
        })
        summary.append(compare(name, ids, generated, logits, f32, ref64, ref32, emul))

    llm_f32.close()
    f32_dir.cleanup()
    print_summary(summary)
    if args.compare_only:
        return

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    producer = producer_info("scripts/record_golden.py", {"kv_cache_type": "f16"})
    model_info = {"file": MODEL_FILE, "sha256": MODEL_SHA256, "add_bos_token": False,
                  "bos_id": int(bos), "eos_id": int(eos), "n_vocab": int(llm.n_vocab())}
    greedy = {
        "description": "Golden data for the default model; fields are described in README.md in this folder. "
                       "Row r of every per-row table is the prediction after token r of prompt_tokens + "
                       "generated_tokens (rows 0 .. n_prompt + n_generated - 2); llama_cpp_f32 and numpy_fp64 are "
                       "given at llama_cpp_q4_1.top_ids.",
        "producer": producer,
        "model": model_info,
        "top_k": TOP_K,
        "n_predict": args.n_predict,
        "prompts": prompts_out,
    }
    write_json(out_dir / "greedy.json", greedy)

    tokenize_out = []
    for text, special in TOKENIZE_STRINGS:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=special)
        assert detokenize(llm, ids) == text.encode("utf-8"), f"tokenize round trip failed for {text!r}"
        tokenize_out.append({"text": text, "parse_special": special, "ids": [int(i) for i in ids]})
    write_json(out_dir / "tokenize.json", {
        "description": "llama.cpp's tokenization (add_special=true: the model adds no BOS) of tricky strings. "
                       "parse_special: whether special-token text such as <|im_start|> is matched as one token.",
        "producer": {k: producer[k] for k in ("script", "date_utc", "llama_cpp_python")},
        "model": model_info,
        "strings": tokenize_out,
    })


def producer_info(script: str, cache_settings: dict) -> dict:
    """Versions and llama.cpp settings of a recording (cache_settings: the KV cache types used)."""
    import numpy as np
    import llama_cpp
    return {
        "script": script,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "llama_cpp_python": llama_cpp.__version__,
        "llama_cpp_system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "gguf_python": __import__("importlib.metadata").metadata.version("gguf"),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "llama_cpp_settings": {"n_threads": 1, "n_threads_batch": 1, "n_ctx": N_CTX, "n_batch": N_CTX,
                               "seed": SEED, "logits_all": True, "flash_attn": False, "n_gpu_layers": 0,
                               **cache_settings, "sampling": "greedy argmax of raw logits",
                               "prompt": "evaluated in one batch", "continuation": "one token per eval"},
    }


def write_json(path: Path, obj) -> None:
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    # one prompt / one string per line keeps diffs readable
    text = text.replace(',{"name":', ',\n{"name":').replace(',{"text":', ',\n{"text":')
    path.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {path} ({path.stat().st_size} bytes)")


# ---------------------------------------------------------------------------------------------------------------
PAIRS = [  # (label, a, b): differences reported by --compare-only
    ("q4_1-fp64", "q4_1", "fp64"), ("q4_1-f32cpp", "q4_1", "f32cpp"), ("f32cpp-fp64", "f32cpp", "fp64"),
    ("np32-fp64", "np32", "fp64"), ("f32cpp-np32", "f32cpp", "np32"), ("q4_1-emul", "q4_1", "emul"),
]


def compare(name, ids, generated, q4_1, f32cpp, fp64, np32, emul):
    """Differences between the implementations at every row, over llama.cpp Q4_1's top-k ids of that row."""
    import numpy as np
    tables = {k: v.astype(np.float64) for k, v in
              dict(q4_1=q4_1, f32cpp=f32cpp, fp64=fp64, np32=np32, emul=emul).items()}
    rows = np.arange(len(q4_1))
    top = np.stack([top_k_ids(r, TOP_K) for r in tables["q4_1"]])
    logprob = {k: v - log_sum_exp(v)[:, None] for k, v in tables.items()}
    argmax = {k: np.argmax(v, axis=1) for k, v in tables.items()}
    ordered = np.sort(tables["q4_1"], axis=1)
    margin_q4_1 = ordered[:, -1] - ordered[:, -2]
    gen_rows = np.arange(len(ids) - 1, len(q4_1))
    q4_1_gap = tables["q4_1"][rows, top[:, 0]] - tables["q4_1"][rows, top[:, 1]]
    fp64_gap = tables["fp64"][rows, top[:, 0]] - tables["fp64"][rows, top[:, 1]]
    result = {"name": name, "rows": len(q4_1), "steps": len(generated), "margin_q4_1": margin_q4_1,
              "margin_err": np.abs(q4_1_gap - fp64_gap),
              "gen_rows": gen_rows, "pairs": {}}
    for label, a, b in PAIRS:
        diff_top = tables[a][rows[:, None], top] - tables[b][rows[:, None], top]
        diff_lp = logprob[a][rows[:, None], top] - logprob[b][rows[:, None], top]
        result["pairs"][label] = {
            "diff_top": np.abs(diff_top),
            "max_top": float(np.max(np.abs(diff_top))),
            "rms_top": float(np.sqrt(np.mean(diff_top ** 2))),
            "max_logprob_top": float(np.max(np.abs(diff_lp))),
            "max_all": float(np.max(np.abs(tables[a] - tables[b]))),
            "greedy_agree": int(np.sum(argmax[a][gen_rows] == argmax[b][gen_rows])),
            "argmax_agree": int(np.sum(argmax[a] == argmax[b])),
            "disagree_rows": np.nonzero(argmax[a] != argmax[b])[0],
        }
    return result


def print_summary(summary) -> None:
    import numpy as np
    print("per prompt: max |dlogit| over llama.cpp Q4_1's top-%d ids; greedy = generated steps where the argmaxes "
          "agree" % TOP_K)
    print(f"{'prompt':16} {'rows':>4} " + " ".join(f"{label:>12}" for label, _, _ in PAIRS)
          + "  greedy q4_1=fp64 q4_1=f32cpp f32cpp=fp64")
    for s in summary:
        p = s["pairs"]
        print(f"{s['name']:16} {s['rows']:4d} " + " ".join(f"{p[label]['max_top']:12.2e}" for label, _, _ in PAIRS)
              + f"  {p['q4_1-fp64']['greedy_agree']:10d}/{s['steps']} {p['q4_1-f32cpp']['greedy_agree']:9d}/"
              f"{s['steps']} {p['f32cpp-fp64']['greedy_agree']:8d}/{s['steps']}")
    print("\nover all prompts (top = llama.cpp Q4_1's top-%d ids of each row; lp = log-probabilities):" % TOP_K)
    for label, _, _ in PAIRS:
        diffs = np.concatenate([s["pairs"][label]["diff_top"].ravel() for s in summary])
        rows = sum(s["rows"] for s in summary)
        agree = sum(s["pairs"][label]["argmax_agree"] for s in summary)
        print(f"  {label:12} top: max {diffs.max():.3e} p99 {np.percentile(diffs, 99):.3e} "
              f"median {np.median(diffs):.3e} rms {np.sqrt(np.mean(diffs ** 2)):.3e} | lp top max "
              f"{max(s['pairs'][label]['max_logprob_top'] for s in summary):.3e} | all-vocab max "
              f"{max(s['pairs'][label]['max_all'] for s in summary):.3e} | argmax agree {agree}/{rows}")
    # how much the implementations disagree about the gap between Q4_1's top-1 and top-2 tokens
    gap_err = np.concatenate([s["margin_err"] for s in summary])
    print(f"\n|change of the Q4_1 top-1/top-2 gap| in fp64: max {gap_err.max():.3f} p99 {np.percentile(gap_err, 99):.3f}"
          f" median {np.median(gap_err):.3f}")
    margins = [(s["margin_q4_1"][r], s["name"], int(r)) for s in summary
               for r in s["pairs"]["q4_1-fp64"]["disagree_rows"]]
    print("\nrows where llama.cpp Q4_1 and numpy fp64 argmax differ (Q4_1 top-1/top-2 margin, prompt, row):")
    print("  " + " ".join(f"({m:.3f},{n},{r})" for m, n, r in sorted(margins, reverse=True)))
    gen_margins = np.concatenate([s["margin_q4_1"][s["gen_rows"]] for s in summary])
    for x in (0.25, 0.5, 1.0, 1.5, 2.0):
        print(f"  generated steps with Q4_1 margin > {x}: {int(np.sum(gen_margins > x))}/{len(gen_margins)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help=f"GGUF file (default: $CF_CACHE_DIR/models/{MODEL_FILE})")
    parser.add_argument("--out-dir", default=str(DEFAULT_OUT), help="output folder (default: %(default)s)")
    parser.add_argument("--n-predict", type=int, default=N_PREDICT, help="greedy tokens per prompt")
    parser.add_argument("--compare-only", action="store_true", help="print differences, write nothing")
    args = parser.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")  # before numpy loads: the machine is shared
    ensure_llama_cpp()
    record(args)


if __name__ == "__main__":
    main()
