"""JSON documents in Redis, shared by the state and stream modules: the packed form that
survives Lua (:mod:`.codec`), the atomic write script (:mod:`.lua`), the store
(:mod:`.store`) and live messages (:mod:`.live`)."""

from .codec import pack, unpack
from .store import Collection, DocumentStore, Limits, Write

__all__ = ["Collection", "DocumentStore", "Limits", "Write", "pack", "unpack"]
