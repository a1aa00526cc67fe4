"""The App: what a user module defines, a worker serves, and a caller calls through."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .client import Caller, Enqueue, Void
from .errors import InvalidFunctionId, TriggerConfigError
from .function import FunctionDef, check_function_id
from .modules import all_trigger_types, check_custom_type
from .settings import Settings
from .trigger import TriggerDef, TriggerTypeDef, TriggerTypeHandler, check_trigger_type_id

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
        self.trigger_types: dict[str, TriggerTypeDef] = {}
        """Custom trigger types this app provides (:meth:`register_trigger_type`)."""
        self._trigger_ids: set[str] = set()  # ids of self.triggers: one declared twice is kept once
        self._builtin = False
        self._caller: Caller | None = None
        self._caller_pid = 0
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

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
                           dict(metadata or {}), request_schema, response_schema,
                           unregister_from=self.unregister_function)
        self.functions[function_id] = fdef
        self._changed()
        return fdef

    def unregister_function(self, function_id: str) -> bool:
        """Take a function and the triggers bound to it out of this app, and out of the
        running worker serving it (the engine is told at once); False if it was not here."""
        fdef = self.functions.pop(function_id, None)
        if fdef is None:
            return False
        self.triggers = [t for t in self.triggers if t.function_id != function_id]
        self._trigger_ids = {t.id for t in self.triggers}
        self._changed()
        return True

    def register_trigger(
        self, type: str, function_id: str, config: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Trigger:
        """Bind a trigger of ``type`` to ``function_id``; the engine activates it when the
        worker starts (at once when it runs already). Returns a handle whose
        ``unregister()`` takes the trigger back out. A type no module declares is a custom
        one (:meth:`register_trigger_type`): its trigger waits, inactive, until a worker
        provides the type. Raises :class:`TriggerConfigError` for bad config, a type that
        looks like a misspelt built-in one, or an http trigger on a reserved built-in.
        """
        tdef = TriggerDef.from_dict({"type": type, "function_id": function_id,
                                     "config": {} if config is None else config,
                                     "metadata": {} if metadata is None else metadata})
        known = all_trigger_types()
        if tdef.type not in known:
            check_custom_type(tdef.type, known, function_id)
            checked = tdef.config
        else:
            try:
                checked = known[tdef.type].validate(tdef.config, function_id)
            except TriggerConfigError as exc:
                raise TriggerConfigError(f"{exc.message} (trigger for {function_id!r})",
                                         function_id=function_id) from None
        tdef = TriggerDef(tdef.type, tdef.function_id, checked, tdef.metadata)
        if tdef.id not in self._trigger_ids:
            self.triggers.append(tdef)
            self._trigger_ids.add(tdef.id)
            self._changed()
        return Trigger(self, tdef)

    def unregister_trigger(self, trigger_id: str) -> bool:
        """Take a trigger out of this app (and out of the running worker); False if absent."""
        kept = [t for t in self.triggers if t.id != trigger_id]
        if len(kept) == len(self.triggers):
            return False
        self.triggers = kept
        self._trigger_ids.discard(trigger_id)
        self._changed()
        return True

    def register_trigger_type(self, type_id: str, handler: TriggerTypeHandler, *,
                              description: str = "") -> TriggerTypeDef:
        """Provide the custom trigger type ``type_id`` (iii's ``register_trigger_type``):
        while this app's worker runs, the engine hands ``handler`` every active trigger of
        that type, whoever declared it (``register_trigger(trigger)``), and takes them back
        (``unregister_trigger(trigger)``); the handler fires a trigger by calling its
        function (``app.trigger(trigger.function_id, payload)``). Raises
        :class:`TriggerConfigError` for a malformed id or a built-in type's."""
        check_trigger_type_id(type_id)
        if type_id in all_trigger_types():
            raise TriggerConfigError(f"trigger type {type_id!r} is built in: a module "
                                     "provides it; choose another id")
        for name in ("register_trigger", "unregister_trigger"):
            if not callable(getattr(handler, name, None)):
                raise TypeError(f"the handler of trigger type {type_id!r} needs a {name}() "
                                "method")
        tt = TriggerTypeDef(type_id, handler, description)
        self.trigger_types[type_id] = tt
        self._changed()
        return tt

    def unregister_trigger_type(self, type_id: str) -> bool:
        """Stop providing ``type_id``; its triggers wait, inactive, for another provider."""
        if self.trigger_types.pop(type_id, None) is None:
            return False
        self._changed()
        return True

    def on_change(self, listener: Callable[[], None], *, remove: bool = False) -> None:
        """Call ``listener`` (from the changing thread) whenever functions or triggers are
        added or removed; the worker serving this app uses it to follow such changes."""
        with self._lock:
            if remove:
                self._listeners = [x for x in self._listeners if x is not listener]
            else:
                self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()

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


class Trigger:
    """What :meth:`App.register_trigger` returns: the binding, and ``unregister()``."""

    def __init__(self, app: App, definition: TriggerDef) -> None:
        self.app = app
        self.definition = definition

    @property
    def id(self) -> str:
        return self.definition.id

    @property
    def type(self) -> str:
        return self.definition.type

    @property
    def function_id(self) -> str:
        return self.definition.function_id

    @property
    def config(self) -> dict[str, Any]:
        return self.definition.config

    @property
    def metadata(self) -> dict[str, Any]:
        return self.definition.metadata

    def to_dict(self) -> dict[str, Any]:
        return self.definition.to_dict()

    def unregister(self) -> bool:
        """Remove this trigger from its app (and from the running worker); idempotent."""
        return self.app.unregister_trigger(self.id)

    def __repr__(self) -> str:
        return f"<Trigger {self.type} -> {self.function_id!r} {self.id}>"


def _describe(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _doc(fn: Callable[..., Any]) -> str | None:
    doc = (getattr(fn, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else None
