"""The protocol cores stay sans-I/O: no socket, clock, global randomness, thread or file.

Every module of ``mesh/swim`` (and ``mesh/raft`` once it exists) is parsed with ``ast``, and
so is every ``mesh`` module it imports, recursively. Randomness comes in as a seeded
``random.Random``, so ``from random import Random`` is the one import from ``random`` allowed,
and even that class may not be instantiated inside a core (an unseeded one reads the OS).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mesh

MESH_DIR = Path(mesh.__file__).resolve().parent
CORE_PACKAGES = ("swim", "raft")
FORBIDDEN = frozenset({
    "zmq", "asyncio", "time", "random", "os", "socket", "threading", "select",
    # the same things by other names
    "selectors", "uvloop", "subprocess", "multiprocessing", "signal", "datetime", "secrets", "uuid",
    "io", "pathlib", "shutil", "tempfile", "concurrent", "sched",
})
ALLOWED_FROM = {("random", "Random")}
FORBIDDEN_CALLS = frozenset({"open", "__import__", "exec", "eval", "input", "print", "Random"})


def _module_path(name: str) -> Path | None:
    """The file of ``mesh.x.y`` (a module or a package's __init__), or None."""
    parts = name.split(".")
    if parts[0] != "mesh":
        return None
    base = MESH_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    rel = path.relative_to(MESH_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def problems(source: str, module: str = "mesh.swim.x") -> tuple[list[str], list[str]]:
    """(what breaks the rule, the mesh modules this source imports)."""
    tree = ast.parse(source)
    bad: list[str] = []
    internal: list[str] = []
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in FORBIDDEN:
                    bad.append(f"line {node.lineno}: import {alias.name}")
                elif top == "mesh":
                    internal.append(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:   # relative: resolve against our package
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            top = target.split(".")[0]
            if top in FORBIDDEN:
                for alias in node.names:
                    if (target, alias.name) not in ALLOWED_FROM:
                        bad.append(f"line {node.lineno}: from {target} import {alias.name}")
            elif top == "mesh":
                internal.append(target)
                internal.extend(f"{target}.{a.name}" for a in node.names)   # maybe submodules
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else None
            if name in FORBIDDEN_CALLS:
                bad.append(f"line {node.lineno}: calls {name}()")
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "importlib":
                bad.append(f"line {node.lineno}: importlib.{f.attr}()")
    return bad, internal


def core_modules() -> list[Path]:
    files: list[Path] = []
    for pkg in CORE_PACKAGES:
        d = MESH_DIR / pkg
        if d.is_dir():
            files.extend(sorted(d.rglob("*.py")))
    return files


def test_there_are_cores_to_check():
    names = {p.name for p in core_modules()}
    assert {"core.py", "wire.py", "formulas.py", "suspicion.py", "broadcasts.py"} <= names


def reach(path: Path) -> list[str]:
    """What breaks the rule in ``path`` and in every mesh module it reaches through imports."""
    seen: set[Path] = set()
    todo = [path]
    failures: list[str] = []
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        bad, internal = problems(p.read_text(), _module_name(p))
        failures.extend(f"{p.relative_to(MESH_DIR.parent)} {b}" for b in bad)
        for name in internal:
            q = _module_path(name)
            # importing mesh.x runs mesh/__init__.py first; the rule is about the cores
            if q is not None and q != MESH_DIR / "__init__.py":
                todo.append(q)
    return failures


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_core_module_is_sans_io(path: Path):
    failures = reach(path)
    assert not failures, "\n".join(failures)


def test_the_walk_finds_io_in_real_modules():
    assert any("zmq" in f for f in reach(MESH_DIR / "transport.py"))
    assert any("import os" in f for f in reach(MESH_DIR / "_core" / "__init__.py"))


@pytest.mark.parametrize("source", [
    "import time",
    "import os.path",
    "import asyncio as aio",
    "import zmq.asyncio",
    "from time import monotonic",
    "from random import randint",
    "from random import Random, random",
    "import random",
    "from socket import socket",
    "from threading import Lock",
    "import select",
    "from os import urandom",
    "def f():\n    import time\n    return time.time()",
    "from random import Random\nrng = Random()",
    "data = open('x').read()",
    "import importlib\nm = importlib.import_module('time')",
])
def test_the_checker_catches(source):
    bad, _ = problems(source)
    assert bad, source


@pytest.mark.parametrize("source", [
    "from __future__ import annotations\nfrom random import Random\ndef f(rng: Random) -> int:\n"
    "    return rng.randrange(3)",
    "import math\nfrom typing import Iterable\nfrom dataclasses import dataclass",
    "from mesh.errors import ProtocolError",
    "timeout_ms = 5\nos_name = 'x'",
])
def test_the_checker_allows(source):
    bad, _ = problems(source)
    assert bad == []


def test_the_checker_follows_mesh_imports():
    _, internal = problems("from mesh.swim.messages import Update\nimport mesh.errors\nfrom . import wire",
                           "mesh.swim.core")
    assert {"mesh.swim.messages", "mesh.errors", "mesh.swim.wire"} <= set(internal)
    assert _module_path("mesh.swim.messages") == MESH_DIR / "swim" / "messages.py"
    assert _module_path("mesh.swim") == MESH_DIR / "swim" / "__init__.py"
    assert _module_path("zmq") is None
