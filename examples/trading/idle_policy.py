"""``--no-cpu-sleep``: keep idle CPUs polling for the run, as low-latency hosts do.

Writing 0 to ``/dev/cpu_dma_latency`` (a Linux PM QoS request, root only) keeps every CPU out
of deep idle states while the file stays open. On a VM an idle vCPU that halts takes tens of
microseconds to wake, and every hop of a tick wakes a process: the decision latency then
measures the hypervisor as much as the mesh. The same switch as ``python -m bench
--no-cpu-sleep`` (see bench/conftest.py); the request ends when the file is closed.
"""
from __future__ import annotations

import contextlib
import os
import struct
from typing import Iterator

PM_QOS_DEVICE = "/dev/cpu_dma_latency"


@contextlib.contextmanager
def cpus_awake(wanted: bool) -> Iterator[str]:
    """Hold the request while the block runs (if ``wanted``); yields the policy in force."""
    if not wanted:
        yield "default"
        return
    try:
        fd = os.open(PM_QOS_DEVICE, os.O_WRONLY)
    except OSError as exc:
        yield f"default (--no-cpu-sleep asked, but {PM_QOS_DEVICE}: {exc.strerror})"
        return
    try:
        os.write(fd, struct.pack("i", 0))
        yield "poll (PM QoS cpu_dma_latency=0)"
    finally:
        os.close(fd)     # the kernel drops the request with the last close
