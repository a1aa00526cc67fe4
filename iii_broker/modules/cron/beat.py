"""``iii-broker beat``: Celery beat with the RedBeat-based :class:`~.scheduler.CronScheduler`.

Run as many as you like, on any machines: one leads and fires, the others stand by and take
over within ``lock_timeout_s`` (+ one standby interval) of the leader's death. SIGTERM or
Ctrl-C stops a beat: it releases the lock at once (a standby takes over within half a
second), waits up to :data:`DRAIN_S` for the answers of runs in flight, and exits 0.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

from celery import Celery
from celery.beat import Service

from ...client import Caller
from ...errors import BrokerUnavailable
from ...settings import Settings, mask_url
from ...store import Keys, RedisError, check_store, connect_store
from ..observability import process_started as observability_started
from .fire import Dispatcher, Firing
from .options import BeatOptions
from .scheduler import BeatRuntime, CronScheduler

log = logging.getLogger("iii.beat")

DRAIN_S = 5.0
SWITCH_INTERVAL_S = 0.0005
EVICTING = ("allkeys-lru", "allkeys-lfu", "allkeys-random")


def celery_app(settings: Settings, options: BeatOptions) -> Celery:
    """The Celery app beat runs: RedBeat's store in the registry's Redis, under the
    namespace; nothing is ever sent through Celery's own broker."""
    keys = Keys(settings.namespace)
    app = Celery("iii-beat", set_as_current=False, broker="memory://")
    app.conf.update(
        redbeat_redis_url=settings.redis_url,
        redbeat_key_prefix=keys.redbeat_prefix,
        redbeat_lock_key=None,  # the scheduler holds its own lock (it fails over in seconds)
        beat_max_loop_interval=options.max_interval_s,
        beat_enable_remote_control=False,
        timezone="UTC",
        enable_utc=True,
        result_expires=None,  # no celery.backend_cleanup entry
    )
    return app


def storage_warnings(client: Any) -> list[str]:
    """What about the Redis server could lose schedules: an evicting ``maxmemory-policy``
    or no persistence. Empty when fine or when the server does not allow CONFIG GET."""
    warnings = []
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "")
        save = client.config_get("save").get("save", "")
        aof = client.config_get("appendonly").get("appendonly", "no")
    except RedisError as exc:
        log.info("cannot read the Redis configuration (%s): not checking eviction and "
                 "persistence", exc)
        return []
    if policy in EVICTING:
        warnings.append(
            f"Redis evicts any key under memory pressure (maxmemory-policy {policy}): a "
            "schedule entry it evicts is re-created from the registry, losing its last run; "
            "use noeviction or a volatile-* policy")
    if not save.strip() and aof != "yes":
        warnings.append(
            "Redis has no persistence (no RDB 'save' rule, appendonly no): a restart loses "
            "every schedule entry and its history; they are re-created from the registry as "
            "workers register again, but last runs and counts are gone. Enable RDB or AOF")
    return warnings


def run_beat(settings: Settings, options: BeatOptions) -> int:
    """Run one beat process until SIGTERM/SIGINT; returns the exit status."""
    store = connect_store(settings)
    try:
        check_store(store, settings)
    except BrokerUnavailable as exc:
        log.error("beat cannot start: %s", exc.message)
        return 1
    for warning in storage_warnings(store):
        log.warning("%s", warning)
    caller = Caller(settings)
    dispatcher = Dispatcher(Firing(settings, caller))
    app = celery_app(settings, options)
    runtime = BeatRuntime(settings, options, store, dispatcher)
    app.iii_beat = runtime
    service = Service(app, max_interval=options.max_interval_s, scheduler_cls=CronScheduler)

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(0)  # Celery's loop catches it and closes the scheduler

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    # The tick thread publishes a burst of calls, one round trip each, while the reply
    # thread reads their answers: with the default 5 ms switch interval each publish can
    # wait that long to get the GIL back after its round trip.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    log.info("beat %s starting: Redis %s, lock %s (timeout %ss)", runtime.beat_id,
             mask_url(settings.redis_url), Keys(settings.namespace).beat_lock,
             options.lock_timeout_s)
    observability_started("beat", settings)
    dispatcher.start()
    try:
        service.start()
    finally:
        dispatcher.stop(DRAIN_S)
        caller.close()
    log.info("beat %s stopped", runtime.beat_id)
    return 0
