"""The App: what a user module defines, a worker serves, and a caller calls through."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .client import Caller, Enqueue, Void
from .errors import InvalidFunctionId, TriggerConfigError
from .function import RESERVED_IDS, RESERVED_PREFIXES, FunctionDef, check_function_id
from .modules import all_trigger_types
from .settings import Settings
from .trigger import TriggerDef

F = TypeVar("F", bound=Callable[..., Any])


class App:
    """A named set of functions and triggers, plus a client to call any function.

    Settings come from ``III_*`` environment variables unless given.
    """

    def __init__(self, name: str, settings: Settings | None = None) -> None:
        self.name = name
        self._settings = settings
        self.functions: dict[str, FunctionDef] = {}
        self.triggers: list[TriggerDef] = []
        self._builtin = False
        self._caller: Caller | None = None
        self._caller_pid = 0
        self._lock = threading.Lock()

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_env()
        return self._settings

    def configure(self, settings: Settings) -> None:
        """Replace the settings (before any call is made)."""
        self._settings = settings
        if self._caller is not None:
            self._caller.close()
            self._caller = None

    # -- registration ---------------------------------------------------------------

    def function(
        self, function_id: str, *, description: str | None = None,
        metadata: dict[str, Any] | None = None, request_schema: dict[str, Any] | None = None,
        response_schema: dict[str, Any] | None = None,
    ) -> Callable[[F], F]:
        """Decorator: register the decorated callable (sync or ``async def``) as ``function_id``.

        ``request_schema``/``response_schema`` (JSON Schema) describe the request and response
        bodies for ``GET /_iii/openapi.json``; without them a pydantic model or TypedDict
        annotation on the first parameter / the return value is used.
        """
        def decorate(handler: F) -> F:
            self.register_function(function_id, handler, description=description,
                                   metadata=metadata, request_schema=request_schema,
                                   response_schema=response_schema)
            return handler
        return decorate

    def register_function(
        self, function_id: str, handler: Callable[..., Any], *,
        description: str | None = None, metadata: dict[str, Any] | None = None,
        request_schema: dict[str, Any] | None = None,
        response_schema: dict[str, Any] | None = None,
    ) -> FunctionDef:
        """Register ``handler`` under ``function_id``.

        Raises :class:`InvalidFunctionId` for a malformed or reserved id, or one already
        registered in this app with a different handler.
        """
        check_function_id(function_id, builtin=self._builtin)
        if not callable(handler):
            raise TypeError(f"handler for {function_id!r} is not callable")
        existing = self.functions.get(function_id)
        if existing is not None:
            if existing.handler is handler:
                return existing
            raise InvalidFunctionId(
                f"function id {function_id!r} is already registered in app {self.name!r} "
                f"by {_describe(existing.handler)}",
                function_id=function_id,
            )
        for name, schema in (("request_schema", request_schema),
                             ("response_schema", response_schema)):
            if schema is not None and not isinstance(schema, dict):
                raise TypeError(f"{name} of {function_id!r} must be a JSON Schema dict, "
                                f"not {type(schema).__name__}")
        fdef = FunctionDef(function_id, handler, description or _doc(handler),
                           dict(metadata or {}), request_schema, response_schema)
        self.functions[function_id] = fdef
        return fdef

    def register_trigger(
        self, type: str, function_id: str, config: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> TriggerDef:
        """Bind a trigger of ``type`` to ``function_id``; the engine activates it when the
        worker starts. Raises :class:`TriggerConfigError` for an unknown type, bad config or
        an http trigger on a reserved built-in.
        """
        tdef = TriggerDef.from_dict({"type": type, "function_id": function_id,
                                     "config": {} if config is None else config,
                                     "metadata": {} if metadata is None else metadata})
        known = all_trigger_types()
        if tdef.type not in known:
            raise TriggerConfigError(
                f"unknown trigger type {tdef.type!r} for {function_id!r}; "
                f"known types: {', '.join(sorted(known))}", function_id=function_id,
            )
        try:
            checked = known[tdef.type].validate(tdef.config)
        except TriggerConfigError as exc:
            raise TriggerConfigError(f"{exc.message} (trigger for {function_id!r})",
                                     function_id=function_id) from None
        if tdef.type == "http" and is_reserved(function_id):
            raise TriggerConfigError(
                f"function {function_id!r} is a reserved built-in: an http trigger may not "
                "expose it", function_id=function_id)
        tdef = TriggerDef(tdef.type, tdef.function_id, checked, tdef.metadata)
        if all(t.id != tdef.id for t in self.triggers):
            self.triggers.append(tdef)
        return tdef

    # -- calling --------------------------------------------------------------------

    @property
    def caller(self) -> Caller:
        pid = os.getpid()
        if self._caller is None or self._caller_pid != pid:
            with self._lock:
                if self._caller is None or self._caller_pid != pid:
                    self._caller = Caller(self.settings)
                    self._caller_pid = pid
        return self._caller

    def trigger(
        self, function_id: str, payload: Any = None, action: Void | Enqueue | type[Void] | None = None,
        timeout_ms: int | None = None, metadata: dict[str, Any] | None = None,
    ) -> Any:
        """Invoke ``function_id`` with ``payload`` (iii-reference §2).

        With no action, waits up to ``timeout_ms`` (default ``III_DEFAULT_TIMEOUT_MS``)
        and returns the handler's result. ``Void`` returns None at once. Raises an
        :class:`~iii_broker.errors.IIIError` subclass: ``FunctionNotFound``,
        ``InvocationFailed``, ``InvocationStopped``, ``InvocationTimeout``,
        ``EnqueueError``, ``PayloadError`` (before publishing) or ``BrokerUnavailable``.
        """
        return self.caller.call(function_id, payload, action=action, timeout_ms=timeout_ms,
                                metadata=metadata)

    async def atrigger(
        self, function_id: str, payload: Any = None, action: Void | Enqueue | type[Void] | None = None,
        timeout_ms: int | None = None, metadata: dict[str, Any] | None = None,
    ) -> Any:
        """:meth:`trigger` for ``async def`` code: waits without blocking the event loop."""
        return await self.caller.acall(function_id, payload, action=action,
                                       timeout_ms=timeout_ms, metadata=metadata)

    def close(self) -> None:
        """Stop the reply consumer and release connections."""
        if self._caller is not None:
            self._caller.close()
            self._caller = None

    def __repr__(self) -> str:
        return f"<App {self.name!r} functions={len(self.functions)} triggers={len(self.triggers)}>"


def is_reserved(function_id: str) -> bool:
    """Built-ins (``engine::*``, ``iii::*``, ``state::*``, ``stream::*``, ``publish``)."""
    return function_id.startswith(RESERVED_PREFIXES) or function_id in RESERVED_IDS


def _describe(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _doc(fn: Callable[..., Any]) -> str | None:
    doc = (getattr(fn, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else None
