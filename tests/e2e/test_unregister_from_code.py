"""Unregistering from app code while the worker runs (iii's SDK does the same):
``app.unregister_function``, and ``unregister()`` on the handles ``register_function`` and
``register_trigger`` return. The worker stops serving what it dropped, and the dropped
triggers are removed, not left inactive: the worker lives on without declaring them."""

from __future__ import annotations

import pytest

from iii_broker import FunctionNotFound
from tests.helpers import wait_for
from tests.queues.support import worker_id
from tests.triggers_support import triggers, wait_answer
from tests.web.conftest import start_web

ROUTES = {"dyn::target": "/dyn/target", "dyn::other": "/dyn/other", "dyn::handled": "/dyn/handled"}


def _functions(cluster) -> dict[str, list[str]]:
    """Live function id -> the ids of the workers serving it."""
    listed = cluster.client.trigger("engine::functions::list", {}, timeout_ms=5000)["functions"]
    return {f["function_id"]: f.get("workers", []) for f in listed}


def _routed(cluster) -> set[str]:
    return {t["function_id"] for t in triggers(cluster) if t["type"] == "http"}


def _not_found(cluster, function_id: str) -> bool:
    try:
        cluster.client.trigger(function_id, {}, timeout_ms=3000)
    except FunctionNotFound:
        return True
    return False


@pytest.fixture
def dynamic(cluster):
    """An engine, one worker of tests.apps.dynamic and a web process serving its routes."""
    cluster.engine()
    worker = cluster.worker("tests.apps.dynamic")
    web = start_web(cluster)
    for path in ROUTES.values():
        wait_answer(web, "GET", path, 200)
    assert _routed(cluster) == set(ROUTES)
    return cluster, worker, web


def test_a_function_unregistered_by_its_only_worker_is_not_found_and_its_route_is_gone(dynamic):
    cluster, worker, web = dynamic
    out = cluster.client.trigger("dyn::drop_function", {"function_id": "dyn::target"})
    assert out == {"pid": worker.pid}

    wait_for(lambda: "dyn::target" not in _functions(cluster),
             what="dyn::target to leave engine::functions::list")
    wait_for(lambda: _not_found(cluster, "dyn::target"), timeout=5,
             what="calls of dyn::target to get function_not_found")
    # Removed, not inactive: the worker is alive and no longer declares it.
    assert _routed(cluster) == {"dyn::other", "dyn::handled"}
    wait_answer(web, "GET", "/dyn/target", 404)
    # Everything else of the worker is untouched.
    assert wait_answer(web, "GET", "/dyn/other", 200).json()["pid"] == worker.pid
    assert worker.popen.poll() is None
    assert all(t["active"] for t in triggers(cluster))


def test_a_trigger_handle_unregisters_the_trigger_and_leaves_its_function_served(dynamic):
    cluster, worker, web = dynamic
    cluster.client.trigger("dyn::drop_route", {})

    wait_for(lambda: "dyn::other" not in _routed(cluster),
             what="dyn::other's trigger to be removed")
    wait_answer(web, "GET", "/dyn/other", 404)
    assert cluster.client.trigger("dyn::other", {})["body"]["name"] == "other"
    assert "dyn::other" in _functions(cluster)
    assert _routed(cluster) == {"dyn::target", "dyn::handled"}


def test_the_handle_register_function_returns_unregisters_the_function_and_its_triggers(dynamic):
    cluster, worker, web = dynamic
    cluster.client.trigger("dyn::drop_handle", {})

    wait_for(lambda: "dyn::handled" not in _functions(cluster),
             what="dyn::handled to leave engine::functions::list")
    wait_for(lambda: _not_found(cluster, "dyn::handled"), timeout=5,
             what="calls of dyn::handled to get function_not_found")
    assert _routed(cluster) == {"dyn::target", "dyn::other"}
    wait_answer(web, "GET", "/dyn/handled", 404)


def test_a_function_one_of_two_workers_unregistered_is_served_by_the_other_alone(cluster):
    cluster.engine()
    workers = [cluster.worker("tests.apps.dynamic"), cluster.worker("tests.apps.dynamic")]
    ids = {worker_id(cluster, w): w.pid for w in workers}
    assert sorted(_functions(cluster)["dyn::target"]) == sorted(ids)

    dropped_by = cluster.client.trigger("dyn::drop_function", {"function_id": "dyn::target"})["pid"]
    [kept] = [wid for wid, pid in ids.items() if pid != dropped_by]
    wait_for(lambda: _functions(cluster)["dyn::target"] == [kept],
             what="dyn::target to be served by the other worker only")
    pids = {cluster.client.trigger("dyn::target", {})["body"]["pid"] for _ in range(12)}
    assert pids == {ids[kept]}
    # The other worker still declares the route: it stays, active.
    [route] = [t for t in triggers(cluster) if t["function_id"] == "dyn::target"]
    assert route["active"] is True
