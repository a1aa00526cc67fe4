"""The functions a stream process calls, run by a real engine and worker
(``tests/apps/stream_app.py``): ``auth_function`` before the upgrade (a refusal is a 401 and
no socket), ``stream:join`` (a refusal is an ``unauthorized`` event, a condition is
honoured) and ``stream:leave`` (on leave, and on close for what was left)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from websockets.exceptions import InvalidStatus

from iii_broker import App, Settings
from tests.helpers import Proc, bin_cmd, dump, free_port, wait_for
from tests.stream.conftest import Client, Streams, start_stream

AUTH = 'auth_function = "streamtest::auth"\n'


@pytest.fixture(scope="module")
def procs(mod_settings: Settings, mod_store: redis.Redis, log_dir: Path) -> Iterator[list[Proc]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
    env.update(mod_settings.child_env(), PYTHONUNBUFFERED="1")
    started = [Proc("engine", bin_cmd("iii-broker", "engine"), env, log_dir),
               Proc("worker", bin_cmd("iii-worker", "-A", "tests.apps.stream_app"), env, log_dir)]
    try:
        wait_for(lambda: mod_store.sismember(f"{mod_settings.namespace}:functions",
                                             "streamtest::leave"),
                 timeout=30, what=f"the stream app's worker\n{dump(started)}")
        started.append(start_stream(mod_settings, log_dir, AUTH))
        yield started
    finally:
        for p in started:
            p.signal(signal.SIGTERM)
        for p in reversed(started):
            p.stop(signalled=True)


@pytest.fixture(scope="module")
def streams(mod_settings: Settings, mod_store: redis.Redis) -> Streams:
    return Streams(mod_store, mod_settings.namespace)


def calls(store: redis.Redis, settings: Settings, fn: str) -> list[dict]:
    raw = store.lrange(f"{settings.namespace}:test:stream", 0, -1)
    return [c["payload"] for c in map(json.loads, raw) if c["fn"] == fn]


@pytest.mark.parametrize("query", ["", "?token=refuse", "?token=wrong"],
                         ids=["no-token", "unauthorized", "raises"])
def test_a_refused_upgrade_is_a_401_with_a_json_error_and_no_socket(mod_settings, procs, query):
    with pytest.raises(InvalidStatus) as refused:
        Client(mod_settings.stream_port, query)
    response = refused.value.response
    assert response.status_code == 401
    body = json.loads(response.body)
    assert body["error"]["code"] == "UNAUTHORIZED" and "streamtest::auth" in body["error"]["message"]


def test_an_unreachable_auth_function_refuses_the_upgrade_too(mod_settings, mod_store, log_dir):
    settings = mod_settings.with_overrides(stream_port=free_port())
    proc = start_stream(settings, log_dir, 'auth_function = "streamtest::nobody"\n',
                        name="stream-noauth")
    try:
        with pytest.raises(InvalidStatus) as refused:
            Client(settings.stream_port, "?token=good")
        assert refused.value.response.status_code == 401
        assert b"function_not_found" in refused.value.response.body
    finally:
        proc.stop()


def test_join_and_leave_functions_get_the_subscription_and_the_auth_context(
        mod_settings, mod_store, procs, streams):
    client = Client(mod_settings.stream_port, "?token=good", additional_headers={"X-Test": "1"})
    client.join("sub-1", "todo", "g-ctx", "item-9")
    client.event("sync")
    joined = wait_for(lambda: [p for p in calls(mod_store, mod_settings, "join")
                               if p["subscription_id"] == "sub-1"], what="the join call")[0]
    assert joined["stream_name"] == "todo" and joined["group_id"] == "g-ctx"
    assert joined["id"] == "item-9"
    assert joined["context"]["user"] == "alice" and joined["context"]["header"] == "1"
    assert joined["context"]["addr"] == "127.0.0.1"

    client.leave("sub-1")
    left = wait_for(lambda: [p for p in calls(mod_store, mod_settings, "leave")
                             if p["subscription_id"] == "sub-1"], what="the leave call")
    assert left == [joined]

    client.join("sub-2", "todo", "g-ctx")
    client.join("sub-3", "todo", "g-other")
    client.event("sync", groupId="g-other")
    client.close()  # the two left on the socket are left now
    left = wait_for(lambda: {p["subscription_id"] for p in calls(mod_store, mod_settings, "leave")}
                    >= {"sub-2", "sub-3"} and calls(mod_store, mod_settings, "leave"),
                    what="leave calls for the subscriptions of a closed socket")
    assert {p["group_id"] for p in left if p["subscription_id"] != "sub-1"} == {"g-ctx", "g-other"}


def test_a_join_function_answering_unauthorized_refuses_that_subscription_only(
        mod_settings, procs, streams):
    client = Client(mod_settings.stream_port, "?token=good")
    try:
        client.join("no", "todo", "secret")
        refused = client.event("unauthorized")
        assert refused["groupId"] == "secret" and refused["event"] == {"type": "unauthorized"}
        client.join("yes", "todo", "open")
        client.event("sync", groupId="open")
        streams.set("todo", "secret", "k", {"v": 1})
        streams.set("todo", "open", "k", {"v": 1})
        client.event("create", groupId="open")
        assert not [m for m in client.received if m["groupId"] == "secret"
                    and m["event"]["type"] != "unauthorized"]
    finally:
        client.close()


def test_a_join_triggers_condition_skips_its_function(mod_settings, mod_store, procs):
    client = Client(mod_settings.stream_port, "?token=good")
    try:
        client.join("m", "todo", "muted")
        client.event("sync", groupId="muted")
        client.join("n", "todo", "not-muted")
        client.event("sync", groupId="not-muted")
        groups = [p["group_id"] for p in calls(mod_store, mod_settings, "join")]
        assert "not-muted" in groups and "muted" not in groups
    finally:
        client.close()


def test_a_new_join_trigger_is_honoured_without_restarting_the_stream_process(
        mod_settings, mod_store, procs):
    app = App("stream-test-dynamic", settings=mod_settings)
    try:
        trigger = app.trigger("engine::register_trigger", {
            "type": "stream:join", "function_id": "streamtest::auth", "config": {}})
        client = Client(mod_settings.stream_port, "?token=good")
        try:
            # streamtest::auth raises for a join payload (no query_params): the join fails
            def refused() -> bool:
                client.join("d", "todo", "g-dyn")
                message = client.next(lambda m: m["type"] == "error" or
                                      m["event"]["type"] == "sync")
                return message["type"] == "error"
            error = wait_for(refused, timeout=10, what="the new trigger to be called")
            assert error
            assert client.received[-1]["error"]["subscriptionId"] == "d"
        finally:
            client.close()
            app.trigger("engine::unregister_trigger", {"id": trigger["id"]})
    finally:
        app.close()
