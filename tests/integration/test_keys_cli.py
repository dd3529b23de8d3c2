"""``python -m mesh.keys`` as an operator runs it: real processes, real files."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from mesh.security.keys import load_keys
from mesh.security.trust import TrustStore
from tests.integration.cluster import ROOT

pytestmark = pytest.mark.integration


def keys(*args: str, expect: int = 0) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "mesh.keys", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == expect, (args, done.returncode, done.stdout, done.stderr)
    return done


def test_generate_show_trust_bundle(tmp_path):
    out = tmp_path / "keys"
    keys("generate", "--out", str(out), "--id", "n1")
    done = keys("generate", "--out", str(out), "--id", "n2", "--json")
    n2 = json.loads(done.stdout)
    assert n2["key"] == str(out / "n2.key") and n2["node_id"] == "n2"
    assert stat.S_IMODE(os.stat(out / "n1.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(out / "n1.pub").st_mode) == 0o644
    secret = load_keys(out / "n1.key")

    # show: the public part, never a secret, from either file
    for name in ("n1.key", "n1.pub"):
        done = keys("show", str(out / name))
        assert secret.curve_public.decode() in done.stdout
        assert secret.curve_secret.decode() not in done.stdout + done.stderr
        assert bytes(secret.signing_key).hex() not in done.stdout + done.stderr
    shown = json.loads(keys("show", str(out / "n1.key"), "--json").stdout)
    assert shown == secret.public.to_dict()

    # trust: the folder of .pub files (the .key files beside them are not read)
    done = keys("trust", str(out))
    assert "n1" in done.stdout and "n2" in done.stdout and "2 identities of 2 nodes" in done.stderr
    listed = json.loads(keys("trust", str(out), "--json").stdout)
    assert [i["node_id"] for i in listed["identities"]] == ["n1", "n2"]

    # bundle: one file for every node, which the trust store reads back
    bundle = tmp_path / "cluster.pub"
    keys("bundle", str(out), "--out", str(bundle))
    store = TrustStore.load(bundle)
    assert store.node_ids() == ("n1", "n2")
    assert store.verify("n1", b"record", secret.sign(b"record"))
    keys("bundle", str(out), "--out", str(bundle), expect=1)              # no overwrite


def test_errors_exit_1_usage_exits_2(tmp_path):
    out = tmp_path / "keys"
    keys("generate", "--out", str(out), "--id", "n1")
    done = keys("generate", "--out", str(out), "--id", "n1", expect=1)
    assert "already exists" in done.stderr and "--force" in done.stderr
    keys("generate", "--out", str(out), "--id", "n1", "--force")
    done = keys("generate", "--out", str(out), "--id", "bad/id", expect=1)
    assert "node_id" in done.stderr
    done = keys("show", str(tmp_path / "missing.pub"), expect=1)
    assert "missing.pub: no such file" in done.stderr
    (tmp_path / "broken.pub").write_text('node_id = "n1"\n')
    done = keys("trust", str(tmp_path / "broken.pub"), expect=1)
    assert "broken.pub: field 'created': missing" in done.stderr
    assert "Traceback" not in done.stderr
    os.chmod(out / "n1.key", 0o644)
    done = keys("show", str(out / "n1.key"))
    assert "chmod 600" in done.stderr                                     # a warning, still shown
    keys(expect=2)
    keys("generate", expect=2)                                            # --out is required
    keys("frobnicate", expect=2)


def test_generate_defaults_to_the_host_name(tmp_path):
    import socket
    done = keys("generate", "--out", str(tmp_path), "--json")
    assert json.loads(done.stdout)["node_id"] == socket.gethostname()
