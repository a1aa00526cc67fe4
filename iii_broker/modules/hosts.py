"""What the process hosts offer a module's hooks.

Modules sit below the hosts (``engine/``, ``worker/``, ``web/``) and never import them;
each hook receives its host through one of these protocols instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from flask import Response

    from ..client import Caller
    from ..context import Caller as Client
    from ..function import FunctionDef
    from ..message import Invocation
    from ..observe import Run
    from ..registry import Registry
    from ..settings import Settings
    from ..transport import Publisher
    from ..trigger import TriggerDef, TriggerTypeDef


class Configured(Protocol):
    """An enabled module, as another module may read it: its ``[modules.NAME]`` settings."""

    config: dict[str, Any]


class EngineHost(Protocol):
    """An engine process, as its modules see it."""

    settings: Settings
    registry: Registry
    engine_id: str
    publisher: Publisher

    @property
    def caller(self) -> Caller:
        """Calls functions like any client (``caller.call(function_id, payload, ...)``)."""

    @property
    def leading(self) -> bool:
        """True while this engine holds the sweeper lock (elected duties run here)."""

    def module(self, name: str) -> Configured | None:
        """The enabled module called ``name``."""

    def add_triggers(self, triggers: list[dict[str, Any]]) -> list[str]:
        """Validate and record engine-owned triggers (checks of every module); their ids."""


class WorkerHost(Protocol):
    """An ``iii-worker`` process, as its modules' services see it."""

    settings: Settings
    store: Any
    worker_id: str
    concurrency: int

    @property
    def app_name(self) -> str: ...

    @property
    def functions(self) -> Mapping[str, FunctionDef]:
        """The functions this worker serves now."""

    @property
    def triggers(self) -> Sequence[TriggerDef]:
        """The triggers this worker declares now."""

    @property
    def trigger_types(self) -> Mapping[str, TriggerTypeDef]:
        """The custom trigger types this worker provides now."""

    @property
    def hard_stopping(self) -> bool:
        """True once the worker was told to exit without waiting for running work."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the worker's handler pool."""

    def invoke(self, fdef: FunctionDef, inv: Invocation, run: Run) -> Any:
        """Run a handler to completion with its Context (from a pool thread); the process's
        observers see ``run`` start and finish."""

    def call(self, function_id: str, payload: Any) -> Any:
        """Call another function and wait for its result."""


class WebHost(Protocol):
    """A web process, as its modules see it.

    The host answers what no view answers itself: any werkzeug ``HTTPException`` (a 413
    for a body over ``III_HTTP_BODY_LIMIT`` included) and any unexpected exception become
    iii's error envelope, and every response carries ``X-Request-Id``.
    """

    settings: Settings

    @property
    def client(self) -> Client:
        """The web process's client; its calls wait on one reply consumer per process."""

    def trigger(self, function_id: str, payload: Any = None, **kwargs: Any) -> Any:
        """Call a function like any client (``App.trigger``)."""

    def management_route(self, rule: str, endpoint: str, view: Callable[..., Response],
                         methods: Sequence[str] = ("GET",)) -> None:
        """Serve ``view`` at ``/_iii{rule}`` as part of the management API: behind its access
        check (``III_API_TOKEN`` or loopback only), never shadowed by a module's catch-all."""

    def failure(self, code: str, message: str, detail: str, exc_info: Any = None) -> Response:
        """A 500 in iii's envelope whose ``detail`` goes to the log under a fresh
        ``error_id`` (named in the response), never to the client."""
