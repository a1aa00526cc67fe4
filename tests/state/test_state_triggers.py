"""``state`` triggers: every change fires, in order per key, whichever process wrote it,
and none is lost when the worker dies."""

from __future__ import annotations

import signal
import uuid

import redis

from tests.conftest import Cluster
from tests.helpers import wait_for
from tests.state.conftest import STATE_APP, events


def test_every_change_fires_in_order_with_old_and_new_values(state_cluster: Cluster,
                                                              r: redis.Redis) -> None:
    c = state_cluster
    key = f"o-{uuid.uuid4().hex[:6]}"
    c.trigger("state::set", {"scope": "orders", "key": key, "value": {"n": 0}})
    for _ in range(30):
        c.trigger("state::update", {"scope": "orders", "key": key,
                                    "ops": [{"type": "increment", "path": "n"}]})
    c.trigger("state::delete", {"scope": "orders", "key": key})
    c.trigger("state::set", {"scope": "elsewhere", "key": key, "value": 1})  # no trigger

    def mine() -> list:
        return [e["payload"] for e in events(r, c, "watch::all") if e["payload"]["key"] == key]
    got = wait_for(lambda: len(mine()) >= 32 and mine(), timeout=15, what="32 state events")
    assert [e["event_type"] for e in got] == \
        ["state:created"] + ["state:updated"] * 30 + ["state:deleted"]
    assert got[0] == {"type": "state", "event_type": "state:created", "scope": "orders",
                      "key": key, "old_value": None, "new_value": {"n": 0}}
    assert [e["new_value"]["n"] for e in got[1:31]] == list(range(1, 31))
    assert [e["old_value"]["n"] for e in got[1:31]] == list(range(0, 30))
    assert got[31]["old_value"] == {"n": 30} and got[31]["new_value"] is None


def test_key_filter_and_condition_pick_the_changes(state_cluster: Cluster, r: redis.Redis) -> None:
    c = state_cluster
    for key, value in (("cart-2", 500), ("cart-1", 5), ("cart-1", 150)):
        c.trigger("state::set", {"scope": "carts", "key": key, "value": value})
    got = wait_for(lambda: events(r, c, "watch::cart"), timeout=15, what="the cart event")
    r.rpush(f"{c.settings.namespace}:test:marker", 1)
    c.trigger("state::set", {"scope": "orders", "key": "after-carts", "value": 1})
    wait_for(lambda: any(e["payload"]["key"] == "after-carts" for e in events(r, c, "watch::all")),
             timeout=15, what="a later event")
    got = events(r, c, "watch::cart")
    assert [e["payload"]["new_value"] for e in got] == [150]


def test_no_change_is_lost_when_the_worker_is_killed(state_cluster: Cluster, r: redis.Redis) -> None:
    """A worker killed in the middle of a trigger call, and changes made while no worker
    runs: all of them fire, in order, once a worker is back."""
    c = state_cluster
    hold = f"{c.settings.namespace}:test:state-hold"
    slow = c.worker(STATE_APP)
    r.set(hold, 1)
    c.trigger("state::set", {"scope": "slow", "key": "k", "value": 0})
    # the call is running in one of the workers: kill them all
    workers = [p for p in c.procs if p.name == "worker" and p.popen.poll() is None]
    wait_for(lambda: r.hlen(f"{c.settings.namespace}:state-cursors") >= 1, timeout=10,
             what="the feed to know the trigger")
    for w in workers:
        w.signal(signal.SIGKILL)
        w.wait()
    for n in range(1, 6):
        c.trigger("state::set", {"scope": "slow", "key": "k", "value": n})
    r.delete(hold)
    assert slow in workers
    c.worker(STATE_APP)
    got = wait_for(lambda: len(events(r, c, "watch::slow")) >= 6 and events(r, c, "watch::slow"),
                   timeout=30, what="six slow events")
    values = [e["payload"]["new_value"] for e in got]
    assert values == [0, 1, 2, 3, 4, 5]
