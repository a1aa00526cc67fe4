"""Running an app's handlers: each with its Context, ``async def`` ones on one event-loop
thread, and the reply each outcome becomes."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import traceback
from collections.abc import Sequence
from typing import Any

from .. import context as _context
from ..app import App
from ..errors import IIIError, InvocationFailed, PayloadError, PayloadLimitExceeded, RemoteError
from ..function import FunctionDef, is_reserved
from ..message import Invocation, Limits, dumps, reply_body
from ..modules import Module, extend_context
from ..observe import Observers, Run

log = logging.getLogger("iii.worker")


class Handlers:
    """Runs the handlers of one app with the Context its modules extend."""

    def __init__(self, app: App, modules: Sequence[Module],
                 observers: Observers | None = None) -> None:
        self.app = app
        self.modules = list(modules)
        self.observers = observers or Observers(())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def context(self, fdef: FunctionDef, inv: Invocation, run: Run) -> _context.Context:
        ctx = _context.Context(fdef.function_id, inv.invocation_id, inv.attempt, run.span,
                               self.app, deadline=inv.deadline, metadata=inv.metadata,
                               quiet=run.quiet)
        extend_context(ctx, self.modules)
        return ctx

    def invoke(self, fdef: FunctionDef, inv: Invocation, run: Run) -> Any:
        """Run a handler to completion from a pool thread (``async def`` ones on the loop);
        raises what the handler raised. The observers see the run start and finish."""
        if fdef.is_async:
            return asyncio.run_coroutine_threadsafe(self.invoke_async(fdef, inv, run),
                                                    self.loop()).result()
        observers = self.observers
        if observers:
            observers.start(run)
        ctx = self.context(fdef, inv, run)
        token = _context._set_current(ctx)
        try:
            result = fdef.handler(inv.payload, ctx) if fdef.wants_context \
                else fdef.handler(inv.payload)
        except BaseException as exc:
            if observers:
                observers.finish(run, error=exc)
            raise
        finally:
            _context._reset_current(token)
        if observers:
            observers.finish(run, result)
        return result

    async def invoke_async(self, fdef: FunctionDef, inv: Invocation, run: Run) -> Any:
        """Run an ``async def`` handler (on the loop); raises what the handler raised."""
        observers = self.observers
        if observers:
            observers.start(run)
        ctx = self.context(fdef, inv, run)
        token = _context._set_current(ctx)
        try:
            if fdef.wants_context:
                result = await fdef.handler(inv.payload, ctx)
            else:
                result = await fdef.handler(inv.payload)
        except BaseException as exc:
            if observers:
                observers.finish(run, error=exc)
            raise
        finally:
            _context._reset_current(token)
        if observers:
            observers.finish(run, result)
        return result

    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop of ``async def`` handlers, started on first use."""
        if self._loop is None:
            with self._lock:
                if self._loop is None:
                    loop = asyncio.new_event_loop()
                    threading.Thread(target=loop.run_forever, name="iii-asyncio",
                                     daemon=True).start()
                    self._loop = loop
        return self._loop

    def close(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)


def ok_reply(inv: Invocation, result: Any, limits: Limits) -> str:
    """The reply carrying ``result``: an ``invalid_payload`` one naming the limit when it
    is larger or deeper than ``limits`` allow, an ``invocation_failed`` one when it is not
    JSON."""
    try:
        text = dumps(result, what=f"result of {inv.function_id!r}", limits=limits)
        # What reply_body makes, without encoding the result a second time.
        return f'{{"invocation_id":{json.dumps(inv.invocation_id)},"result":{text}}}'
    except PayloadLimitExceeded as exc:
        error: IIIError = PayloadError(exc.message, function_id=inv.function_id,
                                       invocation_id=inv.invocation_id)
    except PayloadError as exc:
        error = InvocationFailed(exc.message,
                                 function_id=inv.function_id, invocation_id=inv.invocation_id)
    log.warning("call %s of %s: %s", inv.invocation_id, inv.function_id, error.message)
    return reply_body(inv.invocation_id, error=error)


def failed_reply(inv: Invocation, exc: BaseException, *, log_it: bool = False) -> str:
    """The error reply; ``log_it`` when nobody waits for the reply (Void calls)."""
    if log_it:
        log.error("fire-and-forget call %s of %s failed", inv.invocation_id, inv.function_id,
                  exc_info=exc)
    if isinstance(exc, RemoteError) or (isinstance(exc, IIIError) and is_reserved(inv.function_id)):
        # A built-in refusing its input answers with its own error (invalid_trigger,
        # invalid_function_id, ...), as iii's engine does, not as a handler that raised; an
        # SDK worker's answer goes on as it gave it.
        return reply_body(inv.invocation_id, error=IIIError(
            exc.message, code=exc.code, function_id=exc.function_id or inv.function_id,
            invocation_id=inv.invocation_id, stacktrace=exc.stacktrace))
    message = str(exc) or type(exc).__name__
    if isinstance(exc, IIIError):
        message = f"{exc.code}: {exc.message}"
    error = InvocationFailed(
        f"{type(exc).__name__}: {message}", function_id=inv.function_id,
        invocation_id=inv.invocation_id,
        stacktrace="".join(traceback.format_exception(exc)),
    )
    return reply_body(inv.invocation_id, error=error)
