"""SWIM gossip membership (with Lifeguard), as a sans-I/O core: see :mod:`mesh.swim.core`."""
from mesh.swim.config import SwimConfig
from mesh.swim.core import Swim
from mesh.swim.messages import EventKind, Member, MemberEvent, Send, State, SwimKind, Update

__all__ = ["Swim", "SwimConfig", "SwimKind", "State", "Update", "Member", "MemberEvent", "EventKind", "Send"]
