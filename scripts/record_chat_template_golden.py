#!/usr/bin/env python3
"""Records golden chat-template renderings for tests/unit/runtime/test_chat_template.cpp.

Reads the Jinja chat template stored in a GGUF file's metadata (tokenizer.chat_template), renders it with the
python jinja2 package for a few conversations (the way HF transformers does: sandboxed environment, trim_blocks,
lstrip_blocks) and writes the template plus the expected strings to a JSON file. The C++ renderer must produce the
same strings; the C++ test needs neither python nor the model.

    python3 scripts/record_chat_template_golden.py [MODEL.gguf] [OUT.json]

Defaults: the default model in the cache and tests/data/chat_template/smollm2.json.
"""
import json
import os
import struct
import sys

import jinja2.sandbox

GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
GGUF_STRING, GGUF_ARRAY = 8, 9


def gguf_metadata(path):
    """The key/value metadata of a GGUF file (arrays of strings are skipped over, not decoded)."""
    with open(path, "rb") as f:
        def read(fmt):
            return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))

        def read_string():
            (n,) = read("Q")
            return f.read(n).decode("utf-8")

        def read_value(kind):
            if kind == GGUF_STRING:
                return read_string()
            if kind == GGUF_ARRAY:
                item_kind, count = read("IQ")
                return [read_value(item_kind) for _ in range(count)]
            return read(GGUF_SCALARS[kind])[0]

        if f.read(4) != b"GGUF":
            raise SystemExit(f"{path}: not a GGUF file")
        (version,) = read("I")
        _tensor_count, kv_count = read("QQ")
        meta = {}
        for _ in range(kv_count):
            key = read_string()
            (kind,) = read("I")
            meta[key] = read_value(kind)
        return meta


def default_model():
    cache = os.environ.get("CF_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "clusterfusion")
    return os.path.join(cache, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


CONVERSATIONS = [
    ([{"role": "user", "content": "Why is the sky blue?"}], True),
    ([{"role": "user", "content": "Why is the sky blue?"}], False),
    ([{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hello!"}], True),
    ([{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."},
      {"role": "user", "content": "And times 3?"}], True),
    ([{"role": "user", "content": "  spaces, \ttabs\nand newlines \n"},
      {"role": "assistant", "content": "Unicode: héllo wörld 日本語 🙂"}], False),
    ([], True),
]


def main():
    model = sys.argv[1] if len(sys.argv) > 1 else default_model()
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        os.path.dirname(__file__), "..", "tests", "data", "chat_template", "smollm2.json")
    meta = gguf_metadata(model)
    source = meta["tokenizer.chat_template"]
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(source)
    tokens = meta.get("tokenizer.ggml.tokens", [])
    special = {name: tokens[meta[key]] for name, key in
               [("bos_token", "tokenizer.ggml.bos_token_id"), ("eos_token", "tokenizer.ggml.eos_token_id")]
               if key in meta and meta[key] < len(tokens)}
    cases = []
    for messages, add_generation_prompt in CONVERSATIONS:
        text = template.render(messages=messages, add_generation_prompt=add_generation_prompt, **special)
        cases.append({"messages": messages, "add_generation_prompt": add_generation_prompt, "expected": text})
    doc = {
        "source": f"{os.path.basename(model)}: tokenizer.chat_template rendered by jinja2 {jinja2.__version__} "
                  "(sandboxed, trim_blocks, lstrip_blocks) with scripts/record_chat_template_golden.py",
        "template": source,
        "cases": cases,
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()
