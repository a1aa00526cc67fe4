"""The gateway through Redis and RabbitMQ outages: its SDK workers' sockets stay open (the
same worker ids before and after, no reconnect), calls an SDK worker makes meanwhile are
answered ``broker_unavailable`` at once, and calls both ways work again once the server is
back. Also a gateway killed outright: its SDK workers come back through a new one.
(Its bad-input cases are in tests/gateway/test_frames.py.)"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator

import pytest
from kombu import Connection

from tests.conftest import AMQP_URL
from tests.faults.support import assert_rode_it_out, recovery_s, report, timed
from tests.gateway.conftest import KOMBU_APP, raw_connect, recv_json, start_sdk, workers_of
from tests.helpers import wait_for


def start(cluster):
    """An engine, the Kombu peer, a gateway and a Python SDK worker that answers."""
    engine = cluster.engine()
    worker = cluster.worker(KOMBU_APP)
    gateway = cluster.gateway()
    sdk = start_sdk(cluster, "python", gateway.url)
    assert cluster.trigger(sdk.fid("echo"), {"n": 1})["payload"] == {"n": 1}
    return engine, worker, gateway, sdk


def outward(cluster, sdk):
    """A call the SDK worker makes (to the Kombu peer's gw::add); None while it fails."""
    answer = cluster.trigger(sdk.fid("call"), {"function_id": "gw::add",
                                               "payload": {"a": 1, "b": 1}}, timeout_ms=5_000)
    return answer if "result" in answer else None


def sdk_ids(cluster, sdk) -> set[str]:
    return {w["id"] for w in workers_of(cluster, sdk.proc.pid)}


def test_the_gateway_keeps_its_sdk_workers_through_a_redis_outage(cluster, fault_redis):
    engine, worker, gateway, sdk = start(cluster)
    before = sdk_ids(cluster, sdk)

    fault_redis.kill()
    time.sleep(2)  # the outage itself
    fault_redis.start()
    recover = recovery_s(lambda: cluster.trigger(sdk.fid("echo"), {"n": 2},
                                                 timeout_ms=1_000)["payload"] == {"n": 2})
    called = cluster.trigger(sdk.fid("call"), {"function_id": "gw::add",
                                               "payload": {"a": 2, "b": 3}})

    assert called == {"result": {"sum": 5}}
    assert sdk_ids(cluster, sdk) == before, "the SDK worker reconnected: its socket was closed"
    assert "left" not in gateway.output(), gateway.output()
    assert_rode_it_out(engine, worker, gateway)
    report("Redis killed for 2 s under a gateway", "SDK sockets kept (same worker ids)",
           "nothing", recover)


@pytest.fixture
def amqp_cluster(cluster, amqp_fault_url, namespace) -> Iterator:
    cluster.settings = cluster.settings.with_overrides(broker_url=amqp_fault_url)
    cluster.env.update(cluster.settings.child_env())
    cluster.client.configure(cluster.settings)
    yield cluster
    with Connection(AMQP_URL, connect_timeout=3) as conn:
        channel = conn.channel()
        for fid in ("py::echo", "py::call", "gw::add", "gw::call", "gw::record"):
            for name in (f"{namespace}.fn.{fid}",):
                channel.queue_delete(name)
                channel.exchange_delete(name)


def test_the_gateway_rides_out_rabbitmq_cut_and_restored(amqp_cluster, rabbit_proxy):
    cluster = amqp_cluster
    engine, worker, gateway, sdk = start(cluster)
    before = sdk_ids(cluster, sdk)

    with raw_connect(gateway.url) as ws:  # a worker of the gateway, as an SDK speaks
        recv_json(ws)  # workerregistered
        rabbit_proxy.cut()
        during = timed(cluster.trigger, sdk.fid("echo"), {"n": 2}, timeout_ms=3_000)
        started = time.monotonic()
        ws.send(json.dumps({"type": "invokefunction", "invocation_id": "w2e",
                            "function_id": "gw::add", "data": {"a": 1, "b": 2}}))
        answer = recv_json(ws, timeout=5)
        answered_s = time.monotonic() - started
        time.sleep(2)
    rabbit_proxy.restore()
    recover = recovery_s(lambda: cluster.trigger(sdk.fid("echo"), {"n": 3},
                                                 timeout_ms=1_000)["payload"] == {"n": 3})
    # and the other way, through the gateway's own caller (its reply queue declared again)
    called = wait_for(lambda: outward(cluster, sdk), timeout=30,
                      what="the SDK worker's calls to work again")

    assert during.code == "broker_unavailable" and during.seconds < 2, during
    assert answer["invocation_id"] == "w2e", answer
    assert answer["error"]["code"] == "broker_unavailable" and answered_s < 2, answer
    assert called == {"result": {"sum": 2}}
    assert sdk_ids(cluster, sdk) == before, "the SDK worker reconnected: its socket was closed"
    assert_rode_it_out(engine, worker, gateway)
    report("RabbitMQ cut for 2 s under a gateway", f"trigger: {during.code} in "
           f"{during.seconds:.2f} s; SDK sockets kept", "nothing", recover)


def test_sdk_workers_of_a_killed_gateway_come_back_through_a_new_one(cluster):
    cluster.engine()
    cluster.worker(KOMBU_APP)
    gateway = cluster.gateway()
    sdk = start_sdk(cluster, "python", gateway.url)
    old = sdk_ids(cluster, sdk)
    port = int(gateway.url.rsplit(":", 1)[1])

    gateway.signal(signal.SIGKILL)
    gateway.wait(timeout=10)
    started = time.monotonic()
    cluster.gateway(port=port)
    wait_for(lambda: sdk_ids(cluster, sdk) - old, timeout=40,
             what="the SDK worker to reconnect through the new gateway")
    assert cluster.trigger(sdk.fid("echo"), {"n": 4})["payload"] == {"n": 4}
    # its reattach retired the old worker at once (no wait for the old lease to lapse)
    wait_for(lambda: not (sdk_ids(cluster, sdk) & old), timeout=5,
             what="the old worker to be retired")
    report("gateway SIGKILLed, a new one started", "SDK reconnected and reattached",
           "calls running on it: invocation_stopped", time.monotonic() - started)
