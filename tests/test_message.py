"""The invocation envelope and trace context."""

from __future__ import annotations

import json

import pytest

from iii_broker.errors import InvocationFailed, PayloadError
from iii_broker.message import Invocation, parse_reply, reply_body
from iii_broker.tracing import SpanContext


def test_an_invocation_survives_a_round_trip_through_json():
    inv = Invocation("a::b", {"x": [1, 2]}, deadline=123, metadata={"m": 1})
    back = Invocation.from_body(inv.to_json().encode(), "application/json")
    assert back == inv


@pytest.mark.parametrize("body,content_type,problem", [
    (b'{"function_id": "a::b"}', "application/x-python-serialize", "content type"),
    (b"not json", "application/json", "not valid JSON"),
    (b"[1, 2]", "application/json", "not a JSON object"),
    (b'{"payload": 1}', "application/json", "lacks function_id"),
    (b'{"function_id": "a", "invocation_id": "i", "attempt": 0}', "application/json", "attempt"),
    (b'{"function_id": "a", "invocation_id": "i", "deadline": "soon"}', "application/json",
     "deadline"),
])
def test_a_body_that_is_not_our_json_is_refused_with_the_reason(body, content_type, problem):
    with pytest.raises(PayloadError, match=problem):
        Invocation.from_body(body, content_type)


def test_a_payload_that_is_not_json_names_the_offending_path():
    with pytest.raises(PayloadError, match=r"\$\.items\[1\] is a set"):
        Invocation("a::b", {"items": [1, {2}]}).to_json()
    with pytest.raises(PayloadError, match="nan"):
        Invocation("a::b", {"x": float("nan")}).to_json()


def test_replies_carry_results_and_errors():
    assert parse_reply(reply_body("i1", result={"ok": True})) == ("i1", {"ok": True}, None)
    err = InvocationFailed("boom", function_id="a::b", invocation_id="i1", stacktrace="tb")
    inv_id, result, error = parse_reply(reply_body("i1", error=err))
    assert isinstance(error, InvocationFailed)
    assert (error.code, error.message, error.stacktrace) == ("invocation_failed", "boom", "tb")
    assert json.loads(reply_body("i1", error=err))["error"]["function_id"] == "a::b"


def test_traceparent_round_trips_and_children_keep_the_trace():
    root = SpanContext.new_root()
    parsed = SpanContext.parse(root.traceparent)
    assert parsed == root
    child = root.child()
    assert child.trace_id == root.trace_id and child.span_id != root.span_id


@pytest.mark.parametrize("header", [None, "", "garbage", "00-" + "0" * 32 + "-" + "1" * 16 + "-01"])
def test_a_malformed_traceparent_is_ignored(header):
    assert SpanContext.parse(header) is None
