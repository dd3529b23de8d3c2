"""Fuzz the KV command decoder: KVMachine.apply takes the bytes of any committed entry.

Any node may propose a command (the RaftAgent's ``propose`` RPC takes bytes) and every replica
applies what commits, so apply must answer any bytes with a result and never raise, and the
machine's state must still snapshot and restore afterwards (the "kv" target checks both).
"""
from __future__ import annotations

import re
from random import Random

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mesh._core import codec
from mesh.errors import ProtocolError
from mesh.kv.machine import MAX_COMMAND_DEPTH, KVMachine, encode_command
from tests.fuzz.budget import fuzz
from tests.fuzz.messages import kv_commands
from tests.fuzz.mutations import mutate_bytes, mutate_object
from tests.fuzz.targets import feed, seeds

SEEDS = seeds("kv")


def _deep(levels: int) -> bytes:
    return b"\x91" * levels + b"\xc0"


@fuzz(500)
@given(data=st.binary(max_size=100))
# a cas comparing values nested 1000 deep overflowed the interpreter's stack (RecursionError)
@example(data=b"\x98\xa1c\x03\x00\xa3cas\xa1a" + _deep(1000) + b"\xc0\x00")
@example(data=b"\x97\xa1c\x01\x00\xa3put\xa1j" + _deep(1000) + b"\x00")
def test_random_bytes(data):
    feed("kv", data)


@fuzz(150)
@given(command=kv_commands, rnd=st.randoms(use_true_random=False))
def test_mutated_commands(command, rnd):
    """Commands from the real encoder, broken byte by byte: 100 cases per example."""
    rng = Random(rnd.random())
    for _ in range(100):
        feed("kv", mutate_bytes(command, rng, SEEDS))


@fuzz(150)
@given(command=kv_commands, rnd=st.randoms(use_true_random=False))
def test_valid_msgpack_of_the_wrong_shape(command, rnd):
    """Commands with a part replaced, dropped, doubled, wrapped...: 60 cases per example."""
    obj = codec.load_body(command)
    rng = Random(rnd.random())
    for _ in range(60):
        feed("kv", codec.pack_body(mutate_object(obj, rng)))


@fuzz(100)
@given(commands=st.lists(kv_commands, max_size=12))
def test_any_run_of_valid_commands_snapshots_and_restores(commands):
    machine = KVMachine()
    for index, command in enumerate(commands, 1):
        machine.apply(index, command)
    again = KVMachine()
    again.restore(machine.snapshot())
    assert again.snapshot() == machine.snapshot()
    assert {k: (v.value, v.mod_rev) for k, v in again.data.items()} == \
        {k: (v.value, v.mod_rev) for k, v in machine.data.items()}


def test_values_nested_past_the_limit_are_refused_as_a_result():
    machine = KVMachine()
    at_limit = b"\x97\xa1c\x01\x00\xa3put\xa1k" + _deep(MAX_COMMAND_DEPTH - 1) + b"\x00"
    assert machine.apply(1, at_limit)[0] == 1
    too_deep = b"\x97\xa1c\x02\x00\xa3put\xa1k" + _deep(MAX_COMMAND_DEPTH) + b"\x00"
    result, changes = machine.apply(2, too_deep)
    assert isinstance(result, ProtocolError) and "max_depth" in str(result) and changes == []
    assert machine.get("k").mod_rev == 1


@pytest.mark.parametrize("command, why", [
    (encode_command("c", 1, "put", "k", 1, []), "a lease is an int"),       # broke restore(), and delete
    (encode_command("c", 1, "grant", 2**63, 1), "below 2\\*\\*63"),          # a deadline that would not pack
    (encode_command("c", 1, "grant", 10, 1.5), "an int of ms"),
    (encode_command("c", 1, "expire", [[[1], 0]]), "expire takes"),
])
def test_commands_that_poisoned_the_state_are_refused(command, why):
    machine = KVMachine()
    machine.apply(1, encode_command("c", 0, "grant", 10, 1))
    result, changes = machine.apply(2, command)
    assert isinstance(result, ProtocolError) and changes == []
    assert re.search(why, str(result))
    again = KVMachine()
    again.restore(machine.snapshot())
    assert again.snapshot() == machine.snapshot()
