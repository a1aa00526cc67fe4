"""iii's browser protocol against real ``iii-broker stream`` processes: join and sync,
changes and custom events pushed, leave, two processes fanning out, bad frames, oversized
frames and a client too slow to keep up.

Changes are written straight to Redis through the documents store (the same script
``stream::set`` runs), so no engine is needed here.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from iii_broker import Settings
from tests.helpers import Proc, free_port, wait_for
from tests.stream.conftest import Client, Streams, start_stream

SEND_QUEUE = 32
MAX_MESSAGE_BYTES = 4096
CONFIG = f"send_queue = {SEND_QUEUE}\nmax_message_bytes = {MAX_MESSAGE_BYTES}\nping_interval_s = 5\n"


@pytest.fixture(scope="module")
def stream(mod_settings: Settings, mod_store: redis.Redis, log_dir: Path) -> Iterator[Proc]:
    proc = start_stream(mod_settings, log_dir, CONFIG)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def streams(mod_settings: Settings, mod_store: redis.Redis) -> Streams:
    return Streams(mod_store, mod_settings.namespace)


@pytest.fixture
def client(mod_settings: Settings, stream: Proc) -> Iterator[Client]:
    c = Client(mod_settings.stream_port)
    yield c
    c.close()


def test_a_join_is_answered_with_a_sync_of_the_group_or_the_item(client, streams):
    streams.set("todo", "g-sync", "a", {"id": "a", "title": "milk"})
    streams.set("todo", "g-sync", "b", {"id": "b", "title": "eggs", "n": 2.5})
    client.join("s1", "todo", "g-sync")
    sync = client.event("sync")
    assert sync["streamName"] == "todo" and sync["groupId"] == "g-sync" and sync["id"] is None
    assert sync["event"]["data"] == [{"id": "a", "title": "milk"},
                                     {"id": "b", "title": "eggs", "n": 2.5}]
    assert isinstance(sync["timestamp"], int) and abs(sync["timestamp"] / 1000 - time.time()) < 60

    client.join("s2", "todo", "g-sync", "b")
    item = client.event("sync", id="b")
    assert item["event"]["data"] == {"id": "b", "title": "eggs", "n": 2.5}
    client.join("s3", "todo", "g-sync", "missing")
    assert client.event("sync", id="missing")["event"]["data"] is None
    client.join("s4", "todo", "g-empty")
    assert client.event("sync", groupId="g-empty")["event"]["data"] == []


def test_creates_updates_and_deletes_reach_the_group_and_the_items_subscribers(
        mod_settings, stream, client, streams):
    item_client = Client(mod_settings.stream_port)
    try:
        client.join("group", "todo", "g-live")
        client.event("sync")
        item_client.join("item", "todo", "g-live", "x")
        item_client.event("sync")

        streams.set("todo", "g-live", "x", {"id": "x", "done": False})
        created = client.event("create")
        assert created["id"] == "x" and created["event"]["data"] == {"id": "x", "done": False}
        assert item_client.event("create")["event"]["data"] == {"id": "x", "done": False}

        streams.update("todo", "g-live", "x", [{"type": "set", "path": "done", "value": True}])
        updated = client.event("update")
        assert updated["event"]["data"] == {"id": "x", "done": True}
        assert updated["timestamp"] >= created["timestamp"]
        assert item_client.event("update")["event"]["data"] == {"id": "x", "done": True}

        streams.set("todo", "g-live", "y", {"id": "y"})  # another item: the group only
        assert client.event("create")["id"] == "y"
        streams.delete("todo", "g-live", "x")
        deleted = client.event("delete")
        assert deleted["id"] == "x" and deleted["event"]["data"] == {"id": "x", "done": True}
        # the item's subscriber got the delete of x next, never the create of y
        assert item_client.event("delete")["id"] == "x"
        assert [m["id"] for m in item_client.received if m["event"]["type"] != "sync"] == \
            ["x", "x", "x"]
    finally:
        item_client.close()


def test_custom_events_reach_the_group_and_the_named_items_subscribers(
        mod_settings, stream, client, streams):
    item_client = Client(mod_settings.stream_port)
    try:
        client.join("g", "chat", "room-1")
        client.event("sync")
        item_client.join("i", "chat", "room-1", "msg-7")
        item_client.event("sync")

        assert streams.send("chat", "room-1", "typing", {"user": "bob"}) >= 1
        typing = client.event("event")
        assert typing["event"] == {"type": "event", "event": {"type": "typing",
                                                              "data": {"user": "bob"}}}
        assert typing["id"] is None
        streams.send("chat", "room-1", "reaction", {"emoji": "+1"}, item="msg-7")
        reaction = item_client.event("event")
        assert reaction["id"] == "msg-7" and reaction["event"]["event"]["type"] == "reaction"
        assert client.event("event")["event"]["event"]["type"] == "reaction"  # group sees it too
        assert all(m["event"]["event"]["type"] != "typing" for m in item_client.received
                   if m["event"]["type"] == "event")
    finally:
        item_client.close()


def test_a_socket_with_two_matching_subscriptions_gets_each_change_once(client, streams):
    client.join("whole", "todo", "g-twice")
    client.join("one", "todo", "g-twice", "z")
    client.event("sync", id=None)
    client.event("sync", id="z")
    streams.set("todo", "g-twice", "z", {"id": "z"})
    streams.send("todo", "g-twice", "marker", {})
    client.event("event")
    assert [m["event"]["type"] for m in client.received[2:]] == ["create", "event"]


def test_after_leave_nothing_more_is_delivered_for_that_subscription(client, streams):
    client.join("a", "todo", "g-leave")
    client.join("b", "todo", "g-stay")
    client.event("sync", groupId="g-leave")
    client.event("sync", groupId="g-stay")
    client.leave("a")
    client.join("c", "todo", "g-after-leave")  # answered after the leave is done
    client.event("sync", groupId="g-after-leave")
    streams.set("todo", "g-leave", "1", {"v": 1})
    streams.set("todo", "g-stay", "1", {"v": 1})  # published after the other: arrives after it
    client.event("create", groupId="g-stay")
    assert not [m for m in client.received if m.get("groupId") == "g-leave"
                and m["event"]["type"] != "sync"]


def test_two_stream_processes_each_deliver_an_update_exactly_once_to_their_clients(
        mod_settings, mod_store, stream, streams, log_dir):
    other_port = free_port()
    other = start_stream(mod_settings.with_overrides(stream_port=other_port), log_dir, CONFIG,
                         name="stream-2")
    clients = [Client(mod_settings.stream_port), Client(mod_settings.stream_port),
               Client(other_port), Client(other_port)]
    try:
        for c in clients:
            c.join("s", "fanout", "g")
            c.event("sync")
        assert mod_store.pubsub_numsub(streams.keys.stream_live)[0][1] == 2  # one per process
        streams.set("fanout", "g", "k", {"n": 1})
        streams.send("fanout", "g", "end", {})  # after the update on the same channel
        for c in clients:
            c.event("event")
            assert [m["event"]["type"] for m in c.received] == ["sync", "create", "event"]
    finally:
        for c in clients:
            c.close()
        other.stop()


@pytest.mark.parametrize("frame, code", [
    ("not json", "invalid_frame"),
    ("[1, 2]", "invalid_frame"),
    (b"\x00\x01binary", "invalid_frame"),
    ({"type": "subscribe", "data": {}}, "unknown_type"),
    ({"type": "join"}, "invalid_field"),
    ({"type": "join", "data": {"subscriptionId": "s"}}, "invalid_field"),
    ({"type": "join", "data": {"subscriptionId": "s", "streamName": "a", "groupId": 5}},
     "invalid_field"),
    ({"type": "leave", "data": {"subscriptionId": "never-joined"}}, "not_subscribed"),
], ids=["text", "array", "binary", "unknown-type", "no-data", "no-stream", "bad-group",
        "leave-unknown"])
def test_an_invalid_frame_gets_an_error_and_the_socket_stays_usable(client, streams, frame, code):
    client.send(frame)
    error = client.next(lambda m: m["type"] == "error")
    assert error["error"]["code"] == code and error["error"]["message"]
    client.join("after", "todo", "g-after-error")
    assert client.event("sync")["groupId"] == "g-after-error"


def test_a_frame_over_max_message_bytes_closes_the_socket_with_1009(client):
    client.send("x" * (MAX_MESSAGE_BYTES + 1))
    with pytest.raises(ConnectionClosed) as closed:
        client.next(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_a_multibyte_frame_over_the_limit_in_bytes_closes_with_1009_too(client):
    text = json.dumps({"type": "join", "data": {"subscriptionId": "é" * MAX_MESSAGE_BYTES}},
                      ensure_ascii=False)
    assert len(text) < 2 * MAX_MESSAGE_BYTES < len(text.encode())
    client.send(text)
    with pytest.raises(ConnectionClosed) as closed:
        client.next(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


class RawClient:
    """A WebSocket client that joins and then never reads: its receive buffer is tiny, so
    the server's writes to it stall almost at once."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                          "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def send_text(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        assert len(payload) < 126
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked)

    def cut_off(self) -> bool:
        """Read what is left; True once the server has closed or reset the connection."""
        self.sock.settimeout(0.5)
        try:
            while self.sock.recv(1 << 20):
                pass
        except TimeoutError:
            return False
        except OSError:
            return True
        return True

    def close(self) -> None:
        self.sock.close()


def test_a_client_that_does_not_read_is_dropped_while_a_fast_one_keeps_receiving(
        mod_settings, stream, streams):
    slow = RawClient(mod_settings.stream_port)
    client = Client(mod_settings.stream_port, max_queue=None)  # reads all the time
    try:
        slow.send_text(json.dumps({"type": "join", "data": {
            "subscriptionId": "s", "streamName": "big", "groupId": "g"}}))
        client.join("s", "big", "g")
        client.event("sync")
        wait_for(lambda: "dropping" in stream.output() or _publish_big(streams), timeout=30,
                 interval=0, what=f"the slow client to be dropped\n{stream.output()}")
        streams.send("big", "g", "last", {})
        client.event("event", timeout=10)  # the fast one got everything, in order
        events = [m for m in client.received if m["event"]["type"] == "event"]
        assert [e["event"]["event"]["data"]["i"] for e in events[:-1]] == list(range(len(events) - 1))
        assert "too slow" in stream.output() and "(close 1008)" in stream.output()
        wait_for(slow.cut_off, timeout=10, what="the slow client's connection to be closed")
    finally:
        slow.close()
        client.close()


_sent = [0]


def _publish_big(streams: Streams) -> bool:
    """One more large custom event (numbered from 0 per test run); never 'done'."""
    streams.send("big", "g", "blob", {"i": _sent[0], "blob": "b" * 65536})
    _sent[0] += 1
    time.sleep(0.005)  # a publisher's pace, not a wait: the fast client keeps up with it
    return False


def test_a_burst_of_joins_all_get_their_sync(mod_settings, stream, streams):
    """Hundreds of sockets joining at once share the process's Redis connections: each
    waits its turn for one, none is answered with an error."""
    streams.set("todo", "g-burst", "a", {"id": "a"})

    async def one(i: int) -> dict:
        async with connect(f"ws://127.0.0.1:{mod_settings.stream_port}/") as ws:
            await ws.send(json.dumps({"type": "join", "data": {
                "subscriptionId": f"s{i}", "streamName": "todo", "groupId": "g-burst"}}))
            return json.loads(await asyncio.wait_for(ws.recv(), 20))

    async def burst() -> list[dict]:
        return await asyncio.gather(*(one(i) for i in range(300)))
    answers = asyncio.run(burst())
    assert [a.get("event", {}).get("type") for a in answers] == ["sync"] * 300, \
        [a for a in answers if a.get("event", {}).get("type") != "sync"][:3]


def test_changes_of_every_size_arrive_whole_on_sockets_that_offered_compression(client, streams):
    """The websockets client offers permessage-deflate, as browsers do; by default it is
    declined, and every message (one frame built once for all sockets) arrives intact with
    its 7-bit, 16-bit or 64-bit length."""
    assert client.ws.response.headers.get("Sec-WebSocket-Extensions") is None
    client.join("s-sizes", "todo", "g-sizes")
    client.event("sync")
    for n in (10, 300, 70_000):
        streams.set("todo", "g-sizes", f"i{n}", {"id": f"i{n}", "text": "é" * n})
        got = client.event("create")
        assert got["id"] == f"i{n}" and got["event"]["data"]["text"] == "é" * n


def test_with_compression_on_an_offer_of_permessage_deflate_is_accepted(mod_settings, streams,
                                                                        log_dir):
    settings = mod_settings.with_overrides(stream_port=free_port())
    proc = start_stream(settings, log_dir, "compression = true", name="stream-deflate")
    try:
        c = Client(settings.stream_port)
        try:
            assert "permessage-deflate" in c.ws.response.headers["Sec-WebSocket-Extensions"]
            c.join("s-z", "todo", "g-deflate")
            c.event("sync")
            streams.set("todo", "g-deflate", "z", {"id": "z", "text": "abc" * 5000})
            assert c.event("create")["event"]["data"]["text"] == "abc" * 5000
        finally:
            c.close()
    finally:
        proc.stop()
