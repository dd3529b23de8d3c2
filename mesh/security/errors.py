"""Errors of the security package: a key, trust or policy file that cannot be used.

Both derive from :class:`mesh.errors.MeshError`, so a caller that catches every mesh error
catches these too. They are raised when a node loads its files (at start, or on a reload
the caller asked for), never on the message path: there a denial is a decision
(:class:`mesh.security.acl.Decision`), which the runtime reports to the caller as
:class:`mesh.errors.Unauthorized`.
"""
from __future__ import annotations

from mesh.errors import MeshError


class KeyFileError(MeshError, ValueError):
    """A key file (``.key``, ``.pub``) or trust folder/file is missing, unsafe or malformed.

    The message names the file and, for a parse error, the field; ``path`` and ``field``
    carry them for programs (``field`` is ``None`` when the whole file is at fault).
    """

    def __init__(self, message: str, path: str = "", field: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.field = field


class PolicyError(MeshError, ValueError):
    """An ACL policy file is malformed. The message names the file, the table (``allow[2]``)
    and the key; ``path`` and ``where`` (``"allow[2].call[0]"``, or ``""``) carry them."""

    def __init__(self, message: str, path: str = "", where: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.where = where
