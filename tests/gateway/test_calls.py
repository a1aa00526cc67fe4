"""Calls between iii's SDK workers and the cluster, both SDKs (Python and Node) on one
cluster: a real engine, a Kombu worker (tests/apps/gateway_app.py), a gateway and a web
process, with both SDK workers connected to the gateway at once (``py::*`` and
``node::*``; the Node one from the first Node test on, where Node runs). Nothing here
stops a process, so the module's tests share them."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iii_broker import IIIError, Void
from tests.conftest import Cluster
from tests.gateway.conftest import (
    FUNCTIONS,
    KOMBU_APP,
    RUNTIMES,
    Sdk,
    module_cluster,
    post_json,
    records,
    start_sdk,
    tag,
    wait_listening,
    wait_live,
    workers_of,
)
from tests.helpers import bin_cmd, wait_for
from tests.web.conftest import Web, start_web


class Shared:
    def __init__(self, cluster: Cluster, gateway_url: str, web: Web) -> None:
        self.cluster = cluster
        self.gateway_url = gateway_url
        self.web = web
        self.sdks: dict[str, Sdk] = {}


@pytest.fixture(scope="module")
def shared(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    log_dir: Path = tmp_path_factory.mktemp("gateway-calls")
    with module_cluster(redis_url, log_dir) as cluster:
        # All start at once (a cluster starts in any order); the SDK once the gateway listens.
        engine = cluster.engine(wait=False)
        worker = cluster.worker(KOMBU_APP, wait=False)
        gateway = cluster.gateway(wait=False)
        web = start_web(cluster)
        wait_listening(cluster, gateway)
        shared = Shared(cluster, gateway.url, web)  # type: ignore[attr-defined]
        shared.sdks["python"] = start_sdk(cluster, "python", shared.gateway_url, wait=False,
                                          otel=True)
        cluster.wait_function("engine::workers::register", engine)
        cluster.wait_registered(worker)
        yield shared


@pytest.fixture(params=RUNTIMES)
def sdk(request: pytest.FixtureRequest, shared: Shared) -> Sdk:
    """The SDK worker of one runtime on the shared cluster (started on first use)."""
    runtime = request.param
    if runtime == "node":
        request.getfixturevalue("node")
        if "node" not in shared.sdks:
            shared.sdks["node"] = start_sdk(shared.cluster, "node", shared.gateway_url,
                                            wait=False, otel=True)
    found = shared.sdks[runtime]
    wait_live(shared.cluster, found)
    return found


@pytest.fixture
def cluster(shared: Shared) -> Cluster:  # the shared cluster, not conftest's own
    return shared.cluster


# -- joining ------------------------------------------------------------------------------


def test_an_sdk_worker_is_listed_by_the_engine_as_a_worker_of_kind_sdk_with_its_name_runtime_and_pid(
        cluster: Cluster, sdk: Sdk) -> None:
    [worker] = workers_of(cluster, sdk.proc.pid)
    assert worker["kind"] == "sdk"
    assert worker["name"] == sdk.name
    assert worker["runtime"] == sdk.runtime
    assert worker["pid"] == sdk.proc.pid
    functions = cluster.trigger("engine::functions::list", {})["functions"]
    assert {f["function_id"] for f in functions if f["function_id"].startswith(f"{sdk.prefix}::")} \
        == {sdk.fid(name) for name in FUNCTIONS}


# -- sync calls ---------------------------------------------------------------------------


def test_an_sdk_handler_calls_a_kombu_worker_function_and_gets_its_result(
        cluster: Cluster, sdk: Sdk) -> None:
    out = cluster.trigger(sdk.fid("call"), {"function_id": "gw::add", "payload": {"a": 2, "b": 40}})
    assert out == {"result": {"sum": 42}}


def test_a_kombu_worker_calls_an_sdk_function_and_gets_its_result_in_the_callers_trace(
        cluster: Cluster, sdk: Sdk) -> None:
    out = cluster.trigger("gw::call", {"function_id": sdk.fid("echo"),
                                       "payload": {"x": [1, "two", None]}})
    echoed = out["result"]
    assert echoed["payload"] == {"x": [1, "two", None]}
    assert (echoed["runtime"], echoed["pid"]) == (sdk.runtime, sdk.proc.pid)
    assert echoed["trace_id"] == out["trace_id"]  # the SDK's span continues the Kombu call's


def test_an_sdk_handler_makes_a_nested_call_that_comes_back_to_it_over_the_same_socket(
        cluster: Cluster, sdk: Sdk) -> None:
    # SDK nested -> Kombu gw::call -> SDK echo, while nested still waits on the socket.
    out = cluster.trigger(sdk.fid("nested"), {"n": 7})
    inner = out["inner"]["result"]
    assert inner["payload"] == {"n": 7}
    assert inner["pid"] == sdk.proc.pid
    assert re.fullmatch(r"[0-9a-f]{32}", out["trace_id"]) and set(out["trace_id"]) != {"0"}
    assert out["inner"]["trace_id"] == inner["trace_id"] == out["trace_id"]


# -- errors -------------------------------------------------------------------------------


def test_an_sdk_handler_error_reaches_a_kombu_caller_as_invocation_failed_with_its_message(
        cluster: Cluster, sdk: Sdk) -> None:
    why = tag()
    with pytest.raises(IIIError) as info:
        cluster.trigger(sdk.fid("fail"), {"why": why})
    assert info.value.code == "invocation_failed"
    assert info.value.message == f"sdk handler failed: {why}"
    assert info.value.function_id == sdk.fid("fail")
    assert info.value.stacktrace and "sdk handler failed" in info.value.stacktrace


def test_an_sdk_caller_gets_a_failed_handlers_code_and_message(cluster: Cluster, sdk: Sdk) -> None:
    # Its own failing function, called back through the cluster (not run in-process).
    why = tag()
    out = cluster.trigger(sdk.fid("call"), {"function_id": sdk.fid("fail"), "payload": {"why": why}})
    assert out == {"error": {"code": "invocation_failed", "message": f"sdk handler failed: {why}"}}


def test_an_sdk_caller_of_an_unknown_function_gets_function_not_found(
        cluster: Cluster, sdk: Sdk) -> None:
    out = cluster.trigger(sdk.fid("call"), {"function_id": "nobody::home", "payload": {}})
    assert out["error"]["code"] == "function_not_found"
    assert "nobody::home" in out["error"]["message"]


# -- void and enqueue ---------------------------------------------------------------------


def test_a_void_call_runs_without_an_answer_from_an_sdk_worker_and_to_one(
        cluster: Cluster, sdk: Sdk) -> None:
    sent, received = tag(), tag()
    out = cluster.trigger(sdk.fid("call"), {"function_id": "gw::record", "payload": {"id": sent},
                                            "action": "void"})
    assert out == {"result": None}
    # And a Void call of an SDK function: its slow handler records the id before it sleeps.
    assert cluster.trigger(sdk.fid("slow"), {"id": received, "seconds": 0}, action=Void) is None
    wait_for(lambda: {sent, received} <= set(records(cluster)), timeout=10,
             what="both Void calls to run")


def test_an_sdk_worker_enqueues_a_job_gets_a_receipt_and_the_failed_first_attempt_is_retried(
        cluster: Cluster, sdk: Sdk) -> None:
    before = default_queue(cluster)
    job = tag()
    out = cluster.trigger(sdk.fid("call"), {"function_id": sdk.fid("flaky"), "payload": {"id": job},
                                            "action": "default"})
    receipt = out["result"]
    assert list(receipt) == ["messageReceiptId"] and isinstance(receipt["messageReceiptId"], str)
    assert receipt["messageReceiptId"]
    # The default queue retries after its backoff (1 s); the second attempt succeeds.
    want = [f"{job}:attempt-1", f"{job}:attempt-2"]
    wait_for(lambda: [r for r in records(cluster) if r.startswith(job)] == want, timeout=15,
             what="the job's two attempts")

    def settled() -> dict[str, Any] | None:
        q = default_queue(cluster)
        return q if q["depth"] == q["in_flight"] == q["delayed"] == 0 else None
    stats = wait_for(settled, timeout=10, what="the default queue to settle")
    assert stats is not None
    assert stats.get("completed", 0) == before.get("completed", 0) + 1
    assert stats.get("retried", 0) == before.get("retried", 0) + 1
    assert stats["dead"] == before["dead"]
    assert [r for r in records(cluster) if r.startswith(job)] == want  # no third attempt


def default_queue(cluster: Cluster) -> dict[str, Any]:
    [stats] = [q for q in cluster.trigger("engine::queue::list", {})["queues"] if q["queue"] == "default"]
    return stats


# -- http triggers ------------------------------------------------------------------------


def test_an_http_trigger_registered_by_an_sdk_worker_is_served_by_the_web_process(
        shared: Shared, sdk: Sdk) -> None:
    path = f"/{sdk.prefix}/hello"

    def routed() -> tuple[int, dict[str, str], Any] | None:
        got = post_json(shared.web.port, path, {"name": "ada"})
        return got if got[0] != 404 else None
    got = wait_for(routed, timeout=10, what=f"POST {path} to be routed")
    assert got is not None
    status, headers, body = got
    assert status == 201, body
    assert body == {"hello": "ada", "runtime": sdk.runtime, "path": path}
    assert headers.get("x-sdk") == sdk.runtime


# -- logs ---------------------------------------------------------------------------------


def logs_of_trace(cluster: Cluster, trace: str, body: str) -> list[dict[str, Any]]:
    """The stored log records of ``trace`` with this body (``engine::logs::list``)."""
    return [r for r in cluster.trigger("engine::logs::list", {"trace_id": trace})["logs"]
            if r["body"] == body]


def cli_logs_of_trace(cluster: Cluster, trace: str, body: str) -> list[dict[str, Any]]:
    """The same, as ``iii-broker logs --trace TRACE --json`` prints them."""
    done = subprocess.run(bin_cmd("iii-broker", "logs", "--trace", trace, "--json"),
                          env=cluster.env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return [r for line in done.stdout.splitlines() if (r := json.loads(line))["body"] == body]


def history(cluster: Cluster, function_id: str, trace: str) -> list[dict[str, Any]]:
    """The invocation history's calls of ``function_id`` in ``trace``."""
    return [i for i in cluster.trigger("engine::invocations::list", {
        "function_id": function_id})["invocations"] if i.get("trace_id") == trace]


def test_an_sdk_log_record_is_found_by_iii_broker_logs_with_its_trace(
        cluster: Cluster, sdk: Sdk) -> None:
    mark = tag()
    trace = cluster.trigger(sdk.fid("log"), {"tag": mark})["trace_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", trace) and set(trace) != {"0"}
    body = f"{mark} from the {sdk.runtime} SDK"
    wait_for(lambda: logs_of_trace(cluster, trace, body), timeout=15,
             what="the SDK's log record under its trace")
    [record] = cli_logs_of_trace(cluster, trace, body)
    assert record["trace_id"] == trace
    assert record["severity_text"] == "INFO"
    # Stored under the call the gateway forwarded in that trace, as its history has it.
    assert record["function_id"] == sdk.fid("log")

    [run] = wait_for(lambda: history(cluster, sdk.fid("log"), trace), timeout=10,
                     what="the call in the invocation history")
    assert record["invocation_id"] == run["invocation_id"]


def test_an_sdk_log_record_made_after_a_nested_call_is_stored_under_the_handler_that_made_it(
        cluster: Cluster, sdk: Sdk) -> None:
    # nested -> gw::call -> echo (the same SDK worker, the same trace), then nested logs.
    mark = tag()
    trace = cluster.trigger(sdk.fid("nested"), {"tag": mark})["trace_id"]
    [record] = wait_for(lambda: logs_of_trace(cluster, trace, f"{mark} after the nested call"),
                        timeout=15, what="the SDK's log record under its trace")
    [run] = wait_for(lambda: history(cluster, sdk.fid("nested"), trace), timeout=10,
                     what="the call in the invocation history")
    assert (record["function_id"], record["invocation_id"]) == (sdk.fid("nested"),
                                                                run["invocation_id"])
