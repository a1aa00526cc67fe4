"""The one encoder and decoder of Kombu's Redis message envelope."""

from __future__ import annotations

import json

import pytest

from iii_broker import envelope
from iii_broker.errors import PayloadError


def test_an_encoded_envelope_decodes_to_the_same_body_and_headers():
    raw = envelope.encode('{"a": 1}', exchange="iii.fn.x", routing_key="x",
                          headers={"traceparent": "00-aa-bb-01"}, reply_to="iii.reply.1",
                          correlation_id="c1")
    parsed = envelope.decode(raw)
    assert parsed.body == '{"a": 1}'
    assert parsed.headers == {"traceparent": "00-aa-bb-01"}
    assert parsed.content_type == "application/json"
    assert parsed.properties["reply_to"] == "iii.reply.1"
    assert parsed.properties["delivery_info"] == {"exchange": "iii.fn.x", "routing_key": "x"}
    envelope.check(json.loads(raw))  # the shape Kombu's transport expects


def test_a_job_envelope_keeps_its_body_readable_and_can_take_another_body():
    raw = envelope.encode('{"attempt": 1}', exchange="e", routing_key="q.default",
                          base64_body=False, delivery_tag="id-1")
    assert json.loads(raw)["body"] == '{"attempt": 1}'
    again = envelope.decode(envelope.with_body(raw, '{"attempt": 2}'))
    assert again.body == '{"attempt": 2}' and again.properties["delivery_tag"] == "id-1"


@pytest.mark.parametrize(("raw", "problem"), [
    ("not json", "not JSON"),
    ("[1, 2]", "not a Kombu message envelope"),
    ('{"body": 5}', "body must be a string"),
    ('{"body": "!!", "properties": {"body_encoding": "base64"}}', "base64 body"),
])
def test_what_is_not_an_envelope_is_refused_naming_why(raw, problem):
    with pytest.raises(PayloadError, match=problem):
        envelope.decode(raw)
