"""The compiled modules and their pure twins present one module, and the selector picks."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

from mesh._core import MODULES


@pytest.mark.parametrize("name", MODULES)
def test_twins_share_docstring_and_public_api(name):
    compiled = importlib.import_module(f"mesh._core.{name}")
    pure = importlib.import_module(f"mesh._core._pure.{name}")
    assert compiled.__doc__ == pure.__doc__
    assert "Theory of operation" in pure.__doc__
    assert compiled.PUBLIC_API == pure.PUBLIC_API
    for attr in pure.PUBLIC_API:
        assert hasattr(compiled, attr) and hasattr(pure, attr), attr


@pytest.mark.parametrize("flag, expected", [("1", "pure"), ("0", "cython")])
def test_mesh_pure_selects_the_implementation(flag, expected):
    env = dict(os.environ, MESH_PURE=flag)
    out = subprocess.run([sys.executable, "-m", "mesh", "--version"], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert f"({expected} hot path" in out
    code = "import mesh._core as c; print(c.IMPLEMENTATION, c.codec.__name__, c.router.__name__)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    prefix = "mesh._core._pure." if expected == "pure" else "mesh._core."
    assert out.split() == [expected, prefix + "codec", prefix + "router"]
