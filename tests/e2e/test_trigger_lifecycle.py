"""Triggers belong to the workers that declare them: active while one of them lives,
inactive while their function has no worker, removed once the function's live workers
no longer declare them (a route moved by a new version never keeps its old path)."""

from __future__ import annotations

import signal

from tests.helpers import wait_for
from tests.triggers_support import V1, V2, bindings, call, triggers, wait_answer
from tests.web.conftest import start_web


def _by_binding(cluster) -> dict[tuple[str, str, str], dict]:
    out = {}
    for t in triggers(cluster):
        c = t["config"]
        where = f"{c['http_method']} {c['api_path']}" if t["type"] == "http" else c["topic"]
        out[(t["type"], t["function_id"], where)] = t
    return out


def test_a_declared_trigger_waits_inactive_without_workers_and_returns_with_its_id(cluster):
    cluster.engine()
    worker = cluster.worker("tests.apps.deploy_v1")
    before = _by_binding(cluster)
    assert set(before) == V1
    assert all(t["active"] is True for t in before.values())

    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    wait_for(lambda: not any(t["active"] for t in triggers(cluster)),
             what="the triggers to go inactive with their only worker")
    after = _by_binding(cluster)
    assert {b: t["id"] for b, t in after.items()} == {b: t["id"] for b, t in before.items()}

    cluster.worker("tests.apps.deploy_v1")
    again = _by_binding(cluster)
    assert {b: (t["id"], t["active"]) for b, t in again.items()} == {
        b: (t["id"], True) for b, t in before.items()}
    # Declared by a worker, so owned by the workers (engine-owned ones say "engine").
    assert {t["owner"] for t in again.values()} == {"worker"}


def test_a_function_back_with_a_changed_route_never_keeps_the_old_one(cluster):
    cluster.engine()
    v1 = cluster.worker("tests.apps.deploy_v1")
    web = start_web(cluster, III_HTTP_TIMEOUT_MS="2000")
    assert wait_answer(web, "POST", "/v1/orders", 201).json()["version"] == "v1"

    v1.signal(signal.SIGTERM)
    assert v1.wait() == 0
    # No worker of orders::create: the route waits, inactive.
    reply = wait_answer(web, "POST", "/v1/orders", 503)
    assert reply.json()["error"]["code"] == "function_not_found"
    assert ("http", "orders::create", "POST /v1/orders") in bindings(cluster)

    cluster.worker("tests.apps.deploy_v2")
    assert wait_answer(web, "POST", "/v2/orders", 201).json()["version"] == "v2"
    # The function is back, without /v1/orders: that route is gone, not served by v2.
    reply = wait_answer(web, "POST", "/v1/orders", 404)
    assert "orders::create" not in reply.text
    assert bindings(cluster) == V2
    assert all(t["active"] for t in triggers(cluster))


def test_a_trigger_goes_when_its_last_declaring_worker_is_killed_while_its_function_lives_on(
        cluster):
    cluster.engine()
    v1 = cluster.worker("tests.apps.deploy_v1")
    cluster.worker("tests.apps.deploy_v2")
    web = start_web(cluster)
    # Old and new overlap: both routes are served (by either version's worker).
    wait_answer(web, "POST", "/v1/orders", 201)
    wait_answer(web, "POST", "/v2/orders", 201)
    assert bindings(cluster) == V1 | V2

    v1.signal(signal.SIGKILL)  # no goodbye: the engine's sweeper finds it gone
    wait_answer(web, "POST", "/v1/orders", 404, timeout=10)
    assert call(web, "POST", "/v2/orders").json()["version"] == "v2"
    assert call(web, "GET", "/orders/health").status == 200
    assert bindings(cluster) == V2
    assert all(t["active"] for t in triggers(cluster))
