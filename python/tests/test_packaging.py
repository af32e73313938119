"""How the package builds: `pip install .` must not write into the source tree."""
from __future__ import annotations

import pytest

from conftest import REPO


def test_pip_install_builds_outside_the_source_tree():
    """build-dir in pyproject.toml made every `pip install .` write build/python/... into the checkout; the test
    script asks for its kept build folder on its own command line (python/run_tests.sh)."""
    tomllib = pytest.importorskip("tomllib")
    with open(REPO / "pyproject.toml", "rb") as f:
        config = tomllib.load(f)
    assert "build-dir" not in config["tool"]["scikit-build"]
    assert "build-dir=" in (REPO / "python" / "run_tests.sh").read_text()
