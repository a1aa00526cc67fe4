"""The worker runtime behind ``iii-worker -A module[:attr]``."""

from .loader import load_app
from .runtime import Worker

__all__ = ["Worker", "load_app"]
