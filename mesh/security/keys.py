"""A node's key pairs and the files that hold them.

Theory of operation
-------------------
A node has two key pairs, both made by pynacl:

* a **Curve25519** pair for ZeroMQ CURVE, which encrypts and authenticates every link. ZeroMQ
  wants these as Z85 text (40 characters for 32 bytes), so they are kept and handed out in
  that form (``curve_public``, ``curve_secret``).
* an **Ed25519** pair for signatures: a node signs its own gossip record, so a relay cannot
  forge or alter it. The public half (``verify_key``) is 32 raw bytes.

A :class:`PublicIdentity` is what other nodes need to trust a node: its id, both public keys,
when it was made and, optionally, when it stops being accepted (``expires``, the end of a
rotation window). :class:`NodeKeys` adds the two secrets and is what the node itself loads.

Files (small TOML, readable by people, with a ``version`` field):

``<id>.key``
    everything, secrets included. Written with mode 0600 *from creation* (``os.open`` with
    0o600 on a fresh temporary file, then a link or rename into place), never chmod-ed after,
    fsync-ed, never overwritten unless asked. :func:`load_keys` refuses one that group or
    others may read.
``<id>.pub``
    the public identity only (mode 0644), to copy to every node's trust folder
    (:mod:`mesh.security.trust`). A trust file may also hold several identities as
    ``[[key]]`` tables (:func:`identities_to_toml`).

Encodings in the files: CURVE keys in Z85 (as ZeroMQ prints them), Ed25519 keys in hex (64
characters), times as unix seconds. Unknown fields are errors, not ignored, so a misspelt
``expires`` cannot silently keep a key trusted forever. Every parse error names the file and
the field.

Node ids used for keys name files, so besides the runtime's rule (1..255 UTF-8 bytes, not
starting with NUL or ``seed:``) they may not contain ``/``, ``\\``, whitespace or control
characters and may not start with ``.``.
"""
from __future__ import annotations

import json
import logging
import os
import re
import stat
import time
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.signing
from zmq.utils import z85

from mesh.security.errors import KeyFileError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
Z85_KEY_LEN = 40            # 32 bytes of key in Z85
ED25519_KEY_LEN = 32
SIGNATURE_LEN = 64
MAX_FILE_BYTES = 4 << 20    # a key or trust file larger than this is refused (bounded read)

SECRET_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"

_PUBLIC_FIELDS = ("version", "node_id", "created", "curve_public", "verify_key", "expires")
_SECRET_FIELDS = ("curve_secret", "signing_key")
_BAD_ID_CHARS = re.compile(r"[/\\\s\x00-\x1f\x7f]")
_HEX = re.compile(r"[0-9a-fA-F]*")


# -- field checks (every message names where and which field) -----------------------------------

def _fail(where: str, name: str | None, problem: str, path: str | None = None) -> KeyFileError:
    what = f"{where}: field {name!r}: {problem}" if name else f"{where}: {problem}"
    return KeyFileError(what, path=where if path is None else path, field=name)


def check_node_id(node_id: object, where: str = "node id") -> str:
    """Return ``node_id`` if it can name a node and its key files; raise KeyFileError if not."""
    if not isinstance(node_id, str):
        raise _fail(where, "node_id", f"expected a string, got {type(node_id).__name__}")
    size = len(node_id.encode("utf-8", "surrogatepass"))
    if not 1 <= size <= 255:
        raise _fail(where, "node_id", f"must be 1..255 UTF-8 bytes, got {size}")
    if node_id.startswith(("seed:", ".")) or _BAD_ID_CHARS.search(node_id):
        raise _fail(where, "node_id", f"{node_id!r} may not start with '.' or 'seed:' nor contain "
                                      "'/', '\\', whitespace or control characters")
    return node_id


def _z85_key(value: object, where: str, name: str) -> bytes:
    if isinstance(value, str):
        value = value.encode("ascii", "replace")
    if not isinstance(value, bytes):
        raise _fail(where, name, f"expected a Z85 string, got {type(value).__name__}")
    if len(value) != Z85_KEY_LEN:
        raise _fail(where, name, f"expected {Z85_KEY_LEN} Z85 characters, got {len(value)}")
    try:
        z85.decode(value)
    except (ValueError, KeyError, TypeError):
        raise _fail(where, name, "not valid Z85 text") from None
    return value


def _hex_key(value: object, where: str, name: str) -> bytes:
    if not isinstance(value, str):
        raise _fail(where, name, f"expected a hex string, got {type(value).__name__}")
    if len(value) != 2 * ED25519_KEY_LEN or not _HEX.fullmatch(value):
        raise _fail(where, name, f"expected {2 * ED25519_KEY_LEN} hex digits, got {len(value)} characters")
    return bytes.fromhex(value)


def _raw_key(value: object, where: str, name: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != ED25519_KEY_LEN:
        raise _fail(where, name, f"expected {ED25519_KEY_LEN} raw bytes")
    return value


def _seconds(value: object, where: str, name: str) -> int:
    # bool is an int in Python, but "created = true" is a mistake, not 1970-01-01T00:00:01
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _fail(where, name, f"expected unix seconds (an integer >= 0), got {value!r}")
    return value


def iso_utc(seconds: int) -> str:
    """Unix seconds as ``2026-11-25T10:00:00Z`` (for people: comments, listings)."""
    try:
        return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "far future"


def _toml_str(value: str) -> str:
    # a JSON string of a validated value (no control characters) is a valid TOML basic string
    return json.dumps(value, ensure_ascii=False)


# -- the public identity -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PublicIdentity:
    """What other nodes need to trust a node. ``curve_public`` is Z85 (40 bytes), ``verify_key``
    the raw Ed25519 public key (32 bytes), ``created``/``expires`` unix seconds."""

    node_id: str
    curve_public: bytes
    verify_key: bytes
    created: int
    expires: int | None = None

    def __post_init__(self) -> None:
        check_node_id(self.node_id, "PublicIdentity")
        _z85_key(self.curve_public, "PublicIdentity", "curve_public")
        _raw_key(self.verify_key, "PublicIdentity", "verify_key")
        _seconds(self.created, "PublicIdentity", "created")
        if self.expires is not None:
            _seconds(self.expires, "PublicIdentity", "expires")

    def expired(self, now: float) -> bool:
        """True once ``now`` (unix seconds) is at or past ``expires``."""
        return self.expires is not None and now >= self.expires

    def to_toml(self) -> str:
        """The ``.pub`` file text (round-trips through :meth:`from_toml`)."""
        return (f"# mesh public identity of node {_toml_str(self.node_id)}: safe to share;\n"
                f"# copy it into the trust folder of every node of the cluster\n"
                + _public_body(self))

    def to_dict(self) -> dict[str, Any]:
        """The fields as file text (Z85 / hex strings, ints), e.g. for JSON output."""
        out: dict[str, Any] = {"node_id": self.node_id, "created": self.created,
                               "curve_public": self.curve_public.decode("ascii"),
                               "verify_key": self.verify_key.hex()}
        if self.expires is not None:
            out["expires"] = self.expires
        return out

    @classmethod
    def from_toml(cls, text: str, source: str = "<string>") -> PublicIdentity:
        """Parse one identity (the top-level fields of a ``.pub`` file); KeyFileError names
        ``source`` and the field."""
        found = parse_identities(text, source)
        if len(found) != 1:
            raise _fail(source, None, f"expected one identity, found {len(found)}")
        return found[0]


def _public_body(ident: PublicIdentity, version: bool = True) -> str:
    lines = [f"version = {FORMAT_VERSION}"] if version else []
    lines += [f"node_id = {_toml_str(ident.node_id)}",
              f"created = {ident.created}   # {iso_utc(ident.created)}",
              f"curve_public = {_toml_str(ident.curve_public.decode('ascii'))}   # Z85, ZeroMQ CURVE",
              f"verify_key = {_toml_str(ident.verify_key.hex())}   # hex, Ed25519"]
    if ident.expires is not None:
        lines.append(f"expires = {ident.expires}   # {iso_utc(ident.expires)}: not accepted after this")
    return "\n".join(lines) + "\n"


def identities_to_toml(identities: list[PublicIdentity] | tuple[PublicIdentity, ...]) -> str:
    """One trust file holding several identities as ``[[key]]`` tables, to ship to every node."""
    parts = ["# mesh trusted identities: safe to share\n", f"version = {FORMAT_VERSION}\n"]
    for ident in identities:
        parts.append("\n[[key]]\n" + _public_body(ident, version=False))
    return "".join(parts)


def _check_version(doc: dict[str, Any], where: str) -> None:
    version = doc.get("version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise _fail(where, "version", f"expected an integer, got {version!r}")
    if version != FORMAT_VERSION:
        raise _fail(where, "version", f"format {version} is not supported (this mesh reads {FORMAT_VERSION})")


def _identity_from(doc: dict[str, Any], where: str, secret_ok: bool, path: str | None = None) -> PublicIdentity:
    try:
        return _identity_fields(doc, where, secret_ok)
    except KeyFileError as exc:
        if path is not None:
            exc.path = path
        raise


def _identity_fields(doc: dict[str, Any], where: str, secret_ok: bool) -> PublicIdentity:
    allowed = _PUBLIC_FIELDS + (_SECRET_FIELDS if secret_ok else ())
    for name in doc:
        if name in _SECRET_FIELDS and not secret_ok:
            raise _fail(where, name, "a secret key in a public/trust file; share the .pub file instead")
        if name not in allowed:
            raise _fail(where, name, f"unknown field (expected: {', '.join(_PUBLIC_FIELDS)})")
    for name in ("node_id", "created", "curve_public", "verify_key"):
        if name not in doc:
            raise _fail(where, name, "missing")
    _check_version(doc, where)
    expires = doc.get("expires")
    return PublicIdentity(
        node_id=check_node_id(doc["node_id"], where),
        curve_public=_z85_key(doc["curve_public"], where, "curve_public"),
        verify_key=_hex_key(doc["verify_key"], where, "verify_key"),
        created=_seconds(doc["created"], where, "created"),
        expires=None if expires is None else _seconds(expires, where, "expires"))


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _fail(source, None, f"not valid TOML: {exc}") from None


def parse_identities(text: str, source: str = "<string>") -> list[PublicIdentity]:
    """Every identity in a trust file's text: the top-level fields of a ``.pub`` file, or the
    ``[[key]]`` tables of a bundle (``source[i]`` names the table in errors)."""
    doc = _parse_toml(text, source)
    if "key" not in doc:
        return [_identity_from(doc, source, secret_ok=False)]
    tables = doc.pop("key")
    _check_version(doc, source)
    doc.pop("version", None)
    if doc:
        raise _fail(source, next(iter(doc)), "unexpected beside [[key]] tables")
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise _fail(source, "key", "expected [[key]] tables")
    out = []
    for i, table in enumerate(tables):
        if "version" in table:
            raise _fail(f"{source}: key[{i}]", "version", "belongs at the top of the file", path=source)
        out.append(_identity_from(table, f"{source}: key[{i}]", secret_ok=False, path=source))
    return out


# -- the node's own keys -------------------------------------------------------------------------

@dataclass(frozen=True, repr=False)
class NodeKeys:
    """A node's secrets and public keys. ``curve_public``/``curve_secret`` are Z85 (40 bytes);
    ``sign`` makes detached Ed25519 signatures. Its repr never shows a secret."""

    node_id: str
    curve_public: bytes
    curve_secret: bytes
    signing_key: nacl.signing.SigningKey
    created: int
    _public: PublicIdentity = field(init=False, compare=False)
    _sk: bytes = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.signing_key, nacl.signing.SigningKey):
            raise _fail("NodeKeys", "signing_key", "expected a nacl.signing.SigningKey")
        secret = _z85_key(self.curve_secret, "NodeKeys", "curve_secret")
        derived = z85.encode(bytes(nacl.public.PrivateKey(z85.decode(secret)).public_key))
        if derived != self.curve_public:
            raise _fail("NodeKeys", "curve_public", "does not belong to curve_secret")
        ident = PublicIdentity(self.node_id, self.curve_public,
                               bytes(self.signing_key.verify_key), self.created)
        object.__setattr__(self, "_public", ident)
        # libsodium's 64-byte secret is the seed followed by the public key; kept for sign()
        object.__setattr__(self, "_sk", bytes(self.signing_key) + ident.verify_key)

    @property
    def public(self) -> PublicIdentity:
        """The identity to share (no expiry: that is set on a copy in a trust folder)."""
        return self._public

    @property
    def verify_key(self) -> bytes:
        """The raw Ed25519 public key (32 bytes)."""
        return self._public.verify_key

    def sign(self, data: bytes) -> bytes:
        """A 64-byte detached Ed25519 signature of ``data``."""
        # the binding directly: SigningKey.sign wraps the result in a SignedMessage first
        return nacl.bindings.crypto_sign(data, self._sk)[:SIGNATURE_LEN]

    def __repr__(self) -> str:
        return (f"NodeKeys(node_id={self.node_id!r}, curve_public={self.curve_public!r}, "
                f"verify_key={self.verify_key.hex()!r}, created={self.created}, secrets=<hidden>)")

    def to_toml(self) -> str:
        """The ``.key`` file text, secrets included."""
        head = (f"# mesh node keys of {_toml_str(self.node_id)}: SECRET. Keep this file private "
                f"(mode 0600);\n# share only {self.node_id}{PUBLIC_SUFFIX}\n")
        return (head + _public_body(self._public)
                + f"curve_secret = {_toml_str(self.curve_secret.decode('ascii'))}   # Z85\n"
                + f"signing_key = {_toml_str(bytes(self.signing_key).hex())}   # hex, Ed25519 seed\n")


def generate(node_id: str) -> NodeKeys:
    """Fresh key pairs for ``node_id`` (Curve25519 for CURVE, Ed25519 for signatures)."""
    check_node_id(node_id)
    curve = nacl.public.PrivateKey.generate()
    return NodeKeys(node_id=node_id,
                    curve_public=z85.encode(bytes(curve.public_key)),
                    curve_secret=z85.encode(bytes(curve)),
                    signing_key=nacl.signing.SigningKey.generate(),
                    created=int(time.time()))


# -- files ---------------------------------------------------------------------------------------

def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return      # some platforms cannot open a directory; the file itself is synced
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_new(path: str, text: str, mode: int, force: bool) -> None:
    """Write ``text`` to ``path``: a fresh temporary file made with ``mode`` (O_EXCL, so the
    mode is the one it was created with), fsync, then linked into place (fails if ``path``
    exists) or, with ``force``, renamed over it. A crash leaves the old file or the new one."""
    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
                 | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        try:
            data = memoryview(text.encode("utf-8"))
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)          # atomic "create only if absent"
            except FileExistsError:
                raise                       # not the fallback below: never replace then
            except OSError:                 # a file system without hard links
                if os.path.lexists(path):
                    raise FileExistsError(path) from None
                os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    _fsync_dir(folder)


def write_keys(keys: NodeKeys, out_dir: str | os.PathLike[str], force: bool = False) -> tuple[str, str]:
    """Write ``<out_dir>/<id>.key`` (0600) and ``<out_dir>/<id>.pub`` (0644); return both paths.

    Refuses (KeyFileError) to overwrite either file unless ``force``. ``out_dir`` is made
    (0700) if missing."""
    out = os.fspath(out_dir)
    secret_path = os.path.join(out, keys.node_id + SECRET_SUFFIX)
    public_path = os.path.join(out, keys.node_id + PUBLIC_SUFFIX)
    try:
        os.makedirs(out, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(f"{out}: cannot create the folder: {exc.strerror}", path=out) from None
    if not force:
        for path in (secret_path, public_path):
            if os.path.lexists(path):
                raise KeyFileError(f"{path}: already exists; not overwriting it (use --force / "
                                   "force=True to replace it)", path=path)
    for path, text, mode in ((secret_path, keys.to_toml(), 0o600),
                             (public_path, keys.public.to_toml(), 0o644)):
        try:
            _write_new(path, text, mode, force)
        except FileExistsError:
            raise KeyFileError(f"{path}: already exists; not overwriting it (use --force / "
                               "force=True to replace it)", path=path) from None
        except OSError as exc:
            raise KeyFileError(f"{path}: cannot write: {exc.strerror}", path=path) from None
    log.info("wrote the keys of node %s to %s", keys.node_id, secret_path)
    return secret_path, public_path


def read_text(path: str, secret: bool = False) -> str:
    """A key or trust file's text, read with a size bound. Refuses what is not a regular file
    and, with ``secret``, a file holding secrets that group or others may read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such file", path=path) from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot open: {exc.strerror}", path=path) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{path}: not a regular file", path=path)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror}", path=path) from None
    finally:
        os.close(fd)
    # the mode of the file actually read (fstat of the open file, no race with a rename);
    # a file without secrets (a .pub given by mistake) gets the clearer "missing" error later
    if secret and st.st_mode & 0o077 and any(n.encode() in data for n in _SECRET_FIELDS):
        raise KeyFileError(
            f"{path}: holds secret keys but its mode {stat.S_IMODE(st.st_mode):04o} lets group "
            f"or others read it; run: chmod 600 {path}", path=path)
    if len(data) > MAX_FILE_BYTES:
        raise KeyFileError(f"{path}: larger than {MAX_FILE_BYTES} bytes", path=path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KeyFileError(f"{path}: not UTF-8 text (byte {exc.start})", path=path) from None


def load_keys(path: str | os.PathLike[str]) -> NodeKeys:
    """Load a node's ``.key`` file. KeyFileError if it is missing, readable by group/others
    (the message says ``chmod 600``), malformed (the message names the field), or if a public
    key does not belong to its secret."""
    where = os.fspath(path)
    doc = _parse_toml(read_text(where, secret=True), where)
    ident = _identity_from(doc, where, secret_ok=True)
    if ident.expires is not None:
        raise _fail(where, "expires", "belongs in a trust folder's copy of the .pub file, not in the .key file")
    for name in _SECRET_FIELDS:
        if name not in doc:
            raise _fail(where, name, "missing (is this a .pub file?)")
    curve_secret = _z85_key(doc["curve_secret"], where, "curve_secret")
    seed = _hex_key(doc["signing_key"], where, "signing_key")
    signing_key = nacl.signing.SigningKey(seed)
    if bytes(signing_key.verify_key) != ident.verify_key:
        raise _fail(where, "verify_key", "does not belong to signing_key")
    try:
        return NodeKeys(ident.node_id, ident.curve_public, curve_secret, signing_key, ident.created)
    except KeyFileError as exc:
        raise _fail(where, exc.field, "does not belong to curve_secret") from None


def load_public(path: str | os.PathLike[str]) -> PublicIdentity:
    """The public identity in a ``.pub`` file, or the public half of a ``.key`` file (its
    secrets are read past, never returned)."""
    where = os.fspath(path)
    doc = _parse_toml(read_text(where), where)
    for name in _SECRET_FIELDS:
        doc.pop(name, None)
    return _identity_from(doc, where, secret_ok=False)
