"""Requests reach functions as iii's http payload; results come back as responses."""

from __future__ import annotations

import json
import re


def test_path_params_query_strings_and_headers_reach_the_function_in_the_iii_payload(web):
    reply = web.get("/users/7/posts/42?q=a&q=b&page=2", headers={"X-Custom": "yes"})
    assert reply.status == 200, reply.body
    payload = reply.json()
    assert payload["path"] == "/users/7/posts/42"
    assert payload["method"] == "GET"
    assert payload["path_params"] == {"user_id": "7", "post_id": "42"}
    assert payload["query_params"] == {"q": ["a", "b"], "page": "2"}
    assert payload["headers"]["x-custom"] == "yes"
    assert payload["body"] is None
    assert payload["trigger"] == {"type": "http", "path": "/users/:user_id/posts/:post_id",
                                  "method": "GET"}
    assert payload["context"] == {}


def test_a_static_segment_wins_over_a_parameter(web):
    reply = web.get("/users/me/posts/3")
    assert reply.status == 200
    assert reply.json() == {"me": True, "path_params": {"post_id": "3"}}


def test_a_json_body_arrives_parsed_and_status_and_headers_come_back(web):
    reply = web.request("POST", "/items", body=json.dumps({"name": "pen", "n": [1, 2]}),
                        headers={"Content-Type": "application/json; charset=utf-8"})
    assert reply.status == 201
    assert reply.json() == {"created": {"name": "pen", "n": [1, 2]}}
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.headers["Location"] == "/items/1"


def test_a_text_body_arrives_as_text_and_a_string_body_goes_back_as_plain_text(web):
    reply = web.request("PUT", "/shout", body="hello {not json",
                        headers={"Content-Type": "text/plain"})
    assert reply.status == 200
    assert reply.text == "HELLO {NOT JSON"
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_headers_given_as_a_list_of_name_value_strings_are_sent(web):
    reply = web.get("/list-headers")
    assert reply.status == 202
    assert reply.body == b""
    assert reply.headers["X-One"] == "1"
    assert reply.headers["X-Two"] == "two: with a colon"


def test_a_string_body_with_its_own_content_type_passes_through_untouched(web):
    reply = web.get("/report.csv")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/csv"
    assert reply.body == b"a,b\n1,2\n"


def test_a_result_without_status_code_is_a_200_with_the_value_as_json(web):
    reply = web.get("/plain")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json() == {"hello": "world"}


def test_head_is_answered_by_a_get_route_without_a_body(web):
    reply = web.request("HEAD", "/plain")
    assert reply.status == 200
    assert reply.body == b""


def test_x_request_id_is_echoed_when_given_and_generated_otherwise(web):
    assert web.get("/plain", headers={"X-Request-Id": "req-123"}).headers["X-Request-Id"] == "req-123"
    assert web.get("/nowhere", headers={"X-Request-Id": "req-404"}).headers["X-Request-Id"] == "req-404"
    first, second = web.get("/plain").headers["X-Request-Id"], web.get("/nowhere").headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", first) and re.fullmatch(r"[0-9a-f]{32}", second)
    assert first != second
