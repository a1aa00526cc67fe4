"""A cheap execution counter shared by the iii and Celery bench apps.

Each no-op run calls :meth:`Countdown.tick` (a lock and a decrement). After
``arm(n)``, the n-th tick RPUSHes its wall-clock time to a Redis list, which the
bench process BLPOPs: the drain's end time, taken inside the worker, at the cost
of one Redis command per run of N instead of one per job.
"""

from __future__ import annotations

import threading
import time

import redis


class Countdown:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._left = 0
        self._key = ""
        self._redis: redis.Redis | None = None

    def arm(self, redis_url: str, key: str, n: int) -> None:
        client = redis.Redis.from_url(redis_url)
        client.ping()  # connect now, not when the last job runs
        with self._lock:
            old, self._redis, self._key, self._left = self._redis, client, key, int(n)
        if old is not None:
            old.close()

    def tick(self) -> None:
        with self._lock:
            if self._left <= 0:
                return
            self._left -= 1
            if self._left:
                return
            client, key = self._redis, self._key
        if client is not None:
            client.rpush(key, repr(time.time()))
            client.expire(key, 600)
