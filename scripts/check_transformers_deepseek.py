#!/usr/bin/env python3
"""Compares transformers' own DeepSeek-V2 port with the float64 oracle (scripts/deepseek_oracle.py) on the tiny models,
as it is and with its softmax scale given YaRN's mscale^2 factor, which the port omits (docs/mla.md §1.3, §2).
Prints the max |logit difference|; writes nothing. Runs in the converter's environment (scripts/build_gguf_converter.sh
provides torch and transformers 4.57.6); re-executes itself there when torch is missing here.

    scripts/check_transformers_deepseek.py
"""
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOKENS = [0, 5, 100, 200, 7, 599, 3, 42, 42, 17, 300, 301, 302]


def main() -> None:
    try:
        import torch
        from transformers import AutoModelForCausalLM
    except ImportError:
        out = subprocess.run([str(HERE / "build_gguf_converter.sh"), "--print"], capture_output=True, text=True)
        if out.returncode != 0 or os.environ.get("CF_CHECK_TRANSFORMERS_REEXEC"):
            sys.exit("check_transformers_deepseek.py: needs torch + transformers: run scripts/build_gguf_converter.sh")
        os.environ["CF_CHECK_TRANSFORMERS_REEXEC"] = "1"
        python = out.stdout.split()[0]
        os.execv(python, [python, __file__, *sys.argv[1:]])
    import numpy as np
    sys.path.insert(0, str(HERE))
    import deepseek_oracle

    for name in ("tiny_mla", "tiny_mla_qlora"):
        folder = HERE.parent / "tests" / "data" / "deepseek" / name
        oracle = deepseek_oracle.DeepseekV2.from_folder(folder)
        want = oracle.forward_expanded(TOKENS)
        model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float64, attn_implementation="eager")
        with torch.no_grad():
            as_is = model(torch.tensor([TOKENS])).logits[0].numpy()
            factor = oracle.scale / model.model.layers[0].self_attn.scaling
            for layer in model.model.layers:
                layer.self_attn.scaling *= factor
            rescaled = model(torch.tensor([TOKENS])).logits[0].numpy()
        print(f"{name}: transformers {__import__('transformers').__version__} vs oracle: max |dlogit| "
              f"{np.abs(as_is - want).max():.3g} as is, {np.abs(rescaled - want).max():.3g} with the softmax scale "
              f"times {factor:.4f} (norm_topk_prob {oracle.norm_topk}, routed_scaling_factor {oracle.routed_scale})")


if __name__ == "__main__":
    main()
