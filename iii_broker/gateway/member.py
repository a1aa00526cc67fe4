"""An SDK connection's place in the cluster: its functions as an :class:`App` whose
handlers forward each call over the socket, served by a :class:`Worker` of its own — the
same consumer, registry lease, in-flight records, durable job runner and observers as
any ``iii-worker`` — and a registrar that records the triggers the engine accepts one by
one, so a refused trigger is answered without costing the worker its functions.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..app import App
from ..client import Caller
from ..context import Context
from ..errors import IIIError, InvocationTimeout, RemoteError, TriggerConfigError
from ..function import FunctionDef
from ..message import now_ms
from ..modules import Module
from ..outage import is_outage, outage_for
from ..runtime import Worker
from ..runtime.registration import register_with_engine
from ..settings import Settings
from ..store import RedisError
from ..trigger import TriggerDef
from .frames import encode

if TYPE_CHECKING:
    from .connection import Connection

log = logging.getLogger("iii.gateway")


class SdkApp(App):
    """The functions and triggers one SDK worker registered; calls go through the
    gateway's shared :class:`Caller`."""

    def __init__(self, name: str, settings: Settings, caller: Caller) -> None:
        super().__init__(name, settings=settings)
        self._shared = caller
        self.changing = threading.RLock()
        """Held while the app changes and while a registration reads it."""

    @property
    def caller(self) -> Caller:
        return self._shared

    def close(self) -> None:
        """Nothing: the caller is the gateway's."""


class Pending:
    """A call forwarded to the SDK worker; its handler thread waits for the answer."""

    __slots__ = ("error", "function_id", "result", "settled")

    def __init__(self, function_id: str) -> None:
        self.function_id = function_id
        self.result: Any = None
        self.error: BaseException | None = None
        self.settled = threading.Lock()
        self.settled.acquire()  # released once, when the answer is in

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        """From the socket's thread (or the one closing it)."""
        self.result, self.error = result, error
        try:
            self.settled.release()
        except RuntimeError:
            pass  # settled already


class Forwarding:
    """The calls forwarded to one SDK worker and their answers. Each waits on its handler
    thread (the worker's pool, at most ``concurrency`` of them): a plain lock handed over
    by the socket's thread, with no event loop in between."""

    def __init__(self, send: Callable[[str], None], who: Callable[[], str],
                 note: Callable[[str, str, str], Callable[[], None]] | None = None) -> None:
        self._send = send
        self._who = who
        self._note = note
        """Told (trace id, function id, invocation id) of each call forwarded, and (by
        calling what it returns) when it ended: the SDK's log records of that trace made
        meanwhile are stored under them."""
        self.pending: dict[str, Pending] = {}
        self.closed: str | None = None
        """Why the socket closed (then every call fails ``invocation_stopped``)."""

    def handler(self, function_id: str) -> Callable[..., Any]:
        def forward(payload: Any, ctx: Context) -> Any:
            return self.call(function_id, payload, ctx)
        forward.__qualname__ = f"forward[{function_id}]"
        return forward

    def call(self, function_id: str, payload: Any, ctx: Context) -> Any:
        """Send an ``invokefunction`` and wait for its answer (until the caller's deadline);
        raises the SDK's error as :class:`RemoteError`."""
        if self.closed is not None:
            raise self.stopped(function_id)
        invocation_id = str(uuid.uuid4())
        pending = self.pending[invocation_id] = Pending(function_id)
        if self.closed is not None:  # closed meanwhile: stop_all may have missed this one
            self.pending.pop(invocation_id, None)
            raise self.stopped(function_id)
        frame: dict[str, Any] = {"type": "invokefunction", "invocation_id": invocation_id,
                                 "function_id": function_id, "data": payload,
                                 "traceparent": ctx.span.traceparent}
        if ctx.metadata:
            frame["metadata"] = ctx.metadata
        ended = self._note(ctx.trace_id, function_id, ctx.invocation_id) if self._note else None
        try:
            try:
                self._send(encode(frame))
            except Exception:  # noqa: BLE001 - the socket broke while sending
                if self.closed is None:
                    self.closed = "its socket failed"
                raise self.stopped(function_id) from None
            timeout = -1.0 if ctx.deadline is None else max(0.0, (ctx.deadline - now_ms()) / 1000)
            if not pending.settled.acquire(timeout=timeout):
                raise InvocationTimeout(f"{self._who()} did not answer {function_id!r} in time",
                                        function_id=function_id)
            if pending.error is not None:
                raise pending.error
            return pending.result
        finally:
            self.pending.pop(invocation_id, None)
            if ended is not None:
                ended()

    def answer(self, invocation_id: str, frame: dict[str, Any]) -> bool:
        """An ``invocationresult`` from the SDK; False when no call waits for it."""
        pending = self.pending.pop(invocation_id, None)
        if pending is None:
            return False
        error = frame.get("error")
        if error is not None:
            body = error if isinstance(error, dict) else {"message": str(error)}
            pending.settle(error=RemoteError(
                str(body.get("message") or "the SDK worker reported an error"),
                code=str(body.get("code") or "invocation_failed"),
                function_id=pending.function_id,
                stacktrace=body.get("stacktrace") if isinstance(body.get("stacktrace"), str)
                else None))
        else:
            pending.settle(frame.get("result"))
        return True

    def stop_all(self, why: str) -> None:
        """The socket closed: every call waiting fails ``invocation_stopped``."""
        self.closed = why
        for invocation_id in list(self.pending):
            pending = self.pending.pop(invocation_id, None)
            if pending is not None:
                pending.settle(error=self.stopped(pending.function_id))

    def stopped(self, function_id: str) -> RemoteError:
        return RemoteError(f"{self._who()} went away while running {function_id!r} "
                           f"({self.closed})", code="invocation_stopped",
                           function_id=function_id)


SDK_INFLIGHT_RECORD_DELAY_S = 0.05


class SdkWorker(Worker):
    """The cluster's worker for one SDK connection (kind ``sdk``)."""

    def __init__(self, conn: Connection, app: SdkApp, settings: Settings, *,
                 concurrency: int, modules: list[Module]) -> None:
        super().__init__(app, settings, concurrency=concurrency, registrar=self._register,
                         modules=modules, kind="sdk", worker_id=conn.worker_id)
        # Every call takes a WebSocket round trip to the SDK and back (~1 ms or more): a
        # 2 ms threshold would write (and delete) an in-flight record for nearly all of
        # them. Calls still running after 50 ms get one; a gateway killed within 50 ms of
        # a call's start leaves that caller to its timeout.
        self.inflight_record_delay_s = SDK_INFLIGHT_RECORD_DELAY_S
        self.conn = conn
        self.sdk_app = app
        self._accepted: set[str] = set()  # ids of the triggers the engine took

    def info(self) -> dict[str, Any]:
        info = super().info()
        info.update(self.conn.describe())
        return info

    def _register(self, _worker: Any) -> None:
        """Record this worker; triggers new since the last registration are tried one by
        one when the engine refuses them together, and the refused ones are answered to
        the SDK (``triggerregistrationresult``) and dropped."""
        app = self.sdk_app
        with app.changing:
            functions: list[FunctionDef] = list(app.functions.values())
            triggers = list(app.triggers)
        accepted = [t for t in triggers if t.id in self._accepted]
        new = [t for t in triggers if t.id not in self._accepted]
        try:
            self._register_checked(functions, accepted, new)
        except (IIIError, RedisError) as exc:
            if isinstance(exc, IIIError) and not is_outage(exc):
                raise
            # The broker or Redis is away: the socket stays open, and the consumer loop
            # registers again once they are back.
            outage_for(self.settings, exc).failed(exc)
            self._follow_after = time.monotonic() + 1.0
            self._changed.set()

    def _register_checked(self, functions: list[FunctionDef], accepted: list[TriggerDef],
                          new: list[TriggerDef]) -> None:
        try:
            register_with_engine(self, accepted + new, functions)
            accepted += new
        except TriggerConfigError:
            if not new:
                raise
            register_with_engine(self, accepted, functions)
            for t in new:
                try:
                    register_with_engine(self, [*accepted, t], functions)
                    accepted.append(t)
                except TriggerConfigError as exc:
                    self.conn.trigger_refused(t, exc)
        self._accepted = {t.id for t in accepted}
        self.conn.registered()


def refused_message(exc: IIIError) -> str:
    """The engine's refusal without the wrapper naming the app."""
    message = exc.message
    marker = "the engine refused to register app "
    if message.startswith(marker) and ": " in message:
        message = message.split(": ", 1)[1]
        if message.startswith("invalid_trigger: "):
            message = message[len("invalid_trigger: "):]
    return message


__all__ = ["Forwarding", "SdkApp", "SdkWorker", "TriggerDef", "refused_message"]
