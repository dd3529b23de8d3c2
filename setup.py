"""Build the compiled hot path: every mesh/_core/*.pyx becomes an extension module.

MESH_NO_CYTHON=1 skips compilation; the package then runs on its pure-Python twins.
"""
from __future__ import annotations

import glob
import os

from setuptools import Extension, setup


def extensions() -> list[Extension]:
    if os.environ.get("MESH_NO_CYTHON") == "1":
        return []
    from Cython.Build import cythonize

    modules = [
        Extension(
            name="mesh._core." + os.path.splitext(os.path.basename(path))[0],
            sources=[path],
            extra_compile_args=["-O3"],
        )
        for path in sorted(glob.glob("mesh/_core/*.pyx"))
    ]
    return cythonize(
        modules,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )


setup(ext_modules=extensions())
