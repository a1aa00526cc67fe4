"""The OTLP bodies the tracer writes by hand (traces/encode.py) are what opentelemetry-proto
decodes: every field of a span (ids, kind, times, attributes, the exception event, the
status, the flags) and of a log record, and the resource around them."""

from __future__ import annotations

import secrets
import time

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from iii_broker.modules.observability.traces.encode import Encoder, RunNote
from tests.observability.otlp_sink import _attributes, _value

RESOURCE = {"service.name": "shop", "iii.process": "worker", "pid": 12, "ratio": 0.5,
            "on": True}


def note(**changes) -> RunNote:
    fields = dict(trace_id=secrets.token_hex(16), span_id=secrets.token_hex(8),
                  parent_span_id=secrets.token_hex(8), function_id="orders::place",
                  start_ns=time.time_ns(), end_ns=time.time_ns() + 1500, invocation_id="inv-1",
                  attempt=2, trigger_type="queue", kind="job", worker_id="w-1", rerun_of=None,
                  queue="orders", error=None, final=True)
    fields.update(changes)
    return RunNote(**fields)


def test_spans_decode_field_for_field():
    try:
        raise KeyError("no such order")
    except KeyError as exc:
        error = exc
    ok, failed = note(), note(error=error, final=False, parent_span_id=None, kind="sync",
                              queue=None, rerun_of="inv-0", function_id="été::ß")
    body = Encoder(RESOURCE).spans_request([ok, failed])
    [rs] = ExportTraceServiceRequest.FromString(body).resource_spans
    assert _attributes(rs.resource.attributes) == RESOURCE
    [ss] = rs.scope_spans
    assert ss.scope.name == "iii_broker"
    a, b = ss.spans
    assert (a.trace_id.hex(), a.span_id.hex(), a.parent_span_id.hex()) == \
        (ok.trace_id, ok.span_id, ok.parent_span_id)
    assert (a.name, a.kind, a.start_time_unix_nano, a.end_time_unix_nano, a.flags) == \
        ("orders::place", 5, ok.start_ns, ok.end_ns, 0x300)
    assert _attributes(a.attributes) == {
        "iii.function_id": "orders::place", "iii.invocation_id": "inv-1", "iii.attempt": 2,
        "iii.trigger_type": "queue", "iii.kind": "job", "iii.worker_id": "w-1",
        "iii.queue": "orders", "messaging.system": "iii", "messaging.operation.type": "process",
        "messaging.destination.name": "orders", "messaging.message.id": "inv-1"}
    assert (a.status.code, len(a.events)) == (0, 0)

    assert (b.name, b.kind, b.parent_span_id, b.flags) == ("été::ß", 2, b"", 0x100)
    assert _attributes(b.attributes)["iii.retried"] is True
    assert _attributes(b.attributes)["iii.rerun_of"] == "inv-0"
    assert (b.status.code, b.status.message) == (2, "KeyError: 'no such order'")
    [event] = b.events
    got = _attributes(event.attributes)
    assert (event.name, event.time_unix_nano) == ("exception", failed.end_ns)
    assert (got["exception.type"], got["exception.message"]) == ("KeyError", "'no such order'")
    assert "raise KeyError" in got["exception.stacktrace"]


def test_log_records_decode_and_a_malformed_one_is_dropped_alone():
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    good = {"timestamp_unix_nano": 1_700_000_000_000_000_000, "severity_number": 17,
            "severity_text": "ERROR", "body": "disk full",
            "attributes": {"n": -3, "big": 1 << 70, "ok": False, "f": 1.5, "d": {"a": [1]},
                           "none": None},
            "trace_id": trace_id, "span_id": span_id, "function_id": "fs::check",
            "invocation_id": "inv-9"}
    bare = {"body": {"not": "text"}, "severity_number": 9}
    body, malformed = Encoder(RESOURCE).logs_request([good, {"severity_number": 99}, bare])
    assert malformed == 1
    [rl] = ExportLogsServiceRequest.FromString(body).resource_logs
    assert _attributes(rl.resource.attributes) == RESOURCE
    [sl] = rl.scope_logs
    a, b = sl.log_records
    assert (a.trace_id.hex(), a.span_id.hex(), a.flags) == (trace_id, span_id, 1)
    assert (a.time_unix_nano, a.observed_time_unix_nano) == (good["timestamp_unix_nano"],) * 2
    assert (a.severity_number, a.severity_text, _value(a.body)) == (17, "ERROR", "disk full")
    assert _attributes(a.attributes) == {
        "n": -3, "big": str(1 << 70), "ok": False, "f": 1.5, "d": '{"a": [1]}',
        "iii.function_id": "fs::check", "iii.invocation_id": "inv-9"}
    assert (b.trace_id, b.severity_number, _value(b.body)) == (b"", 9, "{'not': 'text'}")
