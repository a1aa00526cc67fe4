"""Run your app against a real engine and worker in your tests.

:func:`run` starts an engine and a worker for your :class:`~iii_broker.App` in threads of the
test process, in a fresh namespace (``test-<random>``) on a real Redis: the one your settings
point to when it answers, else an embedded Valkey server started for the run. Nothing is
mocked: calls go through the broker, queued jobs are retried and dead-lettered as in
production. On exit the worker and the engine drain and stop, and every Redis key of the
namespace is deleted. ::

    import pytest
    import iii_broker.testing
    from iii_broker import Enqueue

    from shop import app

    QUEUES = {"modules": {"queue": {"queues": {"payment": {"max_retries": 1, "backoff_ms": 10}}}}}

    @pytest.fixture
    def cluster():
        with iii_broker.testing.run(app, config=QUEUES) as cluster:
            yield cluster

    def test_add(cluster):
        assert cluster.trigger("math::add", {"a": 2, "b": 3}) == {"sum": 5}

    def test_a_charge_is_queued_and_runs(cluster):
        cluster.trigger("payments::charge", {"order": 7}, action=Enqueue(queue="payment"))
        cluster.wait_for_queues()
        assert cluster.dead_letters("payment") == []

While the cluster runs, the app's settings are the cluster's (``app.configure``, as
``iii-worker`` does), so code under test that calls ``app.trigger`` reaches the cluster too;
the app's previous settings are put back on exit. Handlers run in the test process, so a
test can share state with them (a list they append to), and their exceptions are reported
as they are in production: as ``InvocationFailed`` to the caller, or as a dead letter.

Only Redis keys are deleted: with ``III_BROKER_URL=amqp://`` the namespace's RabbitMQ
exchanges and queues stay behind. This module is not imported by ``import iii_broker``;
nothing in the package imports it.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import redis

from .app import App
from .client import Enqueue, Void
from .embedded import EmbeddedServer, start_embedded
from .engine import Engine
from .errors import BrokerUnavailable
from .modules import EngineConfig
from .queues.amqp import AmqpJobs
from .queues.store import JobStore
from .runtime import Worker
from .settings import Settings, is_redis_url, mask_url
from .store import Keys, check_store, connect_store

__all__ = ["Cluster", "delete_namespace", "run"]

START_TIMEOUT_S = 20.0
"""How long :func:`run` waits for the engine and the app's functions to be live."""
DRAIN_TIMEOUT_S = 30.0
"""How long a stopping worker or engine may take to finish what runs before it is hard-stopped."""
POLL_INTERVAL_S = 0.02
"""How often waits look again."""

EngineSettings = dict[str, Any] | str | os.PathLike[str]


@contextmanager
def run(app: App, *, config: EngineSettings | None = None, concurrency: int = 4,
        settings: Settings | None = None, embedded: bool = True) -> Iterator[Cluster]:
    """Run an engine and a worker for ``app`` in this process until the block exits.

    ``config`` is the engine settings: a dict shaped like the settings file
    (``{"modules": {"queue": {"queues": {...}}}}``), the path of a TOML file, or None for
    the file the settings name (``III_CONFIG_PATH``, else ``./iii.toml`` when present, else
    every module's defaults). ``concurrency`` is the worker's (``iii-worker --concurrency``).
    ``settings`` default to the app's (``III_*`` variables); only their namespace is
    replaced, by a fresh ``test-<random>`` one. A Redis URL of theirs that does not answer is
    replaced by an embedded Valkey server's, unless ``embedded`` is False.

    Yields a :class:`Cluster` once the engine serves and every function of ``app`` is live.
    Raises ``ValueError`` when the app has no functions, :class:`~iii_broker.errors.ConfigError`
    for bad engine settings, :class:`~iii_broker.BrokerUnavailable` when no Redis answers
    (and no embedded one could start), what the engine or worker raised while starting
    (e.g. :class:`~iii_broker.TriggerConfigError` for a trigger the engine refuses), and
    ``TimeoutError`` when they are not live within :data:`START_TIMEOUT_S` seconds.
    """
    if not app.functions:
        raise ValueError(f"app {app.name!r} defines no functions: there is nothing to run")
    previous = app.settings
    base = settings or previous
    engine_config = _engine_config(config, base)
    base, server = _reachable(base, embedded)
    cluster_settings = base.with_overrides(namespace=f"test-{uuid.uuid4().hex[:8]}")
    cluster = None
    try:
        app.configure(cluster_settings)
        cluster = Cluster(app, cluster_settings, engine_config, concurrency)
        cluster._start()
        yield cluster
    finally:
        try:
            if cluster is not None:
                cluster._close()
        finally:
            app.configure(previous)
            delete_namespace(cluster_settings.redis_url, cluster_settings.namespace)
            if server is not None:
                server.stop()
    if cluster is not None:
        cluster._raise_failure()


class Cluster:
    """An engine and a worker serving one app in this process (see :func:`run`)."""

    def __init__(self, app: App, settings: Settings, config: EngineConfig,
                 concurrency: int) -> None:
        self.app = app
        """The app being served; its settings are :attr:`settings` while the cluster runs."""
        self.settings = settings
        """The settings every part of the cluster uses (Redis URLs, the fresh namespace)."""
        self.namespace = settings.namespace
        """The cluster's ``III_NAMESPACE``: ``test-`` and 8 random hex digits."""
        self.engine = Engine(settings, config)
        """The engine, run by a thread of this process."""
        self.worker = Worker(app, settings, concurrency=concurrency)
        """The worker serving :attr:`app`, run by a thread of this process."""
        self._keys = Keys(settings.namespace)
        self._store = connect_store(settings)
        self._jobs = JobStore(self._store, settings.namespace,
                              AmqpJobs(settings) if settings.uses_amqp else None)
        self._hosts: list[_Host] = []

    # -- calling --------------------------------------------------------------------

    def trigger(
        self, function_id: str, payload: Any = None, action: Void | Enqueue | type[Void] | None = None,
        timeout_ms: int | None = None, metadata: dict[str, Any] | None = None,
    ) -> Any:
        """Call a function of the cluster: :meth:`iii_broker.App.trigger`, with the same
        arguments, results and errors (``timeout_ms`` in milliseconds)."""
        return self.app.trigger(function_id, payload, action=action, timeout_ms=timeout_ms,
                                metadata=metadata)

    # -- queues ---------------------------------------------------------------------

    def wait_for_queues(self, timeout_s: float = 10.0, queues: Iterable[str] | None = None) -> None:
        """Wait until the named queues (every one, or those in ``queues``) are drained: no
        job waiting, running, or delayed for a retry. Dead letters do not count.

        Polls every :data:`POLL_INTERVAL_S` seconds. Raises ``TimeoutError`` naming each queue
        still busy and its counts after ``timeout_s`` seconds, and ``ValueError`` for a
        queue name the engine settings do not configure. Fire-and-forget (``Void``) calls
        are not queue jobs and are not waited for.
        """
        names = [queues] if isinstance(queues, str) else None if queues is None else list(queues)
        deadline = time.monotonic() + timeout_s
        while True:
            busy = self._busy_queues(names)
            if not busy:
                return
            if time.monotonic() >= deadline:
                described = "; ".join(
                    f"{q['queue']} ({q['depth']} waiting, {q['in_flight']} running, "
                    f"{q['delayed']} delayed)" for q in busy)
                raise TimeoutError(f"queues not drained after {timeout_s}s: {described}")
            time.sleep(POLL_INTERVAL_S)

    def dead_letters(self, queue: str, limit: int = 100) -> list[dict[str, Any]]:
        """The dead letters of ``queue``, newest first (at most ``limit``): dicts with
        ``message_id``, ``function_id``, ``payload``, ``attempts``, ``error`` (``code``,
        ``message``, ``stacktrace``) and timestamps in Unix ms. Raises ``ValueError`` for
        a queue the engine settings do not configure."""
        self._check_queues([queue])
        letters, _total = self._jobs.dead_letters(queue, limit=limit)
        return letters

    def _busy_queues(self, names: list[str] | None) -> list[dict[str, Any]]:
        overview = self._jobs.overview()
        if names is not None:
            self._check_queues(names, {q["queue"] for q in overview})
            overview = [q for q in overview if q["queue"] in names]
        return [q for q in overview if q["depth"] or q["in_flight"] or q["delayed"]]

    def _check_queues(self, names: list[str], known: set[str] | None = None) -> None:
        known = set(self._jobs.configs(fresh=True)) if known is None else known
        unknown = sorted(set(names) - known)
        if unknown:
            raise ValueError(f"no queue named {', '.join(map(repr, unknown))}; the engine "
                             f"settings configure {', '.join(sorted(known))}")

    # -- starting and stopping ------------------------------------------------------

    def _start(self) -> None:
        # The engine first: the worker registers through it, and it publishes the queues.
        self._hosts.append(_Host("engine", lambda: self.engine.run(install_signals=False),
                                 self.engine.worker))
        self._wait("the engine to serve", lambda: self._live(["engine::workers::register"]))
        self._hosts.append(_Host(f"worker of app {self.app.name!r}",
                                 lambda: self.worker.run(install_signals=False), self.worker))
        functions = sorted(self.app.functions)
        # Not waited for: the engine taking the sweeper duty (up to half a heartbeat
        # interval), which moves due retries back onto their queues; until then they wait.
        self._wait(f"{', '.join(functions)} to be live", lambda: self._live(functions))

    def _live(self, function_ids: list[str]) -> bool:
        return set(function_ids) <= self._store.smembers(self._keys.functions)

    def _wait(self, what: str, condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not condition():
            self._raise_failure()
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {START_TIMEOUT_S}s waiting for {what} "
                                   f"(namespace {self.namespace})")
            time.sleep(POLL_INTERVAL_S)

    def _raise_failure(self) -> None:
        """Raise what the engine's or the worker's ``run()`` raised, if either did."""
        for host in self._hosts:
            if host.error is not None:
                raise host.error

    def _close(self) -> None:
        """Drain and stop the worker and the engine; close the connections made here (their
        ``run()`` closes theirs)."""
        for host in self._hosts:  # both drain at once: a draining worker needs no engine
            host.server.stop()
        for host in self._hosts:
            host.join()
        if self._jobs.broker is not None:
            self._jobs.broker.close()
        self._store.close()


class _Host:
    """A thread running an engine's or a worker's blocking ``run()``; keeps what it raised."""

    def __init__(self, name: str, target: Callable[[], Any], server: Worker) -> None:
        self.name = name
        self.error: BaseException | None = None
        self.server = server
        self._target = target
        self._thread = threading.Thread(target=self._run, name=f"iii-testing-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._target()
        except BaseException as exc:  # noqa: BLE001 - raised in the test's thread instead
            self.error = exc

    def join(self) -> None:
        """Wait for a stop asked for to finish (running calls and jobs finish); hard-stop
        after :data:`DRAIN_TIMEOUT_S` seconds."""
        self._thread.join(DRAIN_TIMEOUT_S)
        if self._thread.is_alive():
            self.server.stop(hard=True)
            self._thread.join(5.0)
        if self._thread.is_alive() and self.error is None:
            self.error = TimeoutError(f"the {self.name} did not stop within "
                                      f"{DRAIN_TIMEOUT_S + 5}s (a handler that never returns?)")


def _engine_config(config: EngineSettings | None, settings: Settings) -> EngineConfig:
    if config is None:
        return EngineConfig.load(settings.config_path)
    if isinstance(config, dict):
        return EngineConfig.from_dict(config)
    return EngineConfig.load(os.fspath(config))


def _reachable(settings: Settings, embedded: bool) -> tuple[Settings, EmbeddedServer | None]:
    """The settings with each Redis URL that does not answer replaced by an embedded
    server's (started here, returned so the caller stops it)."""
    urls = {settings.redis_url}
    if settings.broker_kind.is_redis:
        urls.add(settings.broker_url)
    dead = {url for url in urls if not _answers(settings.with_overrides(redis_url=url))}
    if not dead:
        return settings, None
    if not embedded:
        raise BrokerUnavailable(f"no Redis answers at {', '.join(map(mask_url, sorted(dead)))} "
                                "(embedded=False)")
    try:
        server = start_embedded(port=None)
    except RuntimeError as exc:
        raise BrokerUnavailable(f"no Redis answers at {', '.join(map(mask_url, sorted(dead)))} "
                                f"and {exc}") from exc
    url = f"{server.connection_url}/0"
    return settings.with_overrides(
        redis_url=url if settings.redis_url in dead else settings.redis_url,
        broker_url=url if settings.broker_url in dead else settings.broker_url), server


def _answers(settings: Settings) -> bool:
    client = connect_store(settings)
    try:
        check_store(client, settings)
        return True
    except BrokerUnavailable:
        return False
    finally:
        client.close()


def delete_namespace(redis_url: str, namespace: str) -> int:
    """Delete every Redis key of ``namespace`` (``NS:*``, ``NS.*`` and Kombu's binding
    records of its exchanges); returns how many keys were deleted.

    Only for namespaces nothing uses any more: a live worker or engine would recreate
    keys. Raises ``ValueError`` for a URL that is not a Redis URL,
    :class:`~iii_broker.errors.ConfigError` for a namespace that is not a valid
    ``III_NAMESPACE`` (it could match other keys) and :class:`~iii_broker.BrokerUnavailable`
    when Redis does not answer.
    """
    if not is_redis_url(redis_url):
        raise ValueError(f"not a Redis URL: {mask_url(redis_url)!r}")
    settings = Settings(redis_url=redis_url, namespace=namespace)
    settings.validate()  # letters, digits, - and _ only: no glob characters
    client = connect_store(settings)
    try:
        patterns = (f"{namespace}:*", f"{namespace}.*", f"_kombu.binding.{namespace}.*",
                    f"_kombu.binding_permanent.{namespace}.*")
        keys = [key for pattern in patterns for key in client.scan_iter(match=pattern, count=1000)]
        for start in range(0, len(keys), 500):
            client.delete(*keys[start:start + 500])
        # Kombu's expiry deadlines of binding tables, one member per exchange.
        deadlines = list(client.zscan_iter("_kombu.binding_deadlines", match=f"{namespace}.*"))
        if deadlines:
            client.zrem("_kombu.binding_deadlines", *(member for member, _score in deadlines))
        return len(keys)
    except redis.RedisError as exc:
        raise BrokerUnavailable(f"cannot reach Redis at {mask_url(redis_url)}: {exc}") from exc
    finally:
        client.close()
