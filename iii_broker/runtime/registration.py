"""How a worker joins: ``engine::workers::register``, waiting for an engine to answer."""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from ..app import App
from ..errors import (
    BrokerUnavailable,
    FunctionNotFound,
    IIIError,
    InvocationTimeout,
    TriggerConfigError,
)
from ..settings import Settings

log = logging.getLogger("iii.worker")


class Registrant(Protocol):
    """What registering needs of a worker."""

    app: App
    settings: Settings

    @property
    def stopping(self) -> bool: ...

    def info(self) -> dict[str, Any]: ...


def register_with_engine(worker: Registrant) -> None:
    """Register through ``engine::workers::register``, waiting for an engine to answer."""
    payload = {
        "worker": worker.info(),
        "functions": [f.info() for f in worker.app.functions.values()],
        "triggers": [t.to_dict() for t in worker.app.triggers],
    }
    waited = 0.0
    delay = 0.1
    while True:
        try:
            worker.app.trigger("engine::workers::register", payload, timeout_ms=5_000)
            for fid in worker.app.functions:
                worker.app.caller.forget_function(fid)
            return
        except (FunctionNotFound, InvocationTimeout):
            if worker.stopping:
                return  # stopped before any engine answered: nothing to serve
            if waited == 0 or int(waited) // 5 != int(waited + delay) // 5:
                log.info("waiting for an engine (namespace %r) to register with...",
                         worker.settings.namespace)
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 1.0)
        except BrokerUnavailable:
            raise
        except IIIError as exc:  # the engine's answer: the app cannot be registered as it is
            raise TriggerConfigError(
                f"the engine refused to register app {worker.app.name!r}: "
                f"{exc.code}: {exc.message}") from None
