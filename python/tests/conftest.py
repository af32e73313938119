"""Shared fixtures: where the repository and the default model are, and how arrays reach each backend.

Backends of the kernel tests: "reference" (CPU, numpy arrays), "emu" (the fused kernels on the CPU emulator) and
"cuda" (torch CUDA tensors; skipped without a GPU, torch or the package's CUDA module).
"""
from __future__ import annotations

import os
import pathlib
from typing import Any, Optional

import numpy as np
import pytest

import clusterfusion

REPO = pathlib.Path(__file__).resolve().parents[2]


def torch_module() -> Optional[Any]:
    try:
        import torch  # noqa: PLC0415 - optional
    except ImportError:
        return None
    return torch


def gpu_ready() -> bool:
    torch = torch_module()
    return bool(torch is not None and torch.cuda.is_available() and clusterfusion.cuda_available())


def gpu_skip_reason() -> str:
    if torch_module() is None:
        return "no GPU test: torch is not installed"
    if not torch_module().cuda.is_available():
        return "no GPU test: no CUDA device"
    return "no GPU test: the CUDA module is unavailable (" + clusterfusion.cuda_build_error() + ")"


class Device:
    """Moves numpy arrays to where a backend runs and back."""

    def __init__(self, backend: str):
        self.backend = backend
        self.cuda = backend == "cuda"

    def put(self, x: Optional[np.ndarray]) -> Any:
        if x is None:
            return None
        if not self.cuda:
            return x.copy()  # the kernels write in place: leave the case's arrays as they were
        return torch_module().from_numpy(np.ascontiguousarray(x)).cuda()

    def get(self, x: Any) -> np.ndarray:
        if not self.cuda:
            return x
        torch_module().cuda.synchronize()
        return x.cpu().numpy()


@pytest.fixture(params=["reference", "emu", "cuda"])
def device(request) -> Device:
    if request.param == "cuda" and not gpu_ready():
        pytest.skip(gpu_skip_reason())
    return Device(request.param)


def default_model_file() -> Optional[str]:
    path = clusterfusion.default_model_path()
    return path if os.path.exists(path) else None


@pytest.fixture(scope="session")
def default_model_path() -> str:
    path = default_model_file()
    if path is None:
        pytest.skip("the default model is missing at " + clusterfusion.default_model_path() + " (scripts/setup.sh)")
    return path


def cli_binary() -> Optional[str]:
    """The command-line tool built by the normal CMake build ($CF_CLI, else build/default or build/cpu)."""
    candidates = [os.environ.get("CF_CLI", "")] + [str(REPO / "build" / p / "clusterfusion") for p in ("default", "cpu")]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None
