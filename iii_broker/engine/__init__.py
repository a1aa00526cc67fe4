"""The engine: registry, liveness, reply routing for dead workers, elected duties."""

from typing import Any

from .registry import Registry

__all__ = ["Engine", "Registry"]


def __getattr__(name: str) -> Any:
    # The engine runs on the worker runtime, which itself uses the registry: import late.
    if name == "Engine":
        from .service import Engine
        return Engine
    raise AttributeError(name)
