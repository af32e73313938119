#!/usr/bin/env python3
"""Records tokenizer goldens from independent implementations: Hugging Face `tokenizers` (byte-level BPE, its regex
pre-tokenizers) and `sentencepiece` (SentencePiece BPE). Run once; the outputs are committed under
tests/data/tokenizer/ and the C++ tests compare our tokenizers with them id for id.

  pretokenize_golden.json  splits of every test string by the gpt2 / llama3 / qwen2 / smollm pre-tokenizers
                           (tokenizers.pre_tokenizers.Split with each family's regex, Digits for smollm)
  smollm2_golden.json      token ids for the SmolLM2 vocabulary (read from the default model GGUF with the python
                           `gguf` package) under its own pre-tokenizer and, as extra coverage of the BPE core, under
                           the other families' pre-tokenizers; made with tokenizers.models.BPE
  tiny_<family>/           small byte-level BPE tokenizers trained here with tokenizers' BpeTrainer (tokenizer.json,
                           tokenizer_config.json) and golden.json with their ids
  tiny_spm/                a small SentencePiece BPE model trained here (tokenizer.model), the same model as a
                           Llama-2-style tokenizer.json (checked to agree with sentencepiece), golden.json with the
                           ids sentencepiece gives

Usage: python3 scripts/make_tokenizer_golden.py [--model PATH]   (needs: pip install tokenizers sentencepiece gguf)
"""
import argparse
import codecs
import contextlib
import importlib.metadata
import io
import json
import os
import shutil
from pathlib import Path

import sentencepiece as spm
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "tokenizer"

GPT2_RE = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_RE = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
             r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN2_RE = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
            r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

STRINGS = [
    "",
    " ",
    "Hello world",
    "Hello, world! How are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure they're here; we've said it's fine, you'll see, he'd know.",
    "DON'T SHOUT: I'M HERE, THEY'RE GONE, WE'VE WON",
    "a  b   c    d",
    "   leading spaces",
    "trailing spaces   ",
    "\t\ttabs\tand\tmore",
    "line one\nline two\n\n\nline five\n",
    "windows\r\nline\r\n\r\nends",
    " \n \n  \n",
    "1234567890",
    "pi is 3.14159, e is 2.71828; 1,000,000 and 12345 and 2024-11-26",
    "naïve café résumé über Grüße",
    "日本語のテキストと漢字",
    "你好，世界！这是一个测试。",
    "Привет, мир! Как дела?",
    "مرحبا بالعالم",
    "한국어 텍스트 123",
    "Emoji: 👋🏽 hello 🌍! 👨‍👩‍👧 family, 🇫🇷 flag",
    "def square(x):\n    return x ** 2  # comment\n",
    "if (a <= b && c != d) { x += 1; } else { y--; }",
    "<html><body class=\"main\">Text &amp; more</body></html>",
    "https://example.com/path/to/page?query=1&lang=en#frag",
    "email: someone@example.org, phone: +1 (555) 123-4567",
    "Hello!!! What??? ... --- *** ###",
    "ABC123def456GHI",
    "x² + y³ = z½ and ⅓ ⅔ ④ Ⅻ",
    "Ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ",
    "e\u0301 vs \u00e9: combining accent",
    "non\u00a0breaking\u2003em\u3000ideographic spaces",
    "zero\u200bwidth\u200djoiner",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more text<|im_end|>",
    "'s 's 'S 'll 'LL 're 'Re",
    "Mixed\tWhitespace \n\t \r\n end",
    "1 12 123 1234 12345 123456",
    "١٢٣ ٤٥٦ Arabic-Indic digits",
]

CORPUS = [
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.",
    "Hello world, hello there, hello again. How are you doing today? I'm fine, thanks!",
    "They're going to the market; we've been there before. It's a nice place, you'll like it.",
    "Numbers like 1234567890, 3.14159 and 2.71828 appear in text, as do dates such as 2024-11-26.",
    "def main():\n    for i in range(10):\n        print(i * i)\n    return 0\n",
    "Les élèves ont étudié la leçon. Über den Wolken muss die Freiheit wohl grenzenlos sein.",
    "日本語の文章です。中文文本测试。Русский текст для обучения. 한국어 문장입니다.",
    "Emoji 😀😃😄 and symbols ★☆♥ are part of modern text too 👋🌍.",
    "    indented lines\n\ttabbed lines\n\nblank lines between paragraphs\r\n",
]
with contextlib.redirect_stdout(io.StringIO()):
    import this  # the Zen of Python (printed on import), part of the training corpus
CORPUS += codecs.decode(this.s, "rot13").splitlines()


def default_model():
    cache = os.environ.get("CF_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "clusterfusion")
    return os.path.join(cache, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def family_pre_tokenizer(family, byte_level_after=False):
    """The family's regex splitting; byte_level_after adds the byte-level mapping (for full tokenizers)."""
    if family == "smollm":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]) \
            if byte_level_after else pre_tokenizers.Sequence([
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.Split(Regex(GPT2_RE), behavior="isolated")])
    regex = {"gpt2": GPT2_RE, "llama3": LLAMA3_RE, "qwen2": QWEN2_RE}[family]
    if family == "gpt2" and byte_level_after:
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    split = pre_tokenizers.Split(Regex(regex), behavior="isolated")
    if byte_level_after:
        return pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return split


FAMILIES = ["gpt2", "llama3", "qwen2", "smollm"]


def write_json(path, doc):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def versions():
    return {p: importlib.metadata.version(p) for p in ("tokenizers", "sentencepiece", "gguf")}


def pretokenize_golden():
    doc = {"generator": "scripts/make_tokenizer_golden.py", "versions": versions(), "families": {}}
    for fam in FAMILIES:
        pt = family_pre_tokenizer(fam)
        doc["families"][fam] = [[piece for piece, _ in pt.pre_tokenize_str(s)] for s in STRINGS]
    doc["strings"] = STRINGS
    write_json(OUT / "pretokenize_golden.json", doc)


def byte_level_tokenizer(vocab, merges, family, specials):
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=(family == "llama3")))
    tok.pre_tokenizer = family_pre_tokenizer(family, byte_level_after=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return tok


def smollm2_golden(model_path):
    import gguf
    if not os.path.exists(model_path):
        print(f"warning: {model_path} not found; skipping smollm2_golden.json")
        return
    r = gguf.GGUFReader(model_path)
    f = r.fields

    def strings(key):
        field = f[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    tokens = strings("tokenizer.ggml.tokens")
    types = [int(f["tokenizer.ggml.token_type"].parts[i][0]) for i in f["tokenizer.ggml.token_type"].data]
    merges = [tuple(m.split(" ")) for m in strings("tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    specials = [t for t, ty in zip(tokens, types) if ty == 3]
    doc = {"generator": "scripts/make_tokenizer_golden.py: tokenizers.models.BPE over the vocabulary and merges of "
                        + os.path.basename(model_path), "versions": versions(), "strings": STRINGS, "ids": {}}
    for fam in FAMILIES:
        tok = byte_level_tokenizer(vocab, merges, fam, specials)
        doc["ids"][fam] = [tok.encode(s, add_special_tokens=False).ids for s in STRINGS]
    write_json(OUT / "smollm2_golden.json", doc)


def tiny_byte_level():
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    base = Tokenizer(models.BPE())
    base.pre_tokenizer = family_pre_tokenizer("smollm", byte_level_after=True)
    base.train_from_iterator(CORPUS * 3, trainer=trainer)
    state = json.loads(base.to_str())
    vocab = state["model"]["vocab"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["model"]["merges"]]
    for fam in FAMILIES:
        tok = byte_level_tokenizer(vocab, merges, fam, SPECIALS)
        d = OUT / f"tiny_{fam}"
        d.mkdir(parents=True, exist_ok=True)
        tok.save(str(d / "tokenizer.json"))
        write_json(d / "tokenizer_config.json", {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
                                                  "add_bos_token": False})
        write_json(d / "golden.json", {
            "generator": f"scripts/make_tokenizer_golden.py: tokenizers BpeTrainer (vocab 600), {fam} pre-tokenizer",
            "versions": versions(), "strings": STRINGS,
            "ids": [tok.encode(s, add_special_tokens=False).ids for s in STRINGS]})


def tiny_sentencepiece():
    d = OUT / "tiny_spm"
    d.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 3), model_writer=model, model_type="bpe", vocab_size=700,
        byte_fallback=True, character_coverage=0.9995, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=True, split_digits=True, allow_whitespace_only_pieces=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, user_defined_symbols=["<|user|>"], max_sentence_length=100000,
        num_threads=1, minloglevel=2)
    (d / "tokenizer.model").write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    ids = [sp.encode(s) for s in STRINGS]
    # The same model as a Llama-2-style tokenizer.json: merges from the pieces ordered by the merged piece's score.
    pieces = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    vocab = {p: i for i, (p, _) in enumerate(pieces)}
    merges = []
    for piece, score in pieces:
        i = vocab[piece]
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or len(piece) < 2:
            continue
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in vocab and right in vocab:
                merges.append((score, vocab[left], vocab[right], left, right))
    merges.sort(key=lambda m: (-m[0], m[1], m[2]))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[(m[3], m[4]) for m in merges], unk_token="<unk>",
                               byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    tok.add_tokens([AddedToken("<|user|>", special=False, normalized=False)])
    tok.save(str(d / "tokenizer.json"))
    hf_ids = [tok.encode(s, add_special_tokens=False).ids for s in STRINGS]
    agree = [i for i, (a, b) in enumerate(zip(ids, hf_ids)) if a == b]
    write_json(d / "golden.json", {
        "generator": "scripts/make_tokenizer_golden.py: sentencepiece BPE trained here (vocab 700, byte fallback, "
                     "identity normaliser); ids from SentencePieceProcessor.encode; hf_agrees lists the strings on "
                     "which tokenizers with tokenizer.json gives the same ids",
        "versions": versions(), "strings": STRINGS, "ids": ids, "hf_ids": hf_ids, "hf_agrees": agree,
        "decoded": [sp.decode(x) for x in ids]})
    print(f"tiny_spm: {len(model.getvalue())} bytes, HF tokenizer.json agrees with sentencepiece on "
          f"{len(agree)}/{len(STRINGS)} strings")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=default_model())
    args = ap.parse_args()
    pretokenize_golden()
    smollm2_golden(args.model)
    tiny_byte_level()
    tiny_sentencepiece()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
