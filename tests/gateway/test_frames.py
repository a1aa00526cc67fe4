"""Frames no SDK sends, from a bare WebSocket (``websockets.sync.client``): each is
answered (or ignored) on its own connection, which stays open — except a frame over
``[modules.gateway] max_message_bytes``, which closes it with 1009 — and an SDK worker
connected to the same gateway (iii's Python SDK) goes on serving as before.

One engine, one gateway (a 64 KiB frame limit, from an engine settings file) and one SDK
worker for the module; every test opens connections of its own."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from tests.conftest import Cluster
from tests.gateway.conftest import module_cluster, raw_connect, recv_json, start_sdk, workers_of
from tests.helpers import in_thread, wait_for

MAX_MESSAGE_BYTES = 64 * 1024
GATEWAY_CONFIG = f"[modules.gateway]\nmax_message_bytes = {MAX_MESSAGE_BYTES}\n"


@dataclass
class Shared:
    cluster: Cluster
    url: str
    sdk_pid: int
    sdk_worker_id: str
    echo: str


@pytest.fixture(scope="module")
def shared(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    log_dir = tmp_path_factory.mktemp("gateway-frames")
    config = log_dir / "iii-gateway.toml"
    config.write_text(GATEWAY_CONFIG)
    with module_cluster(redis_url, log_dir) as cluster:
        cluster.engine()
        gateway = cluster.gateway(III_CONFIG_PATH=str(config))
        sdk = start_sdk(cluster, "python", gateway.url)  # type: ignore[attr-defined]
        [worker] = workers_of(cluster, sdk.proc.pid)
        yield Shared(cluster, gateway.url, sdk.proc.pid, worker["id"],  # type: ignore[attr-defined]
                     sdk.fid("echo"))


@pytest.fixture
def ws(shared: Shared) -> Iterator[ClientConnection]:
    """A bare connection to the gateway, past its ``workerregistered``; afterwards, the SDK
    worker on the same gateway must still be connected (the same worker) and serving."""
    with raw_connect(shared.url) as conn:
        first = recv_json(conn)
        assert first["type"] == "workerregistered" and first["worker_id"] and first["reattach_token"]
        yield conn
    n = uuid.uuid4().hex
    echoed = shared.cluster.trigger(shared.echo, {"n": n}, timeout_ms=5000)
    assert (echoed["payload"], echoed["pid"]) == ({"n": n}, shared.sdk_pid)
    assert [w["id"] for w in workers_of(shared.cluster, shared.sdk_pid)] == [shared.sdk_worker_id]


def still_open(ws: ClientConnection) -> None:
    """The connection still reads: a ping is answered with a pong, and nothing else came first."""
    ws.send('{"type":"ping"}')
    assert recv_json(ws) == {"type": "pong"}


@pytest.mark.parametrize(("frame", "says"), [
    ("{not json", "not JSON"),
    (b"\x00\x01 neither JSON nor telemetry", "not JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"id": "x::y"}', "no 'type'"),
], ids=["text", "binary", "array", "no-type"])
def test_a_frame_that_is_not_a_protocol_message_is_answered_with_an_error_and_the_connection_stays(
        ws: ClientConnection, frame: str | bytes, says: str) -> None:
    ws.send(frame)
    error = recv_json(ws)
    assert error["type"] == "error"
    assert error["error"]["code"] == "invalid_message"
    assert says in error["error"]["message"]
    still_open(ws)


def test_a_frame_of_an_unknown_type_is_ignored_and_the_connection_stays(ws: ClientConnection) -> None:
    ws.send(json.dumps({"type": "frobnicate", "id": "x"}))
    still_open(ws)  # no error before the pong


@pytest.mark.parametrize(("frame", "says"), [
    ({"type": "registerfunction"}, "registerfunction needs 'id'"),
    ({"type": "registerfunction", "id": ""}, "registerfunction needs 'id'"),
    ({"type": "registertrigger", "id": "t1", "trigger_type": "http"},
     "registertrigger needs 'function_id'"),
    ({"type": "invocationresult", "result": 1}, "invocationresult needs 'invocation_id'"),
    ({"type": "registerfunction", "id": "raw::x", "metadata": "nope"},
     "'metadata' must be a JSON object"),
], ids=["no-id", "empty-id", "trigger-without-function", "result-without-id", "metadata-not-object"])
def test_a_frame_missing_a_field_is_answered_with_an_error_naming_it_and_the_connection_stays(
        ws: ClientConnection, frame: dict[str, Any], says: str) -> None:
    ws.send(json.dumps(frame))
    error = recv_json(ws)
    assert error["type"] == "error"
    assert error["error"]["code"] == "invalid_message"
    assert says in error["error"]["message"]
    still_open(ws)


def test_a_call_missing_its_function_id_is_answered_as_a_failed_invocation(ws: ClientConnection) -> None:
    ws.send(json.dumps({"type": "invokefunction", "invocation_id": "inv-1", "data": {}}))
    answer = recv_json(ws)
    assert answer["type"] == "invocationresult"
    assert answer["invocation_id"] == "inv-1"
    assert answer["error"]["code"] == "invalid_message"
    assert "function_id" in answer["error"]["message"]
    still_open(ws)


def test_a_frame_over_the_size_limit_closes_the_connection_with_1009(ws: ClientConnection) -> None:
    big = json.dumps({"type": "invokefunction", "function_id": "nobody::home", "invocation_id": "big",
                      "data": "x" * MAX_MESSAGE_BYTES})
    ws.send(big)
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    assert str(MAX_MESSAGE_BYTES) in info.value.rcvd.reason  # the limit, in the close reason


def test_a_frame_just_under_the_size_limit_is_taken(ws: ClientConnection) -> None:
    frame = {"type": "invokefunction", "function_id": "nobody::home", "invocation_id": "under",
             "data": ""}
    frame["data"] = "x" * (MAX_MESSAGE_BYTES - len(json.dumps(frame)) - 16)
    ws.send(json.dumps(frame))
    answer = recv_json(ws)
    assert (answer["type"], answer["invocation_id"]) == ("invocationresult", "under")
    assert answer["error"]["code"] == "function_not_found"
    still_open(ws)


def test_a_function_with_a_reserved_id_is_rejected_and_the_connection_goes_on_serving(
        shared: Shared, ws: ClientConnection) -> None:
    ws.send(json.dumps({"type": "registerfunction", "id": "engine::x"}))
    rejected = recv_json(ws)
    assert rejected["type"] == "registrationrejected"
    assert rejected["function_id"] == "engine::x"
    assert rejected["code"] == "FUNCTION_NAMESPACE_CONFLICT"  # non-fatal for iii's SDKs
    error = recv_json(ws)
    assert error["type"] == "error" and "engine::" in error["error"]["message"]
    still_open(ws)

    # The same connection registers a good function and serves a call of it.
    ws.send(json.dumps({"type": "registerfunction", "id": "raw::fine"}))
    shared.cluster.wait_function("raw::fine")
    assert "engine::x" not in {f["function_id"] for f in
                               shared.cluster.trigger("engine::functions::list", {})["functions"]}
    call = in_thread(shared.cluster.trigger, "raw::fine", {"q": 1}, timeout_ms=5000)
    invoke = recv_json(ws)
    assert (invoke["type"], invoke["function_id"], invoke["data"]) == \
        ("invokefunction", "raw::fine", {"q": 1})
    ws.send(json.dumps({"type": "invocationresult", "invocation_id": invoke["invocation_id"],
                        "function_id": "raw::fine", "result": {"a": 1}}))
    assert call.result(timeout=10) == {"a": 1}
    ws.close()
    wait_for(lambda: "raw::fine" not in {f["function_id"] for f in shared.cluster.trigger(
        "engine::functions::list", {})["functions"]}, timeout=5,
        what="raw::fine to leave with its connection")
