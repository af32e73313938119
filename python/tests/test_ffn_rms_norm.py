"""llama_ffn_layer and rms_norm against numpy (oracle.py) on every backend."""
from __future__ import annotations

import numpy as np
import pytest

import clusterfusion
import oracle


def ffn_case(seed: int, dtype=np.float16, batch: int = 3, hidden: int = 256, ffn_hidden: int = 384,
             residual: bool = True):
    rng = np.random.default_rng(seed)
    return dict(
        hidden=rng.standard_normal((batch, hidden)).astype(dtype),
        residual=rng.standard_normal((batch, hidden)).astype(dtype) if residual else None,
        gate_up=(rng.standard_normal((2 * ffn_hidden, hidden)) * hidden**-0.5).astype(dtype),
        down=(rng.standard_normal((hidden, ffn_hidden)) * ffn_hidden**-0.5).astype(dtype),
        norm=(1.0 + 0.1 * rng.standard_normal(hidden)).astype(dtype),
    )


@pytest.mark.parametrize("residual", [True, False])
def test_ffn_matches_numpy(device, residual):
    c = ffn_case(10 + residual, residual=residual)
    want_out, want_res = oracle.ffn_layer(c["hidden"], c["residual"], c["gate_up"], c["down"], c["norm"], 1e-5)
    out = device.put(np.full_like(c["hidden"], np.nan))
    res = device.put(np.full_like(c["hidden"], np.nan))
    clusterfusion.llama_ffn_layer(out, res, device.put(c["hidden"]), device.put(c["residual"]),
                                  device.put(c["gate_up"]), device.put(c["down"]), device.put(c["norm"]), 1e-5,
                                  backend="auto" if device.cuda else device.backend, check_status=device.cuda)
    out, res = device.get(out), device.get(res)
    tol = 2e-3 if device.backend == "reference" else 2e-2
    np.testing.assert_allclose(out.astype(np.float32), want_out.astype(np.float32), rtol=tol,
                               atol=tol * oracle.rms(want_out))
    np.testing.assert_array_equal(res.view(np.uint16), want_res.view(np.uint16))


def test_ffn_float32_reference():
    c = ffn_case(12, dtype=np.float32, batch=2, hidden=64, ffn_hidden=96)
    want_out, want_res = oracle.ffn_layer(c["hidden"], c["residual"], c["gate_up"], c["down"], c["norm"], 1e-6)
    out, res = np.empty_like(c["hidden"]), np.empty_like(c["hidden"])
    clusterfusion.llama_ffn_layer(out, res, c["hidden"], c["residual"], c["gate_up"], c["down"], c["norm"], 1e-6)
    np.testing.assert_allclose(out, want_out, rtol=1e-4, atol=1e-5 * oracle.rms(want_out))
    np.testing.assert_array_equal(res, want_res)


@pytest.mark.parametrize("with_residual", [True, False])
def test_rms_norm(device, with_residual):
    if device.backend == "emu":
        pytest.skip("rms_norm has no emulated kernel (the reference runs for CPU arrays)")
    rng = np.random.default_rng(20)
    x = rng.standard_normal((5, 128)).astype(np.float16)
    r = rng.standard_normal((5, 128)).astype(np.float16) if with_residual else None
    w = (1 + 0.1 * rng.standard_normal(128)).astype(np.float16)
    s = x.astype(np.float32) + (r.astype(np.float32) if with_residual else 0)
    want = oracle.rmsnorm(s, w, 1e-6).astype(np.float16)
    out = device.put(np.zeros_like(x))
    res = device.put(np.zeros_like(x)) if with_residual else None
    clusterfusion.rms_norm(out, device.put(x), device.put(w), 1e-6, residual=device.put(r), residual_output=res)
    np.testing.assert_allclose(device.get(out).astype(np.float32), want.astype(np.float32), rtol=2e-3, atol=2e-3)
    if with_residual:
        np.testing.assert_array_equal(device.get(res), s.astype(np.float16))


def test_rms_norm_float32_in_place_1d():
    x = np.linspace(-2, 3, 64, dtype=np.float32)
    w = np.full(64, 0.5, np.float32)
    want = oracle.rmsnorm(x, w, 1e-5)
    clusterfusion.rms_norm(x, x, w)  # output over input, default eps
    np.testing.assert_allclose(x, want, rtol=1e-6, atol=1e-6)


def test_ffn_shape_rules_of_the_kernel():
    """The fused kernel's own limits come back as ValueError (ffn_hidden must be a multiple of 16)."""
    c = ffn_case(13, hidden=64, ffn_hidden=40)
    out, res = np.empty_like(c["hidden"]), np.empty_like(c["hidden"])
    with pytest.raises(ValueError, match="ffn_hidden 40"):
        clusterfusion.llama_ffn_layer(out, res, c["hidden"], c["residual"], c["gate_up"], c["down"], c["norm"], 1e-5,
                                      backend="emu")
    clusterfusion.llama_ffn_layer(out, res, c["hidden"], c["residual"], c["gate_up"], c["down"], c["norm"], 1e-5)
    assert np.isfinite(out.astype(np.float32)).all()  # the reference has no such limit


def test_ffn_outputs_may_be_the_inputs(device):
    """output over hidden_states and residual_output over residual, as a decode loop updates in place."""
    c = ffn_case(14)
    want_out, want_res = oracle.ffn_layer(c["hidden"], c["residual"], c["gate_up"], c["down"], c["norm"], 1e-5)
    hidden, residual = device.put(c["hidden"]), device.put(c["residual"])
    clusterfusion.llama_ffn_layer(hidden, residual, hidden, residual, device.put(c["gate_up"]), device.put(c["down"]),
                                  device.put(c["norm"]), 1e-5, backend="auto" if device.cuda else device.backend)
    out, res = device.get(hidden), device.get(residual)
    tol = 2e-3 if device.backend == "reference" else 2e-2
    np.testing.assert_allclose(out.astype(np.float32), want_out.astype(np.float32), rtol=tol,
                               atol=tol * oracle.rms(want_out))
    np.testing.assert_array_equal(res.view(np.uint16), want_res.view(np.uint16))
