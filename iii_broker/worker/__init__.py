"""The ``iii-worker`` process: finds an app (``-A module[:attr]``, :mod:`.loader`) and serves
it with the worker runtime (:class:`iii_broker.runtime.Worker`), which runs the enabled
modules' worker services beside its consumer."""

from ..runtime import Worker
from .loader import load_app

__all__ = ["Worker", "load_app"]
