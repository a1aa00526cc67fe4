"""The Dramatiq side of the queue bench: ``dramatiq bench.dramatiq_app --processes 1 --threads 8``.

Dramatiq's own ``RedisBroker`` (default middleware) on the bench's Redis. Every key sits
under the run's namespace (``BENCH_DRAMATIQ_NAMESPACE``), so runs never collide and the
bench deletes them afterwards. The bench process imports this module too, to send.
"""

from __future__ import annotations

import os

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from .counting import Countdown

QUEUE = "bench"

broker = RedisBroker(url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
                     namespace=os.environ.get("BENCH_DRAMATIQ_NAMESPACE", "benchdramatiq"))
dramatiq.set_broker(broker)
countdown = Countdown()


@dramatiq.actor(actor_name="bench.tick", queue_name=QUEUE)
def tick() -> None:
    countdown.tick()


@dramatiq.actor(actor_name="bench.arm", queue_name=QUEUE)
def arm(redis_url: str, key: str, n: int, ack_key: str) -> None:
    """Arm the countdown, then RPUSH to ``ack_key``: Dramatiq has no reply without a result backend."""
    countdown.arm(redis_url, key, n)
    client = redis.Redis.from_url(redis_url)
    try:
        client.rpush(ack_key, b"armed")
        client.expire(ack_key, 600)
    finally:
        client.close()
