"""The stream process through a Redis outage: its sockets stay open, its one subscription
comes back, every subscription gets a fresh ``sync`` (changes made meanwhile may have been
missed), and the outage is logged once, not once per socket."""

from __future__ import annotations

import time

from tests.helpers import wait_for
from tests.stream.conftest import Client, Streams, start_stream


def test_sockets_stay_open_through_a_redis_restart_and_get_a_sync_when_it_is_back(
        fault_redis, settings, store, tmp_path):
    stream = start_stream(settings, tmp_path)
    streams = Streams(store, settings.namespace)
    clients = [Client(settings.stream_port) for _ in range(3)]
    try:
        streams.set("todo", "g", "a", {"v": 1})
        for i, c in enumerate(clients):
            c.join(f"s{i}", "todo", "g")
            c.join(f"i{i}", "todo", "g", "a")
            c.event("sync", id=None)
            c.event("sync", id="a")

        fault_redis.kill()
        time.sleep(2)  # the outage itself is under test
        fault_redis.start()  # data kept (append-only file)

        for c in clients:  # the same sockets, never closed: a fresh sync of each subscription
            assert c.event("sync", id=None, timeout=15)["event"]["data"] == [{"v": 1}]
            assert c.event("sync", id="a", timeout=5)["event"]["data"] == {"v": 1}
        streams.set("todo", "g", "b", {"v": 2})  # and live changes flow again
        for c in clients:
            assert c.event("create", id="b")["event"]["data"] == {"v": 2}

        out = stream.output()
        assert stream.popen.poll() is None, out
        assert out.count("lost the connection to") == 1, out  # one line per outage
        assert "is back after" in out and "Traceback" not in out, out
    finally:
        for c in clients:
            c.close()
        stream.stop()


def test_a_join_during_the_outage_gets_an_error_then_its_sync_when_redis_is_back(
        fault_redis, settings, store, tmp_path):
    stream = start_stream(settings, tmp_path)
    client = Client(settings.stream_port)
    try:
        client.join("warm", "todo", "g")
        client.event("sync")
        fault_redis.kill()
        wait_for(lambda: "lost the connection to" in stream.output(), timeout=10,
                 what="the stream process to notice the outage")
        client.join("cold", "todo", "g2")
        error = client.next(lambda m: m["type"] == "error")
        assert error["error"]["code"] == "broker_unavailable"
        assert error["error"]["subscriptionId"] == "cold"
        fault_redis.start()
        assert client.event("sync", groupId="g2", timeout=15)["event"]["data"] == []
    finally:
        client.close()
        stream.stop()
