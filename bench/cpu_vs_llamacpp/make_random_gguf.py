#!/usr/bin/env python3
"""Writes a GGUF with the metadata (architecture, tokenizer, chat template) of an existing model and random F16
weights of the same shapes, for benchmarks: llama-quantize then makes the other weight types from it.

    make_random_gguf.py SOURCE.gguf OUT.gguf [--seed N]

Matrices: normal(0, 1 / sqrt(in)) (activations stay O(1) through the layers); norms: 1 + normal(0, 0.02).
Needs the python packages gguf and numpy.
"""
import argparse
import sys

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter

SKIPPED_KEYS = ("GGUF.", "general.architecture", "general.file_type")
MOSTLY_F16 = 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    reader = GGUFReader(args.source)
    arch = reader.fields["general.architecture"].contents()
    writer = GGUFWriter(args.out, arch)
    for name, field in reader.fields.items():
        if name.startswith(SKIPPED_KEYS):
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), value_type, sub_type)
    writer.add_file_type(MOSTLY_F16)
    rng = np.random.default_rng(args.seed)
    for tensor in reader.tensors:
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))  # rows, cols (GGUF lists ne innermost first)
        if len(shape) == 1:
            values = (1.0 + rng.normal(0.0, 0.02, shape)).astype(np.float32)
        else:
            values = rng.normal(0.0, 1.0 / np.sqrt(shape[-1]), shape).astype(np.float16)
        writer.add_tensor(tensor.name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
