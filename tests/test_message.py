"""The invocation envelope and trace context."""

from __future__ import annotations

import json

import pytest

from iii_broker.errors import InvocationFailed, PayloadError, PayloadLimitExceeded
from iii_broker.message import Invocation, Limits, depth_exceeds, dumps, parse_reply, reply_body
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


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


LIMITS = Limits(max_bytes=1000, max_depth=8)


def test_a_payload_at_the_depth_limit_passes_and_one_level_more_is_refused_naming_it():
    Invocation("a::b", {"x": _nested(7)}, metadata={"m": [1]}).to_json(LIMITS)  # 8 levels
    with pytest.raises(PayloadLimitExceeded, match=r"payload for 'a::b' is nested deeper "
                       r"than the limit of 8 .*\(III_PAYLOAD_MAX_DEPTH\)") as info:
        Invocation("a::b", {"x": _nested(8)}).to_json(LIMITS)
    assert info.value.code == "invalid_payload"


def test_many_shallow_containers_pass_the_depth_check():
    """More brackets than the limit only make the check walk the structure: width is fine."""
    Invocation("a::b", [{"k": [i]} for i in range(50)]).to_json(Limits(100_000, 3))


def test_brackets_inside_strings_do_not_count_as_depth():
    Invocation("a::b", {"s": "[[[[[[[[[[[[{{{{{{{{"}).to_json(LIMITS)


def test_metadata_nested_too_deep_is_refused_too():
    with pytest.raises(PayloadLimitExceeded, match="nested deeper"):
        Invocation("a::b", 1, metadata={"m": _nested(9)}).to_json(LIMITS)


def test_a_payload_larger_than_the_limit_once_encoded_is_refused_naming_its_size():
    with pytest.raises(PayloadLimitExceeded, match=r"is \d+ bytes encoded as JSON, over the "
                       r"limit of 1000 bytes \(III_PAYLOAD_MAX_BYTES\)"):
        Invocation("a::b", "x" * 1000).to_json(LIMITS)


def test_a_value_too_deep_for_json_itself_is_a_clear_limit_error():
    with pytest.raises(PayloadLimitExceeded, match="nested deeper than the limit of 8"):
        Invocation("a::b", _nested(5000)).to_json(LIMITS)
    with pytest.raises(PayloadLimitExceeded, match="nested deeper than the limit of 500"):
        dumps(_nested(5000))


@pytest.mark.parametrize("depth", [9, 5000])
def test_a_received_body_too_deep_is_refused_before_or_instead_of_a_recursion_error(depth):
    body = ('{"function_id":"a::b","invocation_id":"i","payload":' + "[" * depth
            + "]" * depth + "}")
    with pytest.raises(PayloadLimitExceeded, match="III_PAYLOAD_MAX_DEPTH"):
        Invocation.from_body(body.encode(), "application/json", Limits(100_000, 8))


def test_a_received_body_too_large_is_refused_before_it_is_parsed():
    body = b'{"function_id":"a::b","invocation_id":"i","payload":"' + b"x" * 2000 + b'"}'
    with pytest.raises(PayloadLimitExceeded, match=r"the message body is \d+ bytes encoded"):
        Invocation.from_body(body, "application/json", LIMITS)


def test_depth_exceeds_walks_any_depth_without_recursion_and_stops_on_cycles():
    assert not depth_exceeds(_nested(8), 8)
    assert depth_exceeds(_nested(9), 8)
    assert depth_exceeds(_nested(100_000), 500)
    loop: list = []
    loop.append(loop)
    assert depth_exceeds(loop, 500)
