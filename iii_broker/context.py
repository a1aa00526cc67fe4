"""The Context handed to a running function.

A handler gets it as its second parameter (``def handler(payload, ctx)``) or from
:func:`current_context` anywhere below the handler.
"""

from __future__ import annotations

import logging
import os
import sys
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

from .tracing import SpanContext

_current: ContextVar[Context | None] = ContextVar("iii_context", default=None)


class Caller(Protocol):
    """What a Context calls other functions through (an :class:`~iii_broker.App`)."""

    def trigger(self, function_id: str, payload: Any = None, action: Any = None,
                timeout_ms: int | None = None, metadata: dict[str, Any] | None = None) -> Any: ...

    async def atrigger(self, function_id: str, payload: Any = None, action: Any = None,
                       timeout_ms: int | None = None,
                       metadata: dict[str, Any] | None = None) -> Any: ...


@dataclass
class Context:
    """What a running function knows about its invocation."""

    function_id: str
    invocation_id: str
    attempt: int
    span: SpanContext
    app: Caller
    """The app serving the function (its ``trigger`` makes nested calls)."""
    deadline: int | None = None
    """Unix ms after which the caller no longer waits (None for fire and forget)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    """What modules add to the context, by name (``ctx.extras["state"]``, also ``ctx.state``)."""
    quiet: bool = False
    """Set in a run whose logs must fire no ``log`` trigger (a log handler, and every call
    it makes); calls made from here carry it on (:mod:`iii_broker.observe`)."""

    @property
    def trace_id(self) -> str:
        return self.span.trace_id

    @property
    def span_id(self) -> str:
        return self.span.span_id

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry function_id, invocation_id and trace_id."""
        base = logging.getLogger(f"iii.fn.{self.function_id}")
        return _RunLogger(base, {
            "function_id": self.function_id,
            "invocation_id": self.invocation_id,
            "trace_id": self.trace_id,
        })

    def trigger(self, function_id: str, payload: Any = None, **kwargs: Any) -> Any:
        """Call another function from this one (see :meth:`App.trigger`)."""
        return self.app.trigger(function_id, payload, **kwargs)

    async def atrigger(self, function_id: str, payload: Any = None, **kwargs: Any) -> Any:
        """Await another function from an ``async def`` handler (see :meth:`App.atrigger`)."""
        return await self.app.atrigger(function_id, payload, **kwargs)

    def __getattr__(self, name: str) -> Any:
        extras = self.__dict__.get("extras") or {}
        if name in extras:
            return extras[name]
        raise AttributeError(name)


class LogSink(Protocol):
    """Where a run logger's records go when only a log store would take them (set by the
    observability module with :func:`set_log_sink`)."""

    below: int
    """Records under this level reach no logging handler but the store's."""

    def take(self, logger: logging.Logger, level: int, msg: Any, args: tuple[Any, ...],
             extra: Any, frame: FrameType) -> None: ...


_sink: LogSink | None = None
_LOGGING_FILE = os.path.normcase(logging.__file__)


def log_sink() -> LogSink | None:
    """The sink :func:`set_log_sink` set, if any."""
    return _sink


def set_log_sink(sink: LogSink | None) -> None:
    """Send ``ctx.logger`` records under ``sink.below`` straight to ``sink`` (None: stop)."""
    global _sink
    _sink = sink


class _RunLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Adds the run's ids to each record and keeps the call's own ``extra`` fields (the
    standard adapter replaces them, before Python 3.13's ``merge_extra``).

    A record that no logging handler would take (under the process's own level; the log
    store lowered this logger's level to keep it) goes straight to the store's sink: the
    standard machinery (a ``LogRecord``, the caller's lookup, every handler up the tree)
    costs several times what the store needs."""

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        sink = _sink
        if (sink is not None and level < sink.below and not self.logger.handlers
                and "exc_info" not in kwargs and "stack_info" not in kwargs
                and self.logger.isEnabledFor(level)):
            frame = sys._getframe(1)
            while frame.f_back is not None and \
                    os.path.normcase(frame.f_code.co_filename) == _LOGGING_FILE:
                frame = frame.f_back  # .info() and friends: the caller is past them
            sink.take(self.logger, level, msg, args, kwargs.get("extra"), frame)
            return
        super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra, own = kwargs.get("extra"), dict(self.extra or {})
        kwargs["extra"] = {**extra, **own} if extra else own
        return msg, kwargs


def current_context() -> Context:
    """The Context of the function running here; raises LookupError outside one."""
    ctx = _current.get()
    if ctx is None:
        raise LookupError("current_context() called outside a running function")
    return ctx


def _set_current(ctx: Context | None) -> Any:
    return _current.set(ctx)


def _reset_current(token: Any) -> None:
    _current.reset(token)


def _peek() -> Context | None:
    return _current.get()
