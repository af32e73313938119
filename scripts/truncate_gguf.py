#!/usr/bin/env python3
"""Writes a copy of a llama-family GGUF model that keeps only its first N transformer blocks.

The copy has the real tokenizer, chat template, embeddings and weight types (e.g. the default model's Q4_1) but is
small enough to carry to a machine without network: SmolLM2-135M-Instruct Q4_1 with 10 of its 30 blocks is ~45 MB.
Its text is not meaningful (the later blocks are missing); it exercises the whole load -> backend -> chat path on
real weights, and GPU backends are compared with the cpu backend on it (tests/gpu/backends, $CF_GPU_TEST_MODEL).

usage: python3 scripts/truncate_gguf.py IN.gguf OUT.gguf --blocks N     (needs the `gguf` package)
"""
import argparse
import re
import sys

import gguf


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--blocks", type=int, required=True)
    args = ap.parse_args()
    reader = gguf.GGUFReader(args.src)
    arch_field = reader.fields["general.architecture"]
    arch = arch_field.contents()
    count_key = f"{arch}.block_count"
    blocks = int(reader.fields[count_key].contents())
    if not 1 <= args.blocks <= blocks:
        print(f"truncate_gguf: --blocks {args.blocks} outside [1, {blocks}]", file=sys.stderr)
        return 2
    writer = gguf.GGUFWriter(args.dst, arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue  # written by the writer itself
        value = args.blocks if name == count_key else field.contents()
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, value, vtype, sub_type)
    block_re = re.compile(r"^blk\.(\d+)\.")
    kept = 0
    for t in reader.tensors:
        m = block_re.match(t.name)
        if m and int(m.group(1)) >= args.blocks:
            continue
        writer.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
        kept += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"truncate_gguf: wrote {args.dst}: {args.blocks} of {blocks} blocks, {kept} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
