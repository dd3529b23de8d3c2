"""The replicated key-value store kept by Raft: the state machine (machine.py) and the
client every node has as ``node.kv`` (client.py)."""
from mesh.kv.machine import Change, KVMachine, Value, encode_command

__all__ = ["KVMachine", "Value", "Change", "encode_command"]
