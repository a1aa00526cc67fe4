"""A gateway with a token: ``III_API_TOKEN`` (the cluster's API token) or, on its own,
``III_GATEWAY_TOKEN``. A connection without ``Authorization: Bearer <token>`` is told
``UNAUTHORIZED`` in iii's error frame and closed; iii's SDKs sending the token serve as
usual. One engine and two gateways (one per variable) for the module."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import Cluster
from tests.gateway.conftest import module_cluster, raw_connect, recv_json, start_sdk, workers_of

TOKENS = {"III_API_TOKEN": "api-token-6b1f0c", "III_GATEWAY_TOKEN": "gateway-token-93ad27"}
SHORT = {"III_API_TOKEN": "api", "III_GATEWAY_TOKEN": "gw"}  # in the SDK workers' function ids


@dataclass
class Gateways:
    cluster: Cluster
    urls: dict[str, str]  # token variable -> the URL of the gateway started with it


@pytest.fixture(scope="module")
def gateways(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateways]:
    with module_cluster(redis_url, tmp_path_factory.mktemp("gateway-auth")) as cluster:
        cluster.engine()
        api = cluster.gateway(III_API_TOKEN=TOKENS["III_API_TOKEN"])
        own = cluster.gateway(III_GATEWAY_TOKEN=TOKENS["III_GATEWAY_TOKEN"])
        urls = {"III_API_TOKEN": api.url, "III_GATEWAY_TOKEN": own.url}  # type: ignore[attr-defined]
        yield Gateways(cluster, urls)


@pytest.fixture(params=sorted(TOKENS))
def var(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("authorization", [
    None,
    "Bearer not-the-token",
    "Basic {token}",  # the right token, the wrong scheme
    "Bearer {other}",  # the other gateway's token
], ids=["none", "wrong-token", "wrong-scheme", "other-token"])
@pytest.mark.parametrize("path", ["/", "/otel"])
def test_a_connection_without_the_token_gets_an_unauthorized_error_frame_and_is_closed(
        gateways: Gateways, var: str, authorization: str | None, path: str) -> None:
    headers = {}
    if authorization is not None:
        other = next(t for v, t in TOKENS.items() if v != var)
        headers["Authorization"] = authorization.format(token=TOKENS[var], other=other)
    with raw_connect(gateways.urls[var] + path, additional_headers=headers) as ws:
        error = recv_json(ws)
        assert error["type"] == "error"
        assert error["error"]["code"] == "UNAUTHORIZED"
        assert error["error"]["message"]
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008


def test_a_connection_with_the_token_is_registered(gateways: Gateways, var: str) -> None:
    with raw_connect(gateways.urls[var], additional_headers={
            "Authorization": f"Bearer {TOKENS[var]}"}) as ws:
        first = recv_json(ws)
        assert first["type"] == "workerregistered" and first["worker_id"]
        ws.send('{"type":"ping"}')
        assert recv_json(ws) == {"type": "pong"}


def test_the_python_sdk_with_III_TOKEN_connects_and_serves(gateways: Gateways, var: str) -> None:
    sdk = start_sdk(gateways.cluster, "python", gateways.urls[var], prefix=f"py{SHORT[var]}",
                    III_TOKEN=TOKENS[var])
    echoed = gateways.cluster.trigger(sdk.fid("echo"), {"n": 1})
    assert (echoed["payload"], echoed["pid"]) == ({"n": 1}, sdk.proc.pid)
    [worker] = workers_of(gateways.cluster, sdk.proc.pid)
    assert (worker["kind"], worker["runtime"]) == ("sdk", "python")


def test_the_node_sdk_with_an_authorization_header_connects_and_serves(
        gateways: Gateways, var: str, node: str) -> None:
    # Node's SDK 0.22 does not read III_TOKEN: the worker passes the header itself.
    sdk = start_sdk(gateways.cluster, "node", gateways.urls[var], prefix=f"node{SHORT[var]}",
                    SDK_TOKEN=TOKENS[var])
    echoed = gateways.cluster.trigger(sdk.fid("echo"), {"n": 2})
    assert (echoed["payload"], echoed["pid"]) == ({"n": 2}, sdk.proc.pid)
