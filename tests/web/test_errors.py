"""Errors the web process makes itself use iii's envelope {"error": {code, message, error_id?}}."""

from __future__ import annotations

import json


def envelope(reply):
    body = reply.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    return body["error"]


def test_a_body_over_the_limit_is_413(web):  # the shared web process allows 1024 bytes
    reply = web.request("POST", "/items", body=json.dumps({"x": "y" * 2000}),
                        headers={"Content-Type": "application/json"})
    assert reply.status == 413
    assert envelope(reply)["code"] == "PAYLOAD_TOO_LARGE"
    ok = web.request("POST", "/items", body=json.dumps({"x": "y" * 900}),
                     headers={"Content-Type": "application/json"})
    assert ok.status == 201


def test_malformed_json_under_a_json_content_type_is_400(web):
    reply = web.request("POST", "/items", body='{"name": ', headers={"Content-Type": "application/json"})
    assert reply.status == 400
    assert envelope(reply)["code"] == "INVALID_JSON"


def test_a_path_without_a_route_is_404_not_found(web):
    reply = web.get("/users/7")
    assert reply.status == 404
    assert envelope(reply) == {"code": "NOT_FOUND", "message": "no route for GET /users/7"}


def test_a_wrong_method_on_an_existing_path_is_405_with_an_allow_header(web):
    reply = web.request("DELETE", "/items")
    assert reply.status == 405
    assert reply.headers["Allow"] == "POST"
    assert envelope(reply)["code"] == "METHOD_NOT_ALLOWED"


def test_a_failing_handler_is_500_with_an_error_id_and_the_stacktrace_only_in_the_log(shared, web):
    reply = web.get("/fail")
    assert reply.status == 500
    error = envelope(reply)
    assert error["code"] == "invocation_failed"
    assert len(error["error_id"]) == 32
    assert b"secret" not in reply.body and b"Traceback" not in reply.body
    log = web.proc.output()
    assert error["error_id"] in log
    after = log[log.index(error["error_id"]):]
    assert "Traceback" in after and "secret database password" in after


def test_a_handler_slower_than_iii_http_timeout_ms_is_504(web):  # the shared web waits 1 s
    reply = web.get("/slow?seconds=2")
    assert reply.status == 504
    assert envelope(reply)["code"] == "TIMEOUT"


def test_a_result_that_is_not_a_valid_response_is_500_with_an_error_id(web):
    reply = web.get("/broken")
    assert reply.status == 500
    error = envelope(reply)
    assert error["code"] == "invalid_response" and len(error["error_id"]) == 32
