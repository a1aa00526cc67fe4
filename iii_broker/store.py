"""The redis-py seam: one client factory and every Redis key iii-broker uses.

All keys start with the namespace (``III_NAMESPACE``, default ``iii``); the full
list is in docs/architecture.md.
"""

from __future__ import annotations

from typing import Any

import redis

from .errors import BrokerUnavailable
from .settings import Settings, mask_url

RedisError = redis.RedisError


POOL_WAIT_S = 20.0
"""How long a caller waits for a free connection of a bounded pool."""


def connect_store(settings: Settings, *, pool_size: int | None = None) -> redis.Redis:
    """A client for the registry store (thread-safe, pooled).

    ``pool_size`` bounds its connections, and a caller past the bound waits for a free one
    (up to :data:`POOL_WAIT_S`). Without it redis-py's own pool applies, which raises "Too
    many connections" past its default of 100 — fine for a process of a few dozen threads,
    not for one serving thousands of sockets on greenlets."""
    options: dict[str, Any] = {"decode_responses": True, "socket_connect_timeout": 5,
                               "health_check_interval": 30}
    if pool_size is None:
        return redis.Redis.from_url(settings.redis_url, **options)
    pool = redis.BlockingConnectionPool.from_url(settings.redis_url, max_connections=pool_size,
                                                 timeout=POOL_WAIT_S, **options)
    return redis.Redis(connection_pool=pool)


def check_store(client: redis.Redis, settings: Settings) -> None:
    """Ping the store; raises :class:`BrokerUnavailable` naming the (masked) URL."""
    try:
        client.ping()
    except redis.RedisError as exc:
        raise BrokerUnavailable(
            f"cannot reach Redis at {mask_url(settings.redis_url)}: {exc}",
            server=settings.redis_url) from exc


WAKE_TTL_MS = 60_000
"""How long a wake token nobody popped stays (its worker died before leaving)."""


def push_wake(client: redis.Redis, key: str) -> None:
    """Push a token onto the wake list ``key``: a blocking pop that also reads it (a stopping
    worker's fetchers) returns now instead of at its timeout. Best effort: raises nothing,
    the pop then just times out."""
    try:
        pipe = client.pipeline(transaction=False)
        pipe.lpush(key, 1)
        pipe.pexpire(key, WAKE_TTL_MS)
        pipe.execute()
    except redis.RedisError:
        pass


class Keys:
    """Names of the Redis keys of one namespace."""

    def __init__(self, namespace: str) -> None:
        ns = namespace
        self.workers = f"{ns}:workers"                  # ZSET worker id -> expiry (ms)
        self.functions = f"{ns}:functions"              # SET live function ids
        self.triggers = f"{ns}:triggers"                # HASH trigger id -> trigger JSON
        self.events = f"{ns}:events"                    # pub/sub: registry changes
        self.sweeper_lock = f"{ns}:lock:sweeper"        # STRING engine id (elected sweeper)
        self.dead_letters = f"{ns}:deadletter"          # LIST refused messages (JSON)
        self.clients = f"{ns}:clients"                  # ZSET caller id -> expiry (ms)
        self.routes_lock = f"{ns}:lock:routes"          # STRING held while http routes register
        self.functions_seen = f"{ns}:functions:seen"    # STRING the function set last announced
        self.orphaned = f"{ns}:functions:orphaned"      # ZSET function id -> until (ms): lost its
                                                        # last worker, queued calls get answered
        self.seeded = f"{ns}:seeded"                    # STRING engine id: the modules' seed is in
        self.modules = f"{ns}:modules"                  # STRING JSON list: the enabled modules
        self.queues = f"{ns}:queues"                    # HASH queue name -> settings JSON
        self.job_holders = f"{ns}:jobholders"           # SET workers that may hold claimed jobs
        self.redbeat_prefix = f"{ns}:redbeat:"          # RedBeat's key prefix: entries are
                                                        # <prefix><trigger id>, then ``:schedule``
        self.beat_lock = f"{ns}:redbeat::lock"          # STRING id of the leading beat (PX lease)
        self.beat_schedule = f"{ns}:redbeat::schedule"  # ZSET entry key -> next slot (Unix s)
        self.cron_known = f"{ns}:cron:known"            # SET trigger ids that have a RedBeat entry
        self.state_scopes = f"{ns}:state-scopes"        # SET scopes that have keys
        self.state_changes = f"{ns}:state-changes"      # STREAM change records of state
        self.state_cursors = f"{ns}:state-cursors"      # HASH state trigger id -> last record read
        self.stream_changes = f"{ns}:stream-changes"    # STREAM change records of stream items
        self.stream_cursors = f"{ns}:stream-cursors"    # HASH stream trigger id -> last record read
        self.stream_live = f"{ns}:stream-live"          # pub/sub: every stream change and event
        self.observability = f"{ns}:observability"      # STRING the engine's observability settings
        self.logs = f"{ns}:logs"                        # STREAM log records (JSON), by time
        self.log_cursors = f"{ns}:log-cursors"          # HASH log trigger id -> last record read
        self.invocations = f"{ns}:inv:by-start"         # ZSET invocation id -> start (ms)
        self.inv_running = f"{ns}:inv:running"          # HASH invocation id -> worker id, while
                                                        # its record says running
        self.inv_functions = f"{ns}:inv:functions"      # SET function ids with an invocations_of
                                                        # index (what the age trim walks)
        self.metrics = f"{ns}:metrics"                  # HASH series -> cluster-wide count
        self.metric_gauges = f"{ns}:metrics:gauges"     # HASH process id -> its gauges (JSON)
        self.kombu_unacked = f"{ns}:kombu:unacked"      # Kombu's Redis ack emulation (unused)
        self.kombu_unacked_index = f"{ns}:kombu:unacked_index"
        self.kombu_unacked_mutex = f"{ns}:kombu:unacked_mutex"
        self._ns = ns

    def log_trace(self, trace_id: str) -> str:
        """ZSET: the ids of the log records of one trace (expires with the records)."""
        return f"{self.logs}:trace:{trace_id}"

    def invocation(self, invocation_id: str) -> str:
        """HASH: one invocation's history: field ``<attempt>`` -> that attempt's record (JSON),
        ``latest`` (attempt), ``status`` and ``function_id`` of the latest attempt."""
        return f"{self._ns}:inv:id:{invocation_id}"

    def invocations_of(self, function_id: str) -> str:
        """ZSET: the invocations of one function, by start (ms)."""
        return f"{self._ns}:inv:by-function:{_part(function_id)}"

    def invocations_with(self, status: str) -> str:
        """ZSET: the invocations that ended with ``status`` (or still run), by start (ms)."""
        return f"{self._ns}:inv:by-status:{_part(status)}"

    def inv_scratch(self, token: str) -> str:
        """ZSET: an intersection of two indexes, made and deleted by one script call."""
        return f"{self._ns}:inv:scratch:{token}"

    def worker(self, worker_id: str) -> str:
        return f"{self._ns}:worker:{worker_id}"           # HASH worker info

    def stopped(self, invocation_id: str) -> str:
        return f"{self._ns}:stopped:{invocation_id}"      # STRING: answered invocation_stopped

    def inflight(self, worker_id: str) -> str:
        return f"{self._ns}:worker:{worker_id}:inflight"  # HASH invocation id -> reply route

    def gateway_retired(self, worker_id: str) -> str:
        return f"{self._ns}:gateway:retired:{worker_id}"  # STRING: an SDK worker that reattached

    def worker_wake(self, worker_id: str, part: str) -> str:
        return f"{self._ns}:worker:{worker_id}:wake:{part}"  # LIST ends a stopping worker's pop

    def beat_entry(self, trigger_id: str) -> str:
        return f"{self.redbeat_prefix}{trigger_id}"      # HASH RedBeat entry: definition, meta

    def cron_claim(self, trigger_id: str, slot_ms: int) -> str:
        return f"{self._ns}:cron:claim:{trigger_id}:{slot_ms}"  # STRING: this slot was fired

    def cron_status(self, trigger_id: str) -> str:
        return f"{self._ns}:cron:status:{trigger_id}"     # HASH last fire, outcome, counts

    def cron_running(self, trigger_id: str) -> str:
        return f"{self._ns}:cron:running:{trigger_id}"    # STRING run in progress (overlap skip)

    def function(self, function_id: str) -> str:
        return f"{self._ns}:function:{function_id}"       # HASH function info

    def function_workers(self, function_id: str) -> str:
        return f"{self._ns}:function:{function_id}:workers"  # SET worker ids

    def function_triggers(self, function_id: str) -> str:
        return f"{self._ns}:function:{function_id}:triggers"  # SET ids of triggers workers declare

    @property
    def trigger_types(self) -> str:
        return f"{self._ns}:trigger-types"               # HASH custom type -> {id, description}

    def trigger_type_providers(self, type_id: str) -> str:
        return f"{self._ns}:trigger-type:{type_id}:providers"  # SET workers providing it

    def trigger_type_told(self, type_id: str) -> str:
        return f"{self._ns}:trigger-type:{type_id}:told"  # STRING {provider, ids} handed over

    @property
    def trigger_errors(self) -> str:
        return f"{self._ns}:trigger-errors"              # HASH trigger id -> provider's refusal

    def trigger_ops(self, worker_id: str) -> str:
        return f"{self._ns}:worker:{worker_id}:trigger-ops"  # LIST register/unregister for a provider

    def trigger_workers(self, trigger_id: str) -> str:
        return f"{self._ns}:trigger:{trigger_id}:workers"   # SET live workers declaring it

    def function_exchange(self, function_id: str) -> str:
        return f"{self._ns}.fn.{function_id}"              # the function's exchange (and queue)

    def reply_queue(self, client_id: str) -> str:
        return f"{self._ns}.reply.{client_id}"              # a calling process's reply queue

    def worker_jobs(self, worker_id: str) -> str:
        return f"{self._ns}:worker:{worker_id}:jobs"      # HASH tag -> claimed job

    def job_list(self, queue: str, function_id: str) -> str:
        return f"{self._ns}.fn.{function_id}.q.{queue}"    # LIST jobs of a standard queue (Kombu's name)

    def queue(self, queue: str, suffix: str) -> str:
        return f"{self._ns}:q:{queue}:{suffix}"           # a named queue's keys (see the docs)

    def wake(self, function_id: str) -> str:
        return f"{self._ns}:wake:{function_id}"           # LIST wake token for idle workers

    def idempotency(self, scope: str, key: str) -> str:
        return f"{self._ns}:{scope}:idem:{key}"           # STRING first message id with that key

    def state_scope(self, scope: str) -> str:
        return f"{self._ns}:state:{_part(scope)}"         # HASH key -> packed value

    def stream_group(self, stream_name: str, group_id: str) -> str:
        return f"{self._ns}:stream:{_part(stream_name)}:{_part(group_id)}"  # HASH item -> packed

    def stream_groups(self, stream_name: str) -> str:
        return f"{self._ns}:stream-groups:{_part(stream_name)}"  # SET group ids with items

    def live_idempotency(self, topic: str, key: str) -> str:
        return f"{self._ns}:topic:{topic}:live-idem:{key}"  # STRING a publish already made


def _part(name: str) -> str:
    """A user's name as one key component: ``%`` and ``:`` escaped, so no two names share
    a key (``a:b`` + ``c`` vs ``a`` + ``b:c``)."""
    return name.replace("%", "%25").replace(":", "%3A")


__all__ = ["Keys", "RedisError", "check_store", "connect_store", "mask_url"]
