"""examples/torch_decoder_layer.py runs: a GPU decode loop checked against torch math where there is a GPU, the CPU
reference path with torch CPU tensors otherwise, a clear skip line without torch."""
from __future__ import annotations

import subprocess
import sys

from conftest import REPO, torch_module


def test_torch_example_runs():
    done = subprocess.run([sys.executable, str(REPO / "examples" / "torch_decoder_layer.py"), "--steps", "4"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    if torch_module() is None:
        assert "skipped: PyTorch is not installed" in done.stdout
    else:
        assert "OK: the fused blocks match plain torch math" in done.stdout, done.stdout
