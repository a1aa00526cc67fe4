"""The worker runtime shared by ``iii-worker`` and the engine: a Kombu consumer feeding an
app's handlers to a pool, heartbeats, registration and refused messages."""

from .worker import Worker

__all__ = ["Worker"]
