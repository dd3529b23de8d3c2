"""Member metadata: round trips, older senders, and hostile values."""
from __future__ import annotations

import pytest

from mesh._core import codec
from mesh.errors import ProtocolError
from mesh.node.membership import PROTOCOL_VERSION, NodeMeta


def test_round_trip_keeps_everything():
    meta = NodeMeta(agents={"w": ("work",)}, topics=("a.*",), blocking=("a.*",), capacity={"w": 4.0},
                    load={"handlers": 2.0})
    assert NodeMeta.from_bytes(meta.to_bytes()) == meta


def test_metadata_of_an_older_node_without_blocking_or_capacity_reads():
    data = codec.pack_body({"v": PROTOCOL_VERSION, "agents": {"w": ["work"]}, "topics": ["x"], "load": {}})
    meta = NodeMeta.from_bytes(data)
    assert meta.blocking == () and meta.capacity == {}


@pytest.mark.parametrize("capacity", [{"w": 0}, {"w": -1.0}, {"w": float("inf")}, {"w": float("nan")},
                                      {"w": "big"}, {1: 2.0}, ["w"]])
def test_bad_capacity_is_a_protocol_error(capacity):
    data = codec.pack_body({"v": PROTOCOL_VERSION, "agents": {}, "topics": [], "capacity": capacity})
    with pytest.raises(ProtocolError):
        NodeMeta.from_bytes(data)
