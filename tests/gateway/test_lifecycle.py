"""SDK workers through process failures: an SDK worker killed mid-call, and the gateway
restarted under connected SDK workers. Each test has a cluster of its own."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from iii_broker import InvocationStopped
from tests.conftest import Cluster
from tests.gateway.conftest import (
    FUNCTIONS,
    KOMBU_APP,
    RUNTIMES,
    post_json,
    records,
    start_sdk,
    tag,
    wait_listening,
    wait_live,
    workers_of,
)
from tests.helpers import in_thread, wait_for
from tests.web.conftest import start_web

# The call below would wait 30 s; its caller must hear of the dead SDK worker long before.
STOPPED_WITHIN_S = 3.0


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> str:
    if request.param == "node":
        request.getfixturevalue("node")
    return str(request.param)


def test_killing_an_sdk_worker_mid_call_stops_its_caller_at_once(cluster: Cluster, runtime: str) -> None:
    engine = cluster.engine(wait=False)
    worker = cluster.worker(KOMBU_APP, wait=False)  # gw::record, which slow calls first
    gateway = cluster.gateway()
    sdk = start_sdk(cluster, runtime, gateway.url, wait=False)  # type: ignore[attr-defined]
    cluster.wait_function("engine::workers::register", engine)
    cluster.wait_registered(worker)
    wait_live(cluster, sdk)
    started = tag()
    call = in_thread(cluster.trigger, sdk.fid("slow"), {"id": started, "seconds": 60},
                     timeout_ms=30_000)
    wait_for(lambda: started in records(cluster), timeout=10, what="the slow handler to run")

    killed_at = time.monotonic()
    sdk.proc.signal(signal.SIGKILL)
    with pytest.raises(InvocationStopped) as info:
        call.result(timeout=30)
    assert time.monotonic() - killed_at < STOPPED_WITHIN_S
    assert info.value.code == "invocation_stopped"
    assert info.value.function_id == sdk.fid("slow")
    assert sdk.proc.wait() == -signal.SIGKILL
    # It left the cluster: no worker of its pid, none of its functions.
    wait_for(lambda: not workers_of(cluster, sdk.proc.pid), timeout=5,
             what="the killed SDK worker to leave the registry")
    functions = {f["function_id"] for f in cluster.trigger("engine::functions::list", {})["functions"]}
    assert not functions & {sdk.fid(f) for f in FUNCTIONS}
    assert gateway.popen.poll() is None


def test_an_sdk_worker_reconnects_to_a_restarted_gateway_with_its_functions_and_http_route(
        cluster: Cluster, runtime: str) -> None:
    engine = cluster.engine(wait=False)
    gateway = cluster.gateway(wait=False)
    web = start_web(cluster)
    wait_listening(cluster, gateway)
    sdk = start_sdk(cluster, runtime, gateway.url, wait=False)  # type: ignore[attr-defined]
    cluster.wait_function("engine::workers::register", engine)
    wait_live(cluster, sdk)
    path = f"/{sdk.prefix}/hello"
    assert cluster.trigger(sdk.fid("echo"), {"n": 1})["pid"] == sdk.proc.pid
    wait_for(lambda: post_json(web.port, path, {"name": "before"})[0] == 201, timeout=10,
             what=f"POST {path} to answer")
    [before] = workers_of(cluster, sdk.proc.pid)

    gateway.signal(signal.SIGTERM)
    assert gateway.wait() == 0
    port = int(gateway.url.rsplit(":", 1)[1])  # type: ignore[attr-defined]
    cluster.gateway(port=port)

    # The SDK's first retry comes ~1 s after the close (iii's backoff), then it replays.
    def answered() -> bool:
        return cluster.trigger(sdk.fid("echo"), {"n": 2}, timeout_ms=2000)["pid"] == sdk.proc.pid
    wait_for(answered, timeout=20, interval=0.2, what="the SDK worker to serve again")

    def routed() -> Any:
        status, _, body = post_json(web.port, path, {"name": "after"})
        return body if status == 201 else None
    body = wait_for(routed, timeout=10, what=f"POST {path} to answer again")
    assert body == {"hello": "after", "runtime": sdk.runtime, "path": path}
    [after] = workers_of(cluster, sdk.proc.pid)  # one worker: the new connection's
    assert after["id"] != before["id"]
    assert (after["kind"], after["name"], after["runtime"]) == ("sdk", sdk.name, sdk.runtime)
    assert sdk.proc.popen.poll() is None


def test_sdk_workers_on_two_gateways_call_each_other_as_one_cluster(cluster: Cluster) -> None:
    cluster.engine()
    cluster.worker(KOMBU_APP)
    first, second = cluster.gateway(), cluster.gateway()
    a = start_sdk(cluster, "python", first.url, prefix="gwa")
    b = start_sdk(cluster, "python", second.url, prefix="gwb")

    # a (on the first gateway) calls b (on the second) through the broker, and back
    answer = cluster.trigger(a.fid("call"), {"function_id": b.fid("echo"), "payload": {"x": 1}})
    assert answer["result"]["payload"] == {"x": 1}
    assert answer["result"]["pid"] == b.proc.pid
    (wa,), (wb,) = workers_of(cluster, a.proc.pid), workers_of(cluster, b.proc.pid)
    assert wa["gateway"] != wb["gateway"] and wa["kind"] == wb["kind"] == "sdk"
