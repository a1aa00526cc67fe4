"""``stream::*`` built-ins through a real engine: iii's shapes, the live messages stream
processes receive, and ``stream`` change triggers."""

from __future__ import annotations

import uuid

import pytest
import redis

from iii_broker.documents import live
from iii_broker.errors import InvalidArgument
from tests.conftest import Cluster
from tests.helpers import wait_for
from tests.state.conftest import events, r, state_cluster  # noqa: F401 - fixtures

__all__ = ["r", "state_cluster"]


def test_items_are_set_read_listed_and_deleted_with_iii_shapes(state_cluster: Cluster) -> None:
    c = state_cluster
    s = f"st-{uuid.uuid4().hex[:6]}"
    at = {"stream_name": s, "group_id": "room:1"}
    assert c.trigger("stream::get", {**at, "item_id": "a"}) is None
    assert c.trigger("stream::set", {**at, "item_id": "a", "data": {"id": "a", "t": 1}}) == \
        {"old_value": None, "new_value": {"id": "a", "t": 1}}
    c.trigger("stream::set", {**at, "item_id": "b", "data": {"id": "b", "t": 2}})
    c.trigger("stream::set", {"stream_name": s, "group_id": "room", "item_id": "x", "data": 1})
    assert c.trigger("stream::list", at) == [{"id": "a", "t": 1}, {"id": "b", "t": 2}]
    assert c.trigger("stream::list_groups", {"stream_name": s}) == {"groups": ["room", "room:1"]}
    out = c.trigger("stream::update", {**at, "item_id": "a",
                                       "ops": [{"type": "increment", "path": "t", "by": 10}]})
    assert out == {"old_value": {"id": "a", "t": 1}, "new_value": {"id": "a", "t": 11}}
    assert c.trigger("stream::delete", {**at, "item_id": "a"}) == {"old_value": {"id": "a", "t": 11}}
    assert c.trigger("stream::get", {**at, "item_id": "a"}) is None
    with pytest.raises(InvalidArgument, match="needs 'data'"):
        c.trigger("stream::set", {**at, "item_id": "a"})
    with pytest.raises(InvalidArgument, match="group_id must be a non-empty string"):
        c.trigger("stream::list", {"stream_name": s})
    with pytest.raises(InvalidArgument, match="needs 'type'"):
        c.trigger("stream::send", {**at, "data": 1})


def test_every_change_and_custom_event_is_published_once_for_stream_processes(
        state_cluster: Cluster, r: redis.Redis) -> None:  # noqa: F811
    c = state_cluster
    sub = r.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(f"{c.settings.namespace}:stream-live")
    wait_for(lambda: sub.get_message(timeout=0.01) is None and sub.subscribed, timeout=5)
    at = {"stream_name": "live", "group_id": "g"}
    c.trigger("stream::set", {**at, "item_id": "i", "data": {"n": 0.1}})
    c.trigger("stream::update", {**at, "item_id": "i", "ops": [{"type": "set", "path": "n", "value": []}]})
    assert c.trigger("stream::send", {**at, "type": "typing", "id": "i", "data": {"who": "ann"}}) == \
        {"stream_processes": 1}
    c.trigger("stream::delete", {**at, "item_id": "i"})
    got: list[live.LiveMessage] = []

    def four() -> bool:
        m = sub.get_message(timeout=0.05)
        if m is not None:
            got.append(live.parse(m["data"]))
        return len(got) >= 4
    wait_for(four, timeout=10, what="four live messages")
    sub.close()
    assert [(m.kind, m.item_id, m.data) for m in got] == [
        ("create", "i", {"n": 0.1}), ("update", "i", {"n": []}),
        ("event", "i", {"who": "ann"}), ("delete", "i", {"n": []})]
    assert got[2].wrapper()["event"] == {"type": "event", "event": {"type": "typing",
                                                                    "data": {"who": "ann"}}}
    wrapper = got[0].wrapper()
    assert {k: wrapper[k] for k in ("type", "streamName", "groupId", "id")} == \
        {"type": "stream", "streamName": "live", "groupId": "g", "id": "i"}
    assert [m.timestamp for m in got] == sorted(m.timestamp for m in got)


def test_stream_triggers_fire_for_their_group_in_order(state_cluster: Cluster,
                                                      r: redis.Redis) -> None:  # noqa: F811
    c = state_cluster
    c.trigger("stream::set", {"stream_name": "board", "group_id": "g2", "item_id": "x", "data": 0})
    for n in range(3):
        c.trigger("stream::set", {"stream_name": "board", "group_id": "g1", "item_id": "card",
                                  "data": {"n": n}})
    c.trigger("stream::delete", {"stream_name": "board", "group_id": "g1", "item_id": "card"})
    got = wait_for(lambda: len(events(r, c, "watch::board")) >= 4 and events(r, c, "watch::board"),
                   timeout=15, what="four board events")
    payloads = [e["payload"] for e in got]
    assert [(p["event"]["type"], p["event"]["data"]) for p in payloads] == [
        ("create", {"n": 0}), ("update", {"n": 1}), ("update", {"n": 2}), ("delete", {"n": 2})]
    assert all(p["streamName"] == "board" and p["groupId"] == "g1" and p["id"] == "card"
               for p in payloads)
    assert payloads[1]["old_value"] == {"n": 0} and payloads[1]["new_value"] == {"n": 1}
