"""The calling side of ``trigger``: publish an invocation, wait for its reply.

Each calling process owns one reply queue and one consumer thread that resolves
its waiting calls by ``correlation_id``. Replies that arrive after their call
timed out are dropped.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kombu import Exchange, Queue

from . import context as _context
from .errors import (
    BrokerUnavailable,
    EnqueueError,
    FunctionNotFound,
    InvalidArgument,
    InvocationTimeout,
)
from .function import check_function_id
from .message import Invocation, Limits, now_ms
from .observe import QUIET_HEADER, RERUN_HEADER, TRIGGER_HEADER, _rerun_of, _trigger_type
from .queues.amqp import AmqpJobs
from .queues.store import JobStore
from .replies import ReplyConsumer
from .settings import Settings, mask_url
from .store import Keys, RedisError, connect_store
from .tracing import SpanContext, ambient_span
from .transport import (
    Publisher,
    function_exchange,
    function_queue,
    reply_queue,
)

log = logging.getLogger("iii.client")

# A function seen alive is trusted for this long before the registry is asked again.
_KNOWN_TTL_S = 1.0
# The first wait for a reply, sent with the call (replies.ReplyConsumer.wait_slot's step).
_SLOT_WAIT_S = 0.25
# How often a sync call waiting for its reply checks that its function still has a worker.
_SERVED_CHECK_S = 1.0
# How often calls made with Caller.submit are checked for a deadline passed.
_DEADLINE_CHECK_S = 0.25


def check_timeout(timeout_ms: Any, function_id: str | None = None) -> int:
    """``timeout_ms`` if it is a positive int (not a bool); raises :class:`InvalidArgument`."""
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms <= 0:
        raise InvalidArgument(
            f"timeout_ms must be a positive integer of milliseconds, not {timeout_ms!r}",
            function_id=function_id)
    return timeout_ms


class Void:
    """Action: fire and forget; ``trigger`` returns None at once."""

    def __repr__(self) -> str:
        return "Void()"


class Enqueue:
    """Action: hand the call to the named durable queue; returns ``{"messageReceiptId"}``."""

    def __init__(self, queue: str = "default", idempotency_key: str | None = None) -> None:
        if not isinstance(queue, str) or not queue:
            raise TypeError(f"Enqueue(queue=...) must be a queue name, not {queue!r}")
        self.queue = queue
        self.idempotency_key = idempotency_key

    def __repr__(self) -> str:
        return f"Enqueue(queue={self.queue!r})"


@dataclass
class _Pending:
    """A sync call waiting for its reply."""

    function_id: str
    invocation_id: str
    future: Future[Any]
    wait_s: float
    """Seconds left until the call's deadline, counted after publishing set-up."""
    timeout_ms: int
    """The timeout the caller gave, for the error message."""
    slot: Any = None
    """The reply list of its own the reply comes to (sync calls on redis://), else None."""
    seen_gone: bool = False
    """Its function had no live worker at the last look (:meth:`Caller._still_served`)."""

    def timeout_error(self) -> InvocationTimeout:
        return InvocationTimeout(
            f"no answer from {self.function_id!r} within {self.timeout_ms} ms",
            function_id=self.function_id, invocation_id=self.invocation_id)


class Caller:
    """Publishes invocations and routes their replies back to the waiting threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limits = Limits.of(settings)
        self.keys = Keys(settings.namespace)
        self.client_id = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.publisher = Publisher(settings)
        self.store = connect_store(settings)
        self._reply_queue = reply_queue(settings, self.client_id)
        self.replies = ReplyConsumer(settings, self._reply_queue, self.store)
        self._known: dict[str, float] = {}
        self._routes: dict[str, tuple[Queue, Exchange]] = {}  # function id -> its queue, exchange
        self._jobs: JobStore | None = None
        self._local = threading.local()  # .batch: the calls batched() collects on a thread
        self._submitted: dict[str, tuple[float, _Pending]] = {}
        self._submitted_lock = threading.Lock()
        self._deadlines: threading.Thread | None = None
        self.on_block: Callable[[int], None] | None = None
        """Set by a worker: told +1 when a handler starts waiting on a call, -1 after."""

    # -- calling -----------------------------------------------------------------

    def prepare(
        self, function_id: str, payload: Any, timeout_ms: int | None, metadata: dict[str, Any] | None,
        sync: bool,
    ) -> tuple[Invocation, str, dict[str, Any]]:
        if function_id not in self._routes:
            check_function_id(function_id, builtin=True)
        timeout = self.settings.default_timeout_ms if timeout_ms is None else \
            check_timeout(timeout_ms, function_id)
        parent = _context._peek()
        # The run's span is the parent of what it calls; outside any run, the span of the
        # process's own tracer (a web request's, a cron fire's) or a new trace.
        span = parent.span if parent else (ambient_span() or SpanContext.new_root())
        inv = Invocation(
            function_id, payload,
            deadline=now_ms() + timeout if sync else None,
            metadata=dict(metadata or {}),
        )
        body = inv.to_json(self.limits)  # raises PayloadError before anything is published
        headers = {"traceparent": span.traceparent}
        trigger_type = _trigger_type.get()
        if trigger_type is not None:
            headers[TRIGGER_HEADER] = trigger_type
        if parent is not None and parent.quiet:
            headers[QUIET_HEADER] = "1"
        rerun_of = _rerun_of.get()
        if rerun_of is not None:
            headers[RERUN_HEADER] = rerun_of
        return inv, body, headers

    def call(
        self,
        function_id: str,
        payload: Any = None,
        *,
        action: Void | Enqueue | type[Void] | None = None,
        timeout_ms: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Any:
        """Invoke ``function_id``; see :meth:`iii_broker.App.trigger`."""
        if isinstance(action, Enqueue):
            if timeout_ms is not None:
                check_timeout(timeout_ms, function_id)
            return self.enqueue(function_id, payload, action, metadata)
        pending = self._start_call(function_id, payload, action, timeout_ms, metadata, own=True)
        if pending is None:
            return None
        # What _waiting() does, without a generator-based context manager per call.
        hook = self.on_block if _context._peek() is not None else None
        if hook:
            hook(+1)
        try:
            return self._wait_reply(pending)
        except FutureTimeout:
            raise pending.timeout_error() from None
        finally:
            self._done_waiting(pending, hook)

    def _wait_reply(self, pending: _Pending) -> Any:
        """The reply of a sync call; FutureTimeout at its deadline. A call still unanswered
        after :data:`_SERVED_CHECK_S` asks the registry, every as long, whether its function
        still has a worker (:meth:`_still_served`)."""
        deadline = time.monotonic() + pending.wait_s
        while True:
            step = min(deadline - time.monotonic(), _SERVED_CHECK_S)
            try:
                if step <= 0:
                    raise FutureTimeout()
                if pending.slot is not None:
                    return self.replies.wait_slot(pending.slot, pending.invocation_id, step)
                return self.replies.wait(pending.future, step)
            except FutureTimeout:
                if time.monotonic() >= deadline:
                    raise
                self._still_served(pending)

    def _still_served(self, pending: _Pending) -> None:
        """Raise :class:`FunctionNotFound` when the call's function has had no live worker
        for :data:`_SERVED_CHECK_S` (seen twice in a row), so a call left on the queue of a
        function that lost its last worker fails in seconds, not at its timeout — also when
        no engine is left to answer it (its last worker was the engine). The second look
        leaves time for an ``invocation_stopped`` the sweeper publishes as it removes a dead
        worker to arrive first."""
        try:
            served = bool(self.store.sismember(self.keys.functions, pending.function_id))
        except RedisError:
            return  # an outage: the reply wait reports it
        if served:
            self._known[pending.function_id] = time.monotonic()
            pending.seen_gone = False
            return
        self._known.pop(pending.function_id, None)
        if not pending.seen_gone:
            pending.seen_gone = True
            return
        raise FunctionNotFound(
            f"function {pending.function_id!r} lost its last worker while this call waited "
            "for it", function_id=pending.function_id, invocation_id=pending.invocation_id)

    async def acall(
        self,
        function_id: str,
        payload: Any = None,
        *,
        action: Void | Enqueue | type[Void] | None = None,
        timeout_ms: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Any:
        """Awaitable :meth:`call`, for ``async def`` code."""
        if isinstance(action, Enqueue):
            if timeout_ms is not None:
                check_timeout(timeout_ms, function_id)
            return self.enqueue(function_id, payload, action, metadata)
        pending = self._start_call(function_id, payload, action, timeout_ms, metadata)
        if pending is None:
            return None
        with self._waiting(pending):
            try:
                return await self.replies.await_reply(pending.future, pending.wait_s,
                                                      every=lambda: self._still_served(pending),
                                                      every_s=_SERVED_CHECK_S)
            except TimeoutError:
                raise pending.timeout_error() from None

    def submit(
        self,
        function_id: str,
        payload: Any = None,
        *,
        timeout_ms: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Future[Any]:
        """Publish a sync call without waiting for it: the returned future gets the result
        (or the error) from the process's reply thread, or :class:`InvocationTimeout` once
        the call's timeout has passed (looked at every :data:`_DEADLINE_CHECK_S`). For code
        that must not hold a thread or a coroutine per call in flight (the cron beat).
        Raises what :meth:`call` raises before publishing."""
        pending = self._start_call(function_id, payload, None, timeout_ms, metadata,
                                   batch=getattr(self._local, "batch", None))
        assert pending is not None
        fut = pending.future
        self.replies.hold(fut)
        with self._submitted_lock:
            self._submitted[pending.invocation_id] = (time.monotonic() + pending.wait_s, pending)
            if self._deadlines is None:
                self._deadlines = threading.Thread(target=self._expire_submitted,
                                                   name="iii-call-deadlines", daemon=True)
                self._deadlines.start()
        fut.add_done_callback(lambda _f: self._submitted.pop(pending.invocation_id, None))
        return fut

    @contextmanager
    def batched(self) -> Iterator[None]:
        """Calls this thread submits (:meth:`submit`) inside the block are sent together as
        it ends: on a ``redis://`` broker in one write and one round trip (on others they
        are sent as they are made). If sending fails, their futures get the error."""
        batch: list[tuple[bytes, _Pending]] = []
        self._local.batch = batch
        try:
            yield
        finally:
            self._local.batch = None
            try:
                self.publisher.send_all([packed for packed, _ in batch])
            except BrokerUnavailable as exc:
                for _, pending in batch:
                    self.replies.forget(pending.invocation_id)
                    try:
                        pending.future.set_exception(BrokerUnavailable(
                            exc.message, server=exc.server, function_id=pending.function_id,
                            invocation_id=pending.invocation_id))
                    except InvalidStateError:
                        pass

    def _expire_submitted(self) -> None:
        """Fail the submitted calls whose deadline passed without a reply."""
        while not self.replies.closed:
            time.sleep(_DEADLINE_CHECK_S)
            now = time.monotonic()
            with self._submitted_lock:
                late = [p for deadline, p in self._submitted.values() if deadline <= now]
            for pending in late:
                self.replies.forget(pending.invocation_id)
                try:
                    pending.future.set_exception(pending.timeout_error())
                except InvalidStateError:
                    pass  # its reply came just now

    @contextmanager
    def _waiting(self, pending: _Pending) -> Iterator[None]:
        """While a handler waits on a nested call, its worker may take one more message."""
        hook = self.on_block if _context._peek() is not None else None
        if hook:
            hook(+1)
        try:
            yield
        finally:
            self._done_waiting(pending, hook)

    def _done_waiting(self, pending: _Pending, hook: Callable[[int], None] | None) -> None:
        if pending.slot is not None:
            self.replies.checkin(pending.slot)
        else:
            self.replies.forget(pending.invocation_id)
        if hook:
            hook(-1)

    def _start_call(
        self, function_id: str, payload: Any, action: Any, timeout_ms: int | None,
        metadata: dict[str, Any] | None, own: bool = False,
        batch: list[tuple[bytes, _Pending]] | None = None,
    ) -> _Pending | None:
        """Publish the call; ``own``: a sync waiter that may read its reply from a list of
        its own (:meth:`ReplyConsumer.checkout`); ``batch``: collect its LPUSH there instead
        of sending it (:meth:`batched`)."""
        void = action is Void or isinstance(action, Void)
        if action is not None and not void:
            raise TypeError(f"action must be Void or Enqueue(...), not {action!r}")
        inv, body, headers = self.prepare(function_id, payload, timeout_ms, metadata, sync=not void)
        self._require_function(function_id, inv.invocation_id)
        route = self._routes.get(function_id)
        if route is None:
            route = (function_queue(self.settings, function_id),
                     function_exchange(self.settings, function_id))
            if len(self._routes) < 10_000:
                self._routes[function_id] = route
        queue, exchange = route
        if void:
            self.publisher.publish(body, exchange=exchange, routing_key=function_id,
                                   declare=queue, headers=headers)
            return None
        self.replies.start()
        assert inv.deadline is not None
        slot = self.replies.checkout() if own else None
        pending = _Pending(
            function_id, inv.invocation_id,
            self.replies.expect(inv.invocation_id) if slot is None else None,  # type: ignore[arg-type]
            wait_s=max((inv.deadline - now_ms()) / 1000, 0.001),
            timeout_ms=self.settings.default_timeout_ms if timeout_ms is None else timeout_ms,
            slot=slot,
        )
        try:
            self.publisher.publish(
                body, exchange=exchange, routing_key=function_id, declare=queue,
                headers=headers, reply_to=self._reply_queue.name if slot is None else slot.name,
                correlation_id=inv.invocation_id,
                send=(lambda packed: slot.push_then_pop(packed, min(pending.wait_s, _SLOT_WAIT_S)))
                if slot is not None else
                (lambda packed: batch.append((packed, pending))) if batch is not None else None,
            )
        except BaseException:
            if slot is not None:
                self.replies.checkin(slot)
            else:
                self.replies.forget(inv.invocation_id)
            raise
        return pending

    def enqueue(self, function_id: str, payload: Any, action: Enqueue,
                metadata: dict[str, Any] | None) -> dict[str, Any]:
        """Store a durable job; returns ``{"messageReceiptId"}`` once Redis holds it."""
        inv, _body, headers = self.prepare(function_id, payload, None, metadata, sync=False)
        try:
            config = self.jobs.config(action.queue)
            if config.topic is not None:
                raise EnqueueError(f"queue {action.queue!r} belongs to a durable topic "
                                   "subscriber: publish to the topic with iii::durable::publish")
            stored, message_id = self.jobs.enqueue(
                [(config, function_id, inv, headers)], message_id=inv.invocation_id,
                idempotency_key=action.idempotency_key)
        except (EnqueueError, BrokerUnavailable) as exc:
            exc.function_id, exc.invocation_id = function_id, inv.invocation_id
            raise
        except RedisError as exc:
            raise BrokerUnavailable(
                f"cannot reach Redis at {mask_url(self.settings.redis_url)}: {exc}",
                server=self.settings.redis_url, function_id=function_id,
                invocation_id=inv.invocation_id) from exc
        return {"messageReceiptId": message_id} if stored else \
            {"messageReceiptId": message_id, "duplicate": True}

    @property
    def jobs(self) -> JobStore:
        if self._jobs is None:
            broker = AmqpJobs(self.settings) if self.settings.uses_amqp else None
            self._jobs = JobStore(self.store, self.settings.namespace, broker)
        return self._jobs

    def _require_function(self, function_id: str, invocation_id: str) -> None:
        seen = self._known.get(function_id)
        if seen is not None and time.monotonic() - seen < _KNOWN_TTL_S:
            return
        try:
            alive = self.store.sismember(self.keys.functions, function_id)
        except RedisError as exc:
            raise BrokerUnavailable(
                f"cannot reach Redis at {mask_url(self.settings.redis_url)}: {exc}",
                server=self.settings.redis_url) from exc
        if not alive:
            self._known.pop(function_id, None)
            raise FunctionNotFound(
                f"function {function_id!r} is not registered by any live worker",
                function_id=function_id, invocation_id=invocation_id,
            )
        self._known[function_id] = time.monotonic()

    def forget_function(self, function_id: str) -> None:
        self._known.pop(function_id, None)

    def close(self) -> None:
        if self._jobs is not None and self._jobs.broker is not None:
            self._jobs.broker.close()
        self.replies.close()
        self.publisher.close()
        self.store.close()
