"""Non-durable pub/sub: ``subscribe`` triggers fed by the ``publish`` built-in.

``publish {topic, data, idempotency_key?}`` sends ``data`` as a ``Void`` call to each
function with a live ``subscribe`` trigger on the topic; nothing is kept for subscribers
that are down (durable topics are the queue module's ``durable:subscriber``).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from ..client import Void
from ..errors import EnqueueError, FunctionNotFound, InvocationFailed, InvocationStopped, InvocationTimeout
from ..observe import triggered_by
from ..queues.config import DEFAULT_IDEMPOTENCY_TTL_S
from .base import CONDITION, Builtin, Field, Module, TriggerType, nonempty, topic_and_data
from .hosts import EngineHost

log = logging.getLogger("iii.engine")

SUBSCRIBE = "subscribe"


class PubSubModule(Module):
    name = "pubsub"
    trigger_types: ClassVar[tuple[TriggerType, ...]] = (
        TriggerType(SUBSCRIBE, {
            "topic": Field(str, required=True, check=nonempty),
            "condition_function_id": CONDITION,
        }, "every message published to a topic while the subscriber is up"),
    )
    options: ClassVar[dict[str, Field]] = {"enabled": Field(bool, default=True)}

    def builtins(self, engine: EngineHost) -> list[Builtin]:
        return [Builtin("publish", lambda payload: publish(engine, payload),
                        "Broadcast {topic, data} to every live subscriber")]


def publish(engine: EngineHost, payload: Any) -> dict[str, Any]:
    """Send ``data`` to every live subscriber of ``topic`` (each condition permitting)."""
    topic, data = topic_and_data(payload)
    key = payload.get("idempotency_key")
    if key is not None:
        if not isinstance(key, str) or not key:
            raise EnqueueError("idempotency_key must be a non-empty string")
        queue = engine.module("queue")
        ttl_s = int(queue.config.get("idempotency_ttl_s", DEFAULT_IDEMPOTENCY_TTL_S)) \
            if queue is not None else DEFAULT_IDEMPOTENCY_TTL_S
        fresh = engine.registry.r.set(engine.registry.keys.live_idempotency(topic, key), "1",
                                      nx=True, px=ttl_s * 1000)
        if not fresh:
            return {"topic": topic, "subscribers": [], "duplicate": True}
    subscribers = {t["function_id"]: t for t in engine.registry.triggers()
                   if t["type"] == SUBSCRIBE and t["config"].get("topic") == topic and t["active"]}
    sent = []
    for t in subscribers.values():
        condition = t["config"].get("condition_function_id")
        try:  # one subscriber's trouble (its condition failed, it just went away) is its own
            with triggered_by(SUBSCRIBE):
                if condition and not engine.caller.call(condition, data):
                    continue
                engine.caller.call(t["function_id"], data, action=Void)
        except (InvocationFailed, InvocationStopped, InvocationTimeout, FunctionNotFound) as exc:
            log.warning("publish to %r: subscriber %s skipped: %s", topic, t["function_id"],
                        exc.message)
            continue
        sent.append(t["function_id"])
    return {"topic": topic, "subscribers": sorted(sent)}
