"""Node keys, their files and the trust store: real files in a temporary folder, real crypto."""
from __future__ import annotations

import dataclasses
import logging
import os
import stat

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.security.errors import KeyFileError
from mesh.security.keys import (PublicIdentity, generate, identities_to_toml, load_keys, load_public,
                                parse_identities, write_keys)
from mesh.security.trust import TrustStore

RECORD = b"member n1 tcp://127.0.0.1:7001 incarnation 7 " * 4


@pytest.fixture(scope="module")
def n1():
    return generate("n1")


@pytest.fixture(scope="module")
def n2():
    return generate("n2")


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _pub(folder, keys, name: str | None = None, expires: int | None = None) -> str:
    ident = keys.public if expires is None else dataclasses.replace(keys.public, expires=expires)
    path = os.path.join(folder, name or f"{keys.node_id}.pub")
    with open(path, "w") as f:
        f.write(ident.to_toml())
    return path


# -- keys and their files --------------------------------------------------------------------------

def test_generate_makes_working_curve_and_signing_keys(n1):
    assert len(n1.curve_public) == 40 and len(n1.curve_secret) == 40
    # ZeroMQ derives the same public key from the secret: the pair works for CURVE
    assert zmq.curve_public(n1.curve_secret) == n1.curve_public
    sig = n1.sign(RECORD)
    assert len(sig) == 64
    assert sig == n1.signing_key.sign(RECORD).signature     # same as pynacl's own API
    assert n1.public.verify_key == bytes(n1.signing_key.verify_key)
    assert n1.public.node_id == "n1" and n1.public.expires is None


def test_repr_never_shows_a_secret(n1):
    text = repr(n1)
    assert n1.curve_secret.decode() not in text
    assert bytes(n1.signing_key).hex() not in text
    assert "hidden" in text


def test_round_trip_through_files(tmp_path, n1):
    secret_path, public_path = write_keys(n1, tmp_path / "keys")
    assert secret_path == str(tmp_path / "keys" / "n1.key")
    assert public_path == str(tmp_path / "keys" / "n1.pub")
    loaded = load_keys(secret_path)
    assert (loaded.node_id, loaded.curve_public, loaded.curve_secret, loaded.created) == \
           (n1.node_id, n1.curve_public, n1.curve_secret, n1.created)
    assert bytes(loaded.signing_key) == bytes(n1.signing_key)
    assert loaded.sign(RECORD) == n1.sign(RECORD)          # Ed25519 is deterministic
    assert load_public(public_path) == n1.public
    assert load_public(secret_path) == n1.public           # the public half of a .key file
    assert PublicIdentity.from_toml(n1.public.to_toml()) == n1.public


def test_secret_file_is_0600_from_creation_even_with_an_open_umask(tmp_path, n1, monkeypatch):
    # a chmod after creation would leave a window in which others can read the secret
    def no_chmod(*args, **kwargs):
        raise AssertionError("chmod after creation")
    monkeypatch.setattr(os, "chmod", no_chmod)
    monkeypatch.setattr(os, "fchmod", no_chmod)
    old = os.umask(0)
    try:
        secret_path, public_path = write_keys(n1, tmp_path)
    finally:
        os.umask(old)
    assert _mode(secret_path) == 0o600
    assert _mode(public_path) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["n1.key", "n1.pub"]      # no temporary left behind


def test_a_secret_file_others_can_read_is_refused(tmp_path, n1):
    secret_path, _ = write_keys(n1, tmp_path)
    os.chmod(secret_path, 0o644)
    with pytest.raises(KeyFileError) as err:
        load_keys(secret_path)
    assert secret_path in str(err.value) and "chmod 600" in str(err.value)
    os.chmod(secret_path, 0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_keys(secret_path)
    os.chmod(secret_path, 0o400)                           # read-only for the owner is fine
    assert load_keys(secret_path).node_id == "n1"


def test_no_overwrite_without_force(tmp_path, n1):
    secret_path, public_path = write_keys(n1, tmp_path)
    other = generate("n1")
    with pytest.raises(KeyFileError, match="already exists"):
        write_keys(other, tmp_path)
    assert load_keys(secret_path).curve_public == n1.curve_public
    os.unlink(secret_path)                                 # the .pub alone also blocks
    with pytest.raises(KeyFileError, match=r"n1\.pub: already exists"):
        write_keys(other, tmp_path)
    assert not os.path.exists(secret_path)


def test_force_replaces_and_keeps_0600_even_over_a_loose_file(tmp_path, n1):
    secret_path, _ = write_keys(n1, tmp_path)
    os.chmod(secret_path, 0o666)
    other = generate("n1")
    write_keys(other, tmp_path, force=True)
    assert _mode(secret_path) == 0o600                     # a new file, not the old one rewritten
    assert load_keys(secret_path).curve_public == other.curve_public


@pytest.mark.parametrize("node_id", ["", "a/b", "../x", ".hidden", "seed:x", "a b", "tab\t", "x" * 256])
def test_node_ids_that_cannot_name_files_are_refused(node_id):
    with pytest.raises(KeyFileError, match="node_id"):
        generate(node_id)


def _edit(path: str, old: str, new: str) -> None:
    with open(path) as f:
        text = f.read()
    assert old in text
    with open(path, "w") as f:
        f.write(text.replace(old, new))


@pytest.mark.parametrize("field, old, new, problem", [
    ("curve_public", 'curve_public = "', 'curve_public = "x', "40 Z85 characters"),
    ("verify_key", 'verify_key = "', 'verify_key = "zz', "64 hex digits"),
    ("created", "created = ", "created = -", "unix seconds"),
    ("version", "version = 1", "version = 9", "not supported"),
    ("node_id", 'node_id = "n1"', 'node_id = "a/b"', "may not"),
    ("colour", "version = 1", 'version = 1\ncolour = "red"', "unknown field"),
    ("node_id", 'node_id = "n1"', "", "missing"),
])
def test_parse_errors_name_the_file_and_the_field(tmp_path, n1, field, old, new, problem):
    path = _pub(tmp_path, n1)
    _edit(path, old, new)
    with pytest.raises(KeyFileError) as err:
        load_public(path)
    assert str(err.value).startswith(path + ": ")
    assert f"field {field!r}" in str(err.value) and problem in str(err.value)
    assert err.value.path == path and err.value.field == field


def test_secret_file_errors_name_the_field(tmp_path, n1, n2):
    secret_path, _ = write_keys(n1, tmp_path)
    _edit(secret_path, n1.curve_secret.decode(), n2.curve_secret.decode())
    with pytest.raises(KeyFileError, match=r"n1\.key: field 'curve_public': does not belong to curve_secret"):
        load_keys(secret_path)
    write_keys(n1, tmp_path, force=True)
    _edit(secret_path, bytes(n1.signing_key).hex(), bytes(n2.signing_key).hex())
    with pytest.raises(KeyFileError, match="field 'verify_key': does not belong to signing_key"):
        load_keys(secret_path)
    with pytest.raises(KeyFileError, match=r"n1\.pub: field 'curve_secret': missing"):
        load_keys(_pub(tmp_path, n1, "n1.pub"))


def test_not_toml_and_missing_files(tmp_path):
    bad = tmp_path / "bad.pub"
    bad.write_text("node_id = \n")
    with pytest.raises(KeyFileError, match=r"bad\.pub: not valid TOML"):
        load_public(bad)
    with pytest.raises(KeyFileError, match=r"nope\.key: no such file"):
        load_keys(tmp_path / "nope.key")


# -- the trust store -------------------------------------------------------------------------------

def test_trust_store_from_a_folder(tmp_path, n1, n2):
    _pub(tmp_path, n1)
    _pub(tmp_path, n2)
    (tmp_path / "README.txt").write_text("not a key")
    (tmp_path / ".n3.pub.swp").write_text("an editor's file")
    store = TrustStore.load(tmp_path)
    assert len(store) == 2 and store.node_ids() == ("n1", "n2")
    assert store.identities("n1") == (n1.public,) and "n2" in store and "n3" not in store
    assert store.node_of(n1.curve_public) == "n1"
    assert store.node_of(n1.curve_public.decode()) == "n1"
    from zmq.utils import z85
    assert store.node_of(z85.decode(n2.curve_public)) == "n2"     # raw, as in a ZAP request
    assert store.node_of(generate("n1").curve_public) is None
    assert store.curve_key_ok("n1", n1.curve_public) and not store.curve_key_ok("n2", n1.curve_public)
    assert store.verify_key_ok("n1", n1.verify_key) and not store.verify_key_ok("n1", n2.verify_key)
    assert store.verify("n1", RECORD, n1.sign(RECORD))


def test_trust_store_from_one_file_of_many_identities(tmp_path, n1, n2):
    path = tmp_path / "cluster.pub"
    path.write_text(identities_to_toml([n1.public, n2.public]))
    assert parse_identities(path.read_text()) == [n1.public, n2.public]
    store = TrustStore.load(path)
    assert store.node_ids() == ("n1", "n2")
    assert store.verify("n2", RECORD, n2.sign(RECORD))
    assert store.origin(n2.public) == f"{path}: key[1]"


def test_a_trust_file_with_a_secret_is_refused(tmp_path, n1):
    secret_path, _ = write_keys(n1, tmp_path / "k")
    with pytest.raises(KeyFileError, match="field 'curve_secret': a secret key in a public/trust file"):
        TrustStore.load(secret_path)


def test_errors_in_a_bundle_name_the_table(tmp_path, n1, n2):
    path = tmp_path / "cluster.pub"
    path.write_text(identities_to_toml([n1.public, n2.public]).replace("created = ", "created = -", 2))
    with pytest.raises(KeyFileError, match=r"cluster\.pub: key\[0\]: field 'created'") as err:
        TrustStore.load(path)
    assert err.value.path == str(path)


def test_one_key_claimed_by_two_nodes_is_refused(tmp_path, n1):
    _pub(tmp_path, n1)
    liar = dataclasses.replace(n1.public, node_id="n9")
    (tmp_path / "n9.pub").write_text(liar.to_toml())
    with pytest.raises(KeyFileError, match="also node 'n1'"):
        TrustStore.load(tmp_path)


def test_rotation_window_accepts_both_keys_newest_first(tmp_path, n1):
    newer = dataclasses.replace(generate("n1"), created=n1.created + 100)
    _pub(tmp_path, n1, "n1.pub")
    _pub(tmp_path, newer, "n1.2.pub")
    store = TrustStore.load(tmp_path)
    assert store.identities("n1") == (newer.public, n1.public)
    assert len(store) == 2 and store.node_ids() == ("n1",)
    assert store.node_of(n1.curve_public) == store.node_of(newer.curve_public) == "n1"
    for _ in range(3):          # the key that verified last is tried first; both keep working
        assert store.verify("n1", RECORD, n1.sign(RECORD))
        assert store.verify("n1", RECORD, newer.sign(RECORD))
    assert not store.verify("n1", RECORD + b"x", n1.sign(RECORD))
    assert store.identities("n1") == (newer.public, n1.public)    # the listing keeps its order
    # the window ends when the old .pub is removed
    os.unlink(tmp_path / "n1.pub")
    assert store.reload() is True
    assert store.identities("n1") == (newer.public,)
    assert not store.verify("n1", RECORD, n1.sign(RECORD))
    assert store.node_of(n1.curve_public) is None


def test_an_expired_key_is_no_longer_accepted(tmp_path, n1):
    newer = generate("n1")
    now = [1_000.0]
    _pub(tmp_path, n1, "n1.pub", expires=2_000)
    _pub(tmp_path, newer, "n1.2.pub")
    store = TrustStore.load(tmp_path, clock=lambda: now[0])
    assert len(store) == 2 and store.verify("n1", RECORD, n1.sign(RECORD))
    now[0] = 2_000.0
    assert not store.verify("n1", RECORD, n1.sign(RECORD))
    assert store.verify("n1", RECORD, newer.sign(RECORD))
    assert store.node_of(n1.curve_public) is None and store.node_of(newer.curve_public) == "n1"
    assert not store.verify_key_ok("n1", n1.verify_key)
    assert store.identities("n1") == (newer.public,) and len(store) == 2 - 1
    assert len(store.all_identities()) == 2                # still listed, as expired


def test_reload_keeps_the_old_store_when_a_file_is_broken(tmp_path, n1, n2, caplog):
    _pub(tmp_path, n1)
    store = TrustStore.load(tmp_path)
    assert store.reload() is False                         # nothing changed
    broken = tmp_path / "n2.pub"
    broken.write_text(n2.public.to_toml()[:-30])           # half copied
    with caplog.at_level(logging.ERROR, logger="mesh.security.trust"):
        assert store.reload() is False
        assert store.reload() is False                     # logged once per change, not per call
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert "n2.pub" in store.error and "keeping the 1 identities" in caplog.text
    assert store.node_ids() == ("n1",) and store.verify("n1", RECORD, n1.sign(RECORD))
    _pub(tmp_path, n2)                                     # the copy completes
    assert store.reload() is True and store.error is None
    assert store.node_ids() == ("n1", "n2")


def test_reload_of_a_vanished_source_keeps_the_store(tmp_path, n1):
    path = _pub(tmp_path, n1)
    store = TrustStore.load(path)
    os.unlink(path)
    assert store.reload() is False and "no such" in store.error
    assert store.node_ids() == ("n1",)


def test_verify_rejects_forgeries_and_garbage_without_raising(n1, n2):
    store = TrustStore([n1.public, n2.public])
    sig = n1.sign(RECORD)
    assert store.verify("n1", RECORD, sig)
    assert store.verify("n1", bytearray(RECORD), memoryview(sig))
    assert not store.verify("n1", RECORD + b"!", sig)              # altered data
    assert not store.verify("n1", RECORD.replace(b"7001", b"7002"), sig)
    assert not store.verify("n2", RECORD, sig)                     # signed by another node
    assert not store.verify("n1", RECORD, n2.sign(RECORD))         # another node's key
    assert not store.verify("n3", RECORD, sig)                     # unknown node
    flipped = bytes([sig[0] ^ 1]) + sig[1:]
    for garbage in (flipped, sig[:63], sig + b"\0", b"", b"\0" * 64, None, "x" * 64, 12, [1, 2]):
        assert store.verify("n1", RECORD, garbage) is False
    for data in (None, "text", 3.5, object()):
        assert store.verify("n1", data, sig) is False
    for node in (None, 7, ["n1"], b"n1"):
        assert store.verify(node, RECORD, sig) is False


@settings(max_examples=200, deadline=None)
@given(node=st.one_of(st.sampled_from(["n1", "n2", ""]), st.text(max_size=8), st.none(), st.integers()),
       data=st.one_of(st.binary(max_size=300), st.text(max_size=20), st.none()),
       sig=st.one_of(st.binary(max_size=80), st.binary(min_size=64, max_size=64), st.none(), st.integers()))
def test_verify_never_raises(n1, n2, node, data, sig):
    store = TrustStore([n1.public, n2.public])
    assert store.verify(node, data, sig) is False


def test_an_empty_folder_is_an_empty_store(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        store = TrustStore.load(tmp_path)
    assert len(store) == 0 and store.node_ids() == () and "every peer will be refused" in caplog.text
    with pytest.raises(KeyFileError, match="no such trust folder"):
        TrustStore.load(tmp_path / "missing")
