"""Middleware, conditions, built-ins kept off user routes, CORS and traceparent on HTTP triggers.

One engine, one worker of tests.apps.http_middleware and two web processes: ``web`` runs the
global middleware ``mw::global`` and allows CORS from https://app.example; ``plain`` has
neither setting.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import redis

from iii_broker import Settings
from iii_broker.registry import Registry
from tests.conftest import Cluster
from tests.helpers import delete_namespace
from tests.web.conftest import Web, start_web

ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def webs(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Web, Web]]:
    settings = Settings(broker_url=redis_url, redis_url=redis_url,
                        namespace=f"t{uuid.uuid4().hex[:10]}", heartbeat_interval_s=0.3,
                        default_timeout_ms=10_000)
    cluster = Cluster(settings, tmp_path_factory.mktemp("web-mw"))
    try:
        cluster.engine()
        cluster.worker("tests.apps.http_middleware")
        web = start_web(cluster, III_HTTP_TIMEOUT_MS="3000", III_HTTP_MIDDLEWARE="mw::global",
                        III_HTTP_CORS_ORIGINS=f"{ORIGIN}, https://other.example")
        plain = start_web(cluster, III_HTTP_TIMEOUT_MS="3000")
        web.wait_status("/context", 200)
        plain.wait_status("/context", 200)
        yield cluster, web, plain
    finally:
        cluster.close()
        delete_namespace(redis_url, settings.namespace)


@pytest.fixture
def web(webs: tuple[Cluster, Web, Web]) -> Web:
    return webs[1]


@pytest.fixture
def plain(webs: tuple[Cluster, Web, Web]) -> Web:
    return webs[2]


def envelope(reply):
    body = reply.json()
    assert set(body) == {"error"}, body
    return body["error"]


# -- middleware --------------------------------------------------------------------------


def test_a_global_middleware_that_continues_passes_its_context_to_the_function(web, plain):
    reply = web.get("/context")
    assert reply.status == 200, reply.body
    assert reply.json() == {"user": "alice", "order": ["global"], "saw_method": "GET"}
    assert plain.get("/context").json() == {}


def test_a_global_middleware_that_responds_short_circuits_and_the_function_is_not_called(web):
    before = web.get("/calls").json()["guarded"]
    reply = web.get("/guarded", headers={"X-Stop": "1"})
    assert reply.status == 401
    assert reply.json() == {"stopped_by": "mw::global"}
    assert reply.headers["X-Stopped"] == "yes"
    assert web.get("/calls").json()["guarded"] == before
    assert web.get("/guarded").status == 200
    assert web.get("/calls").json()["guarded"] == before + 1


def test_route_middleware_runs_after_the_global_ones_in_the_order_given(web, plain):
    assert web.get("/ordered").json()["order"] == ["global", "first", "second"]
    assert plain.get("/ordered").json() == {"order": ["first", "second"]}


def test_a_failing_middleware_is_a_500_with_an_error_id_and_no_details(web):
    reply = web.get("/exploding")
    assert reply.status == 500
    error = envelope(reply)
    assert error["error_id"] and error["error_id"] in error["message"]
    assert "middleware 'mw::explode' failed" in error["message"]
    assert "secret" not in reply.text


def test_a_middleware_answering_neither_continue_nor_respond_is_a_500_with_an_error_id(web):
    reply = web.get("/nonsense")
    assert reply.status == 500
    error = envelope(reply)
    assert error["code"] == "invalid_middleware_response" and error["error_id"]
    assert "reached" not in reply.text


# -- condition and built-ins ---------------------------------------------------------------


def test_a_true_condition_lets_the_request_through_and_a_false_one_is_422(web):
    assert web.get("/conditional?allow=yes").json() == {"allowed": True}
    reply = web.get("/conditional?allow=no")
    assert reply.status == 422
    assert envelope(reply)["code"] == "CONDITION_NOT_MET"


def test_an_http_trigger_on_a_built_in_function_in_the_registry_is_403_forbidden(webs):
    cluster, web, _ = webs
    registry = Registry(redis.Redis.from_url(cluster.settings.redis_url, decode_responses=True),
                        cluster.settings.namespace)
    trigger = {"id": "sneaky", "type": "http", "function_id": "engine::workers::list",
               "config": {"api_path": "/sneaky", "http_method": "GET"}, "metadata": {}}
    registry.r.hset(registry.keys.triggers, "sneaky", json.dumps(trigger))
    registry.announce("trigger_registered", trigger_id="sneaky")
    try:
        reply = web.wait_status("/sneaky", 403)
        assert envelope(reply)["code"] == "FORBIDDEN"
        assert "workers" not in reply.json()
    finally:
        registry.remove_trigger("sneaky")
        registry.r.close()


# -- CORS ----------------------------------------------------------------------------------


def preflight(web, origin):
    return web.request("OPTIONS", "/items", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-api-key"})


def test_a_preflight_from_an_allowed_origin_is_answered_204_with_the_cors_headers(web):
    reply = preflight(web, ORIGIN)
    assert reply.status == 204 and reply.body == b""
    assert reply.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert reply.headers["Access-Control-Allow-Methods"] == "OPTIONS, POST"
    assert reply.headers["Access-Control-Allow-Headers"] == "content-type, x-api-key"
    assert int(reply.headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in reply.headers["Vary"]


def test_a_simple_request_from_an_allowed_origin_gets_allow_origin_and_vary(web):
    reply = web.request("POST", "/items", headers={"Origin": ORIGIN})
    assert reply.status == 201
    assert reply.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in reply.headers["Vary"]


def test_a_disallowed_origin_gets_no_cors_headers(web):
    for reply in (preflight(web, "https://evil.example"),
                  web.request("POST", "/items", headers={"Origin": "https://evil.example"})):
        assert "Access-Control-Allow-Origin" not in reply.headers
        assert "Access-Control-Allow-Methods" not in reply.headers


def test_with_cors_off_there_are_no_cors_headers_and_options_is_an_ordinary_request(plain):
    reply = preflight(plain, ORIGIN)
    assert reply.status == 405
    assert "Access-Control-Allow-Origin" not in reply.headers
    simple = plain.request("POST", "/items", headers={"Origin": ORIGIN})
    assert simple.status == 201 and "Access-Control-Allow-Origin" not in simple.headers


def test_a_preflight_for_a_path_without_a_route_is_404(web):
    reply = web.request("OPTIONS", "/nowhere", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "GET"})
    assert reply.status == 404


# -- traceparent ---------------------------------------------------------------------------


def test_a_valid_traceparent_is_continued_by_the_function(web, plain):
    trace_id = uuid.uuid4().hex
    header = {"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"}
    assert web.get("/trace", headers=header).json() == {"trace_id": trace_id}
    assert plain.get("/trace", headers=header).json() == {"trace_id": trace_id}


def test_without_a_valid_traceparent_each_request_starts_a_new_trace(web):
    seen = {web.get("/trace", headers=headers).json()["trace_id"]
            for headers in ({}, {}, {"traceparent": "00-not-a-trace-01"})}
    assert len(seen) == 3

