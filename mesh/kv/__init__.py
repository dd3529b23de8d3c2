"""The replicated key-value store kept by Raft: the state machine (machine.py)."""
from mesh.kv.machine import Change, KVMachine, Value, encode_command

__all__ = ["KVMachine", "Value", "Change", "encode_command"]
