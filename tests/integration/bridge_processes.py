"""Children for the bridge tests (a bridge CLI, a server built with an SDK), started from the
test's event loop without blocking it: the mesh node in the test's process must keep
answering the child's join while the test waits for the child's ``ready <url>`` line."""
from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from typing import AsyncIterator

from tests.integration.cluster import ROOT

WAIT_S = 30.0           # generous: a loaded 2-core machine starts Python processes slowly


def child_env() -> dict[str, str]:
    """Our environment, with the repository importable (the SDKs give a stdio server only a
    minimal environment: pass this one explicitly)."""
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


@contextlib.asynccontextmanager
async def ready_process(*args: str, clean_exit: bool = True) -> AsyncIterator[str]:
    """``python *args``, which prints ``ready <url>`` once it listens: its url. Stopped with
    SIGTERM at the end; with ``clean_exit`` it must then exit 0 (our bridges leave the mesh
    and exit; the SDK-built test servers just die)."""
    proc = await asyncio.create_subprocess_exec(sys.executable, *args, cwd=str(ROOT), env=child_env(),
                                                stdout=asyncio.subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), WAIT_S)).decode()
        assert line.startswith("ready "), f"{args} did not start: {line!r}"
        yield line.split()[1]
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0 or not clean_exit, f"{args} exited with {proc.returncode}"


async def eventually(check, timeout: float = WAIT_S):
    """Poll ``check()`` (sync or async) until it is truthy; that value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
