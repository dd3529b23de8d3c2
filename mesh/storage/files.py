"""Small file operations the storage needs exactly right."""
from __future__ import annotations

import os


def write_all(fd: int, data: bytes) -> None:
    """One ``os.write`` in the normal case; loop on the short writes a nearly full disk gives."""
    mv = memoryview(data)
    while mv:
        n = os.write(fd, mv)
        if n <= 0:  # a regular file never does this; do not spin if one does
            raise OSError(5, "short write made no progress")
        mv = mv[n:]
