"""The Celery side of the bench: ``celery -A bench.celery_app worker -P threads``.

Broker and result backend are the same Redis; every key carries the bench run's
prefix (``global_keyprefix``) and the queue name is unique, so runs never collide.
"""

from __future__ import annotations

import os

from celery import Celery

from .counting import Countdown

countdown = Countdown()


def make_celery(redis_url: str, prefix: str, queue: str) -> Celery:
    capp = Celery("bench", broker=redis_url, backend=redis_url)
    capp.conf.update(
        broker_transport_options={"global_keyprefix": prefix},
        result_backend_transport_options={"global_keyprefix": prefix},
        task_serializer="json", result_serializer="json", accept_content=["json"],
        task_default_queue=queue, task_default_exchange=queue, task_default_routing_key=queue,
        result_expires=600, worker_enable_remote_control=False,
        broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
    )

    @capp.task(name="bench.noop")
    def noop() -> None:
        countdown.tick()

    @capp.task(name="bench.tick", ignore_result=True)
    def tick() -> None:
        countdown.tick()

    @capp.task(name="bench.arm")
    def arm(redis_url: str, key: str, n: int) -> None:
        countdown.arm(redis_url, key, n)

    return capp


app = make_celery(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
                  os.environ.get("BENCH_PREFIX", "benchcelery:"),
                  os.environ.get("BENCH_QUEUE", "bench"))
