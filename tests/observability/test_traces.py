"""Traces: one trace across HTTP → function → nested function → queued job (each attempt
of a retried job a span), exported by real engine, worker and web processes over OTLP/HTTP
to a real receiver (:mod:`tests.observability.otlp_sink`); an endpoint that never answers
never slows a call; nothing of the SDK is loaded when spans go nowhere."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from iii_broker.modules.observability.traces import exporter_choice
from tests.cron.conftest import beat, cron_worker, engine
from tests.helpers import wait_for
from tests.observability.otlp_sink import OtlpSink, Span
from tests.web.conftest import start_web

CONFIG = """
[modules.queue.queues.retry]
max_retries = 2
backoff_ms = 20
"""
APP = "tests.apps.traced"


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    with OtlpSink() as s:
        yield s


def exporting_to(cluster, url: str, **extra: str) -> None:
    """Every process the cluster starts from now on exports to ``url`` quickly."""
    cluster.env.update(OTEL_EXPORTER_OTLP_ENDPOINT=url, OTEL_BSP_SCHEDULE_DELAY="50",
                       OTEL_BLRP_SCHEDULE_DELAY="50", OTEL_SERVICE_NAME="traced-test", **extra)


def by_name(spans: list[Span], name: str) -> list[Span]:
    return [s for s in spans if s.name == name]


def test_one_trace_runs_from_the_request_through_nested_calls_to_each_attempt_of_a_job(
        cluster, sink):
    exporting_to(cluster, sink.url)
    cluster.engine(config=CONFIG)
    cluster.worker(APP)
    web = start_web(cluster)
    web.wait_status("/traced?fail_times=0", 200)

    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    reply = web.get("/traced?fail_times=1",
                    headers={"traceparent": f"00-{trace_id}-{caller_span}-01"})
    assert reply.status == 200, reply.body
    assert json.loads(reply.body)["trace_id"] == trace_id

    def complete(spans: list[Span]) -> list[Span] | None:
        # the web process's request span and the worker's spans come from two processes'
        # exporters: either may arrive first
        mine = [s for s in spans if s.trace_id == trace_id]
        web_too = any(s.resource.get("iii.process") == "web" for s in mine)
        return mine if len(by_name(mine, "traced::job")) >= 2 and web_too else None
    spans = sink.wait_for(complete, what="the request's span and both attempts of the job")

    [request] = [s for s in spans if s.resource.get("iii.process") == "web"]
    [front] = by_name(spans, "traced::front")
    [nested] = by_name(spans, "traced::nested")
    jobs = sorted(by_name(spans, "traced::job"), key=lambda s: s.attributes["iii.attempt"])
    # the chain: the caller's span → the request → the route's function → nested → the job
    assert (request.kind, request.parent_span_id) == ("server", caller_span)
    assert (front.kind, front.parent_span_id) == ("server", request.span_id)
    assert front.attributes["iii.trigger_type"] == "http"
    assert (nested.parent_span_id, nested.attributes["iii.trigger_type"]) == (front.span_id, "call")
    assert [(j.attributes["iii.attempt"], j.kind, j.parent_span_id) for j in jobs] == \
        [(1, "consumer", nested.span_id), (2, "consumer", nested.span_id)]
    assert [j.status_code for j in jobs] == [2, 0]  # the first attempt failed: an error status
    assert "exception" in jobs[0].events
    assert jobs[0].attributes["messaging.destination.name"] == "retry"
    assert jobs[0].span_id != jobs[1].span_id
    assert {s.resource["service.name"] for s in spans} == {"traced-test"}
    assert {s.resource["iii.process"] for s in spans} == {"web", "worker"}
    # nothing else joined the trace (the engine's built-ins have no spans)
    assert len(spans) == 5, [s.name for s in spans]


def test_a_call_without_a_traceparent_starts_a_trace_of_its_own(cluster, sink):
    exporting_to(cluster, sink.url)
    cluster.engine(config=CONFIG)
    cluster.worker(APP)
    cluster.trigger("traced::plain", {})
    [span] = sink.wait_for(lambda spans: by_name(spans, "traced::plain"))
    assert span.kind == "server" and span.status_code == 0
    assert span.attributes["iii.trigger_type"] == "call"
    # the client's own (unexported) span is its parent: the trace starts at the caller
    assert span.parent_span_id is not None

    # an ``async def`` handler's span is current while it awaits its own calls
    assert cluster.trigger("traced::async_outer", {}) == {"ok": True}
    outer = sink.wait_for(lambda spans: by_name(spans, "traced::async_outer"))[0]
    [inner] = sink.wait_for(lambda spans: [s for s in by_name(spans, "traced::plain")
                                           if s.trace_id == outer.trace_id])
    assert inner.parent_span_id == outer.span_id


def test_an_endpoint_that_never_answers_slows_no_call_and_no_drain(cluster):
    with OtlpSink(stall=True) as stalled:
        exporting_to(cluster, stalled.url, OTEL_BSP_MAX_QUEUE_SIZE="64",
                     OTEL_BSP_MAX_EXPORT_BATCH_SIZE="8", OTEL_EXPORTER_OTLP_TIMEOUT="30")
        cluster.engine(config=CONFIG)
        worker = cluster.worker(APP)
        cluster.trigger("traced::plain", {})  # warm
        slowest = 0.0
        started = time.perf_counter()
        for _ in range(200):
            t0 = time.perf_counter()
            assert cluster.trigger("traced::plain", {}) == {"ok": True}
            slowest = max(slowest, time.perf_counter() - t0)
        total = time.perf_counter() - started
        # the exporter did reach it, and is stuck there
        wait_for(lambda: stalled.requests >= 1, timeout=10)
        assert slowest < 1.0, f"a call took {slowest:.3f}s"
        assert total < 10.0, f"200 calls took {total:.1f}s"
        # a draining worker waits a bounded time for its spans, then exits
        t0 = time.perf_counter()
        worker.signal(15)
        assert worker.wait(timeout=20) == 0
        assert time.perf_counter() - t0 < 15


def test_spans_go_nowhere_by_default_and_then_no_sdk_is_imported():
    assert exporter_choice("auto", {}) is None
    assert exporter_choice("auto", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) == "otlp"
    assert exporter_choice("auto", {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c/v1/traces"}) \
        == "otlp"
    assert exporter_choice("auto", {"OTEL_TRACES_EXPORTER": "console"}) == "console"
    assert exporter_choice("auto", {"OTEL_TRACES_EXPORTER": "none",
                                    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) is None
    assert exporter_choice("auto", {"OTEL_SDK_DISABLED": "true",
                                    "OTEL_TRACES_EXPORTER": "otlp"}) is None
    assert exporter_choice("console", {}) == "console"
    assert exporter_choice("none", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) is None
    code = """
import sys, types
from iii_broker.modules.observability.traces import Tracing
from iii_broker.modules.observability.options import ObservabilityOptions
t = types.SimpleNamespace(options=ObservabilityOptions(), kind="worker", process_id="p",
                          writer=None)
before = {m for m in sys.modules if m.startswith("opentelemetry")}
tracing = Tracing(t)
tracing.start()
assert tracing.observer() is None and tracing.emit_log is None
now = {m for m in sys.modules if m.startswith("opentelemetry")}
print(sorted(m for m in now if m.startswith(("opentelemetry.sdk.trace", "opentelemetry.sdk._logs",
                                              "opentelemetry.exporter", "opentelemetry.instrumentation"))
             or m not in before))
"""
    # (redis-py 8 imports opentelemetry.sdk.metrics by itself; the tracer's parts are ours)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_cron_fire_is_a_span_that_its_condition_and_its_function_continue(cluster, sink, store,
                                                                            settings):
    exporting_to(cluster, sink.url)
    store.set(f"{settings.namespace}:test:allow", "1")
    engine(cluster)
    cron_worker(cluster, ("cron::tick", {"expression": "* * * * * *",
                                         "condition_function_id": "cron::allow"}))
    beat(cluster)

    def fired(spans: list[Span]) -> list[Span] | None:
        for fire in (s for s in spans if s.name == "cron cron::tick" or
                     s.attributes.get("iii.cron.job_id")):
            mine = [s for s in spans if s.trace_id == fire.trace_id]
            if {"cron::allow", "cron::tick"} <= {s.name for s in mine}:
                return mine
        return None
    spans = sink.wait_for(fired, timeout=20, what="a fire with its condition and function")
    [fire] = [s for s in spans if s.kind == "producer"]
    assert fire.resource["iii.process"] == "beat" and fire.parent_span_id is None
    assert fire.attributes["iii.function_id"] == "cron::tick"
    for name in ("cron::allow", "cron::tick"):
        [run] = by_name(spans, name)
        assert (run.parent_span_id, run.attributes["iii.trigger_type"]) == (fire.span_id, "cron")


def test_emit_log_sends_a_log_record_with_its_trace_and_span_over_otlp(sink):
    """What the logs part hands the tracer (``t.tracing.emit_log``) reaches the endpoint as
    an OTel log record in the run's trace."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    record = {"timestamp_unix_nano": time.time_ns(), "severity_number": 13,
              "severity_text": "WARN", "body": "disk almost full",
              "attributes": {"disk": "/data", "free": 0.05, "nested": {"a": 1}, "none": None},
              "trace_id": trace_id, "span_id": span_id, "service_name": "x",
              "function_id": "fs::check", "invocation_id": "inv-1", "quiet": False}
    code = f"""
import types
from iii_broker.modules.observability.traces import Tracing
from iii_broker.modules.observability.options import ObservabilityOptions
t = types.SimpleNamespace(options=ObservabilityOptions(), kind="worker", process_id="p",
                          writer=None)
tracing = Tracing(t)
tracing.start()
assert tracing.exporting
tracing.emit_log({record!r})
tracing.emit_log({{"body": object(), "severity_number": 99}})  # dropped, never raised
tracing.flush(5.0)
"""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
           "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    [log] = sink.logs
    assert (log.trace_id, log.span_id) == (trace_id, span_id)
    assert (log.severity_number, log.severity_text, log.body) == (13, "WARN", "disk almost full")
    assert log.attributes == {"disk": "/data", "free": 0.05, "nested": '{"a": 1}',
                              "iii.function_id": "fs::check", "iii.invocation_id": "inv-1"}
    assert log.resource["service.name"] == "iii-broker"


def test_a_state_trigger_continues_the_trace_of_the_run_that_wrote(cluster, sink):
    exporting_to(cluster, sink.url)
    cluster.engine(config=CONFIG)
    cluster.worker(APP)
    assert cluster.trigger("traced::writer", {"value": 2}) == {"ok": True}
    [writer] = sink.wait_for(lambda spans: by_name(spans, "traced::writer"))
    spans = sink.wait_for(lambda spans: (mine := [s for s in spans if s.trace_id == writer.trace_id])
                          and by_name(mine, "traced::watch") and by_name(mine, "state::set")
                          and mine, what="the state trigger and the engine's state::set")
    [write] = by_name(spans, "state::set")
    [watch] = by_name(spans, "traced::watch")
    assert write.parent_span_id == writer.span_id and write.resource["iii.process"] == "engine"
    assert (watch.parent_span_id, watch.attributes["iii.trigger_type"]) == (write.span_id, "state")


def test_a_handlers_log_record_reaches_the_endpoint_in_its_runs_span(cluster, sink):
    exporting_to(cluster, sink.url)
    cluster.engine(config=CONFIG)
    cluster.worker(APP)
    assert cluster.trigger("traced::logs", {"disk": "/var"}) == {"ok": True}
    [span] = sink.wait_for(lambda spans: by_name(spans, "traced::logs"))
    wait_for(lambda: any(r.body == "disk /var almost full" for r in sink.logs), timeout=15,
             what="the log record at the endpoint")
    [record] = [r for r in sink.logs if r.body == "disk /var almost full"]
    assert (record.trace_id, record.span_id) == (span.trace_id, span.span_id)
    assert (record.severity_number, record.attributes["iii.function_id"]) == (13, "traced::logs")
    assert record.resource["service.name"] == "traced-test"
