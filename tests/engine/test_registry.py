"""The registry's Redis scripts against a real Redis."""

from __future__ import annotations

import json

import pytest
import redis

from iii_broker.registry import Registry


@pytest.fixture
def registry(store: redis.Redis, namespace: str) -> Registry:
    return Registry(store, namespace)


def _worker(wid: str) -> dict:
    return {"id": wid, "name": "app", "kind": "worker", "pid": 1}


def test_registering_a_worker_makes_its_functions_live(registry):
    became = registry.register_worker(_worker("w1"), [{"function_id": "a::b"}], [], ttl_ms=5000)
    assert became == ["a::b"]
    assert registry.live_functions() == {"a::b"}
    assert [f["workers"] for f in registry.functions()] == [["w1"]]
    assert registry.workers()[0]["alive"] is True


def test_a_function_lives_until_its_last_worker_is_removed(registry):
    registry.register_worker(_worker("w1"), [{"function_id": "a::b"}], [], ttl_ms=5000)
    assert registry.register_worker(_worker("w2"), [{"function_id": "a::b"}], [], ttl_ms=5000) == []
    _, removed = registry.remove_worker("w1")
    assert removed == [] and registry.live_functions() == {"a::b"}
    _, removed = registry.remove_worker("w2")
    assert removed == ["a::b"] and registry.live_functions() == set()


def test_triggers_of_a_dead_function_are_kept_inactive_and_return_active(registry):
    trigger = {"id": "t1", "type": "http", "function_id": "a::b",
               "config": {"api_path": "/x", "http_method": "GET"}, "metadata": {}}
    registry.register_worker(_worker("w1"), [{"function_id": "a::b"}], [trigger], ttl_ms=5000)
    assert [t["active"] for t in registry.triggers()] == [True]
    registry.remove_worker("w1")
    assert [(t["id"], t["active"]) for t in registry.triggers()] == [("t1", False)]
    registry.register_worker(_worker("w2"), [{"function_id": "a::b"}], [trigger], ttl_ms=5000)
    assert [(t["id"], t["active"]) for t in registry.triggers()] == [("t1", True)]


def test_removing_a_worker_returns_its_in_flight_calls(registry, store, namespace):
    registry.register_worker(_worker("w1"), [{"function_id": "a::b"}], [], ttl_ms=5000)
    route = {"invocation_id": "i1", "function_id": "a::b", "reply_to": "q", "correlation_id": "i1"}
    store.hset(f"{namespace}:worker:w1:inflight", "tag1", json.dumps(route))
    inflight, _ = registry.remove_worker("w1")
    assert inflight == [route]
    assert not store.exists(f"{namespace}:worker:w1:inflight")


def test_a_heartbeat_of_a_swept_worker_says_so(registry):
    registry.register_worker(_worker("w1"), [{"function_id": "a::b"}], [], ttl_ms=5000)
    assert registry.heartbeat("w1", 5000) is True
    registry.remove_worker("w1")
    assert registry.heartbeat("w1", 5000) is False


def test_a_worker_whose_lease_lapsed_is_expired(registry):
    registry.register_worker(_worker("w1"), [{"function_id": "a::b"}], [], ttl_ms=-1)
    registry.register_worker(_worker("w2"), [{"function_id": "a::c"}], [], ttl_ms=60_000)
    assert registry.expired_workers() == ["w1"]


def test_only_one_owner_holds_the_lock_until_it_lapses_or_is_released(registry, namespace):
    key = f"{namespace}:lock:test"
    assert registry.acquire(key, "e1", 5000) is True
    assert registry.acquire(key, "e2", 5000) is False
    assert registry.acquire(key, "e1", 5000) is True  # renewal
    registry.release(key, "e2")  # not the owner: no effect
    assert registry.acquire(key, "e2", 5000) is False
    registry.release(key, "e1")
    assert registry.acquire(key, "e2", 5000) is True


def test_registry_changes_are_announced(registry, store, namespace):
    pubsub = store.pubsub()
    pubsub.subscribe(f"{namespace}:events")
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"
    registry.register_worker(_worker("w1"), [{"function_id": "a::b"}], [], ttl_ms=5000)
    msg = pubsub.get_message(timeout=2)
    assert json.loads(msg["data"]) == {"event": "worker_registered", "worker_id": "w1",
                                       "functions": ["a::b"]}
    pubsub.close()
