"""Calls left queued for a function that lost its last worker are answered at once.

When a function's last worker drains (or the sweeper removes a dead one), nothing will
consume its queue: a sync call still on it would wait its whole timeout. Whoever removed
that worker pops the queue and answers each sync call ``function_not_found`` (503 over
HTTP); a ``Void`` call has nobody to answer and stays queued for the function's next
worker, as it would have had it been published a moment before. A worker of the function
registering meanwhile wins: the registry is asked again before each answer, and what is
left stays for the new worker.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ..errors import FunctionNotFound, PayloadError
from ..message import Invocation, now_ms, reply_body
from ..outage import is_outage, outage_for, store_outage
from ..registry import Registry
from ..settings import Settings
from ..transport import Publisher, connection, function_queue

log = logging.getLogger("iii.worker")

MAX_ANSWERED = 10_000
"""The most calls one pass answers per function (a pass never runs for ever)."""
LATE_WINDOW_MS = 3_000
"""How long after a function lost its last worker the elected engine still answers calls
queued for it: a caller trusts a function it saw alive for a second (client._KNOWN_TTL_S)
and may publish to it meanwhile."""


def answer_orphaned_calls(settings: Settings, registry: Registry, publisher: Publisher,
                          function_ids: Iterable[str], *, lost_by: str, note: bool = True) -> int:
    """Answer the sync calls queued for ``function_ids`` (functions that just lost their
    last worker, ``lost_by``) with ``function_not_found``; returns how many were answered.
    ``note``: also have the elected engine answer late ones for :data:`LATE_WINDOW_MS`.
    Never raises: a broker or store that does not answer leaves the calls to their timeout."""
    answered = 0
    function_ids = list(function_ids)
    if note:
        try:
            registry.note_orphaned(function_ids, LATE_WINDOW_MS)
        except Exception as exc:  # noqa: BLE001 - the pass below still runs
            store_outage(settings).failed(exc)
    for function_id in function_ids:
        try:
            answered += _answer(settings, registry, publisher, function_id, lost_by)
        except Exception as exc:  # noqa: BLE001 - best effort: callers still time out
            if is_outage(exc):
                outage_for(settings, exc).failed(exc)
            else:
                log.warning("could not answer the calls queued for %r: %s", function_id, exc)
    return answered


def _answer(settings: Settings, registry: Registry, publisher: Publisher, function_id: str,
            lost_by: str) -> int:
    answered = kept = 0
    with connection(settings) as conn:
        queue = function_queue(settings, function_id).bind(conn.default_channel)
        # Messages not answered (Void calls, unreadable ones) stay unacked: they go back to
        # the queue when the connection is released, for the next worker (which dead-letters
        # the unreadable ones).
        for _ in range(MAX_ANSWERED):
            message = queue.get(no_ack=False, accept=["application/json"])
            if message is None:
                break
            if registry.function_live(function_id):
                break  # a worker of it is back: this call and the rest are its (requeued)
            try:
                inv = Invocation.from_body(message.body, message.content_type)
            except PayloadError:
                continue
            reply_to = message.properties.get("reply_to")
            if not reply_to:
                kept += 1
                continue  # a Void call: it waits (unacked, handed back) for the next worker
            if inv.deadline is None or inv.deadline > now_ms():
                error = FunctionNotFound(
                    f"function {function_id!r} lost its last worker ({lost_by}) before this "
                    "call was taken", function_id=function_id, invocation_id=inv.invocation_id)
                publisher.publish(reply_body(inv.invocation_id, error=error), routing_key=reply_to,
                                  correlation_id=message.properties.get("correlation_id"))
                answered += 1
            message.ack()  # answered, or expired (a worker would drop it unrun)
    if answered or kept:
        log.warning("%r lost its last worker (%s): answered %d queued call(s) function_not_found"
                    "; %d Void call(s) stay queued for its next worker", function_id, lost_by,
                    answered, kept)
    return answered
