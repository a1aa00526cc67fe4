"""The engine process: serves the built-ins of the enabled modules, records workers and
their triggers, and runs the duties that keep the registry clean (the elected ones in
one engine at a time). See :mod:`.service`."""

from .service import Engine

__all__ = ["Engine"]
