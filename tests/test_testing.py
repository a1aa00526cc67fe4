"""iii_broker.testing: an engine and a worker for an app, in this process, in a fresh
namespace that is gone afterwards."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import pytest
import redis

import iii_broker.testing
from iii_broker import App, BrokerUnavailable, Enqueue, InvocationFailed, TriggerConfigError
from tests.helpers import ROOT, free_port

PAYMENT = {"modules": {"queue": {"queues": {"payment": {"max_retries": 1, "backoff_ms": 10}}}}}


class Shop:
    """An app whose handlers record what they ran, and a gate a job can wait on."""

    def __init__(self) -> None:
        self.app = App("shop-test")
        self.runs: list[dict[str, Any]] = []
        self.gate = threading.Event()
        app = self.app

        @app.function("math::add")
        def add(payload):
            return {"sum": payload["a"] + payload["b"]}

        @app.function("math::twice")
        def twice(payload, ctx):
            return {"sum": ctx.trigger("math::add", payload)["sum"] * 2,
                    "function_id": ctx.function_id}

        @app.function("payments::charge")
        def charge(payload, ctx):
            time.sleep(payload.get("takes_s", 0))  # the job's own work, not a wait
            self.runs.append({"order": payload["order"], "attempt": ctx.attempt})
            return {"charged": payload["order"]}

        @app.function("payments::refuse")
        def refuse(payload, ctx):
            self.runs.append({"order": payload["order"], "attempt": ctx.attempt})
            raise ValueError(f"card declined for order {payload['order']}")

        @app.function("payments::gated")
        def gated(payload):
            self.gate.wait(10)


@pytest.fixture
def shop() -> Shop:
    return Shop()


def namespace_keys(redis_url: str, namespace: str) -> list[str]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return [k for pattern in (f"{namespace}:*", f"{namespace}.*", f"_kombu.binding*.{namespace}.*")
                for k in client.scan_iter(match=pattern)]
    finally:
        client.close()


def test_trigger_returns_the_handlers_result_and_nested_calls_reach_the_cluster(shop, settings):
    with iii_broker.testing.run(shop.app, settings=settings) as cluster:
        assert cluster.trigger("math::add", {"a": 2, "b": 3}) == {"sum": 5}
        assert cluster.trigger("math::twice", {"a": 2, "b": 3}, timeout_ms=5000) == {
            "sum": 10, "function_id": "math::twice"}
        assert cluster.namespace.startswith("test-") and cluster.namespace != settings.namespace
        assert cluster.settings.namespace == cluster.namespace
        assert cluster.settings.redis_url == settings.redis_url
        assert cluster.app is shop.app
        assert shop.app.trigger("math::add", {"a": 1, "b": 1}) == {"sum": 2}  # code under test


def test_a_handler_error_reaches_the_caller_as_in_production(shop, settings):
    with iii_broker.testing.run(shop.app, settings=settings) as cluster:
        with pytest.raises(InvocationFailed) as info:
            cluster.trigger("payments::refuse", {"order": 1})
    assert "card declined for order 1" in info.value.message
    assert "raise ValueError" in info.value.stacktrace


def test_an_enqueued_job_runs_and_wait_for_queues_returns_once_it_is_done(shop, settings):
    with iii_broker.testing.run(shop.app, settings=settings, config=PAYMENT) as cluster:
        receipt = cluster.trigger("payments::charge", {"order": 7, "takes_s": 0.3},
                                  action=Enqueue(queue="payment"))
        assert set(receipt) == {"messageReceiptId"}
        cluster.wait_for_queues()
        assert shop.runs == [{"order": 7, "attempt": 1}]
        assert cluster.dead_letters("payment") == []


def test_wait_for_queues_waits_for_retries_and_a_job_failing_every_attempt_is_a_dead_letter(
        shop, settings):
    with iii_broker.testing.run(shop.app, settings=settings, config=PAYMENT) as cluster:
        receipt = cluster.trigger("payments::refuse", {"order": 9}, action=Enqueue(queue="payment"))
        cluster.wait_for_queues(queues=["payment"])
        assert shop.runs == [{"order": 9, "attempt": 1}, {"order": 9, "attempt": 2}]
        [letter] = cluster.dead_letters("payment")
        assert letter["message_id"] == receipt["messageReceiptId"]
        assert letter["function_id"] == "payments::refuse"
        assert letter["payload"] == {"order": 9}
        assert letter["attempts"] == 2  # max_retries = 1
        assert "card declined for order 9" in letter["error"]["message"]
        assert cluster.dead_letters("default") == []


def test_a_timeout_in_wait_for_queues_names_the_queue_still_busy(shop, settings):
    with iii_broker.testing.run(shop.app, settings=settings, config=PAYMENT) as cluster:
        cluster.trigger("payments::gated", {}, action=Enqueue(queue="payment"))
        cluster.wait_for_queues(queues=["default"])  # another queue is drained already
        started = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            cluster.wait_for_queues(timeout_s=0.3)
        assert 0.3 <= time.monotonic() - started < 2
        message = str(info.value)
        assert "payment (" in message and "default" not in message
        assert "1 running" in message or "1 waiting" in message
        shop.gate.set()
        cluster.wait_for_queues()


def test_an_unknown_queue_name_is_refused_naming_the_configured_ones(shop, settings):
    with iii_broker.testing.run(shop.app, settings=settings, config=PAYMENT) as cluster:
        with pytest.raises(ValueError, match=r"'paymnt'.*default, payment"):
            cluster.wait_for_queues(queues=["paymnt"])
        with pytest.raises(ValueError, match="'paymnt'"):
            cluster.dead_letters("paymnt")


def test_the_engine_settings_can_be_a_toml_file(shop, settings, tmp_path):
    path = tmp_path / "iii.toml"
    path.write_text("[modules.queue.queues.payment]\nmax_retries = 0\n")
    with iii_broker.testing.run(shop.app, settings=settings, config=path) as cluster:
        cluster.trigger("payments::refuse", {"order": 3}, action=Enqueue(queue="payment"))
        cluster.wait_for_queues()
        assert [letter["attempts"] for letter in cluster.dead_letters("payment")] == [1]


def test_every_key_of_the_namespace_is_deleted_and_the_apps_settings_restored_on_exit(
        shop, settings):
    shop.app.configure(settings)
    with iii_broker.testing.run(shop.app, config=PAYMENT) as cluster:
        cluster.trigger("payments::refuse", {"order": 1}, action=Enqueue(queue="payment"))
        cluster.trigger("math::add", {"a": 1, "b": 2})
        cluster.wait_for_queues()
        assert cluster.dead_letters("payment")
        namespace = cluster.namespace
        assert namespace_keys(settings.redis_url, namespace)
    assert namespace_keys(settings.redis_url, namespace) == []
    assert shop.app.settings is settings


def test_the_same_app_runs_again_after_a_run(shop, settings):
    for _ in range(2):
        with iii_broker.testing.run(shop.app, settings=settings) as cluster:
            assert cluster.trigger("math::twice", {"a": 1, "b": 1}) == {
                "sum": 4, "function_id": "math::twice"}


def test_a_trigger_the_engine_refuses_is_raised_by_run_and_nothing_is_left(
        shop, settings, monkeypatch):
    shop.app.register_trigger("cron", "math::add", {"expression": "*/5 * * * * *"})
    namespaces = []
    delete = iii_broker.testing.delete_namespace

    def delete_and_note(redis_url: str, namespace: str) -> int:
        namespaces.append(namespace)  # the only way to learn the namespace run() made
        return delete(redis_url, namespace)

    monkeypatch.setattr(iii_broker.testing, "delete_namespace", delete_and_note)
    with pytest.raises(TriggerConfigError, match="cron"):
        with iii_broker.testing.run(shop.app, settings=settings,
                                    config={"modules": {"cron": {"enabled": False}}}):
            pytest.fail("the cluster started")
    [namespace] = namespaces
    assert namespace_keys(settings.redis_url, namespace) == []


def test_an_app_without_functions_is_refused():
    with pytest.raises(ValueError, match="defines no functions"):
        with iii_broker.testing.run(App("empty")):
            pass


def test_an_embedded_server_stands_in_for_a_redis_that_does_not_answer(shop, settings):
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    down = settings.with_overrides(redis_url=nowhere, broker_url=nowhere)
    with iii_broker.testing.run(shop.app, settings=down) as cluster:
        assert cluster.settings.redis_url != nowhere
        assert cluster.settings.broker_url == cluster.settings.redis_url
        assert cluster.trigger("math::add", {"a": 2, "b": 3}) == {"sum": 5}
    with pytest.raises(BrokerUnavailable, match="no Redis answers"):
        with iii_broker.testing.run(shop.app, settings=down, embedded=False):
            pass


def test_delete_namespace_leaves_namespaces_that_share_its_prefix(settings):
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    ns = settings.namespace
    try:
        client.set(f"{ns}:a", 1)
        client.set(f"{ns}.fn.x", 1)
        client.sadd(f"_kombu.binding.{ns}.fn.x", "m")
        client.set(f"{ns}0:a", 1)  # another namespace, longer by one character
        assert iii_broker.testing.delete_namespace(settings.redis_url, ns) == 3
        assert namespace_keys(settings.redis_url, ns) == []
        assert client.get(f"{ns}0:a") == "1"
    finally:
        client.delete(f"{ns}0:a")
        client.close()


def test_import_iii_broker_does_not_import_the_harness():
    code = "import sys, iii_broker; print('iii_broker.testing' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    assert done.stdout.strip() == "False"


def test_a_run_after_another_records_its_calls_in_its_own_namespace(shop, settings):
    """A process's telemetry follows it from one run's namespace to the next: the second
    run's history is its own, and the first namespace is left empty behind it."""
    from tests.helpers import wait_for

    namespaces = []
    for n in range(2):
        with iii_broker.testing.run(shop.app, settings=settings) as cluster:
            cluster.trigger("math::add", {"a": n, "b": 1})

            def recorded(cluster: Any = cluster) -> Any:
                got = cluster.trigger("engine::invocations::list", {"function_id": "math::add"})
                return got["total"] == 1 and got
            listed = wait_for(recorded, timeout=15, what="the run's call in its own history")
            assert listed["invocations"][0]["payload"] == {"a": n, "b": 1}
            namespaces.append(cluster.namespace)
    assert namespace_keys(settings.redis_url, namespaces[0]) == []
