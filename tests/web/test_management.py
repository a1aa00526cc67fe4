"""The management API under /_iii/: health, discovery, invoke, and who may use it."""

from __future__ import annotations

import json
import signal

import pytest
import redis

from iii_broker import App, Settings
from iii_broker.errors import ConfigError, TriggerConfigError
from iii_broker.registry import Registry
from iii_broker.web.management import access_denied, client_allowed, is_loopback, is_reserved
from tests.helpers import wait_for
from tests.web.conftest import Web, start_web
from tests.web.raw_http import post_chunked

TOKEN = "s3cret-token"


def envelope(reply):
    body = reply.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]


def invoke(web: Web, function_id: str, payload=None, query: str = "", **kwargs):
    body = None if payload is None else json.dumps(payload)
    return web.request("POST", f"/_iii/invoke/{function_id}{query}", body=body,
                       headers={"Content-Type": "application/json", **kwargs.pop("headers", {})},
                       **kwargs)


@pytest.fixture(scope="module")
def guarded(shared) -> Web:
    """A second web process of the shared cluster, with III_API_TOKEN set."""
    return start_web(shared[0], III_API_TOKEN=TOKEN)


# -- health -----------------------------------------------------------------------

def test_health_is_200_ok_while_broker_store_and_engine_are_up(web):
    reply = web.get("/_iii/health")
    assert reply.status == 200, reply.body
    body = reply.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"broker", "store", "engine", "seeded"}
    assert all(check["ok"] for check in body["checks"].values())
    assert reply.headers["Content-Type"] == "application/json"


def test_health_is_503_naming_the_engine_once_the_engine_stops_and_200_when_one_returns(cluster):
    engine = cluster.engine()
    web = start_web(cluster)
    web.wait_status("/_iii/health", 200)

    engine.signal(signal.SIGKILL)  # a crash: nobody deregisters it, its lease runs out
    body = web.wait_status("/_iii/health", 503).json()
    assert body["status"] == "degraded"
    assert body["checks"]["broker"]["ok"] and body["checks"]["store"]["ok"]
    assert body["checks"]["engine"]["ok"] is False
    assert "no engine is running" in body["checks"]["engine"]["error"]

    cluster.engine()
    assert web.wait_status("/_iii/health", 200).json()["checks"]["engine"]["engines"] == 1


def test_listings_are_503_when_no_engine_runs(cluster):
    engine = cluster.engine()
    web = start_web(cluster)
    web.wait_status("/_iii/functions", 200)
    engine.signal(signal.SIGTERM)  # a clean stop deregisters the engine's functions
    engine.wait()
    error = envelope(web.wait_status("/_iii/functions", 503))
    assert error["code"] == "function_not_found" and "no engine is running" in error["message"]


# -- discovery --------------------------------------------------------------------

def test_functions_workers_and_triggers_list_what_the_engine_lists(shared, web):
    functions = web.get("/_iii/functions").json()["functions"]
    plain = next(f for f in functions if f["function_id"] == "web::plain")
    assert len(plain["workers"]) == 1
    assert "engine::functions::list" in {f["function_id"] for f in functions}

    workers = web.get("/_iii/workers").json()["workers"]
    worker_pids = {w.get("pid") for w in workers}
    assert {p.pid for p in shared[0].procs if p.name in ("engine", "worker")} <= worker_pids

    triggers = web.get("/_iii/triggers").json()["triggers"]
    plain_route = next(t for t in triggers if t["function_id"] == "web::plain")
    assert plain_route["type"] == "http" and plain_route["active"] is True
    assert plain_route["config"]["api_path"] == "/plain"


# -- invoke -----------------------------------------------------------------------

def test_invoke_returns_the_function_result_as_json(web):
    reply = invoke(web, "web::plain", {})
    assert reply.status == 200
    assert reply.json() == {"hello": "world"}


def test_invoke_passes_the_body_as_the_payload_and_returns_a_result_verbatim(web):
    reply = invoke(web, "web::show_payload", {"a": [1, 2]})  # not read as an HTTP response
    assert reply.status == 200
    assert reply.json() == {"status_code": 200, "body": {"a": [1, 2]}}


def test_invoke_of_a_failing_function_is_500_with_its_message_but_no_stacktrace(web):
    reply = invoke(web, "web::fail", {})
    assert reply.status == 500
    error = envelope(reply)
    assert error["code"] == "invocation_failed"
    assert "secret database password in this message" in error["message"]
    assert b"Traceback" not in reply.body


def test_invoke_of_an_unknown_function_is_404_function_not_found(web):
    reply = invoke(web, "nobody::here", {})
    assert reply.status == 404
    assert envelope(reply)["code"] == "function_not_found"


def test_invoke_slower_than_timeout_ms_is_504_timeout(web):
    reply = invoke(web, "web::slow", {"query_params": {"seconds": "1"}}, query="?timeout_ms=200")
    assert reply.status == 504
    assert envelope(reply)["code"] == "TIMEOUT"


def test_invoke_with_malformed_json_or_a_bad_timeout_is_400(web):
    bad_json = web.request("POST", "/_iii/invoke/web::plain", body='{"a": ')
    assert bad_json.status == 400 and envelope(bad_json)["code"] == "INVALID_JSON"
    bad_timeout = invoke(web, "web::plain", {}, query="?timeout_ms=soon")
    assert bad_timeout.status == 400 and envelope(bad_timeout)["code"] == "INVALID_TIMEOUT"


def test_invoke_refuses_json_no_payload_may_carry_and_bodies_over_the_limit(web):
    for body, what in ((b"[" * 100 + b"]" * 100, "nested 100 levels"),
                       (b'{"a": NaN}', "NaN is not a JSON number")):
        reply = post_chunked(web.port, "/_iii/invoke/web::show_payload", body)
        assert reply.status == 400 and reply.error["code"] == "INVALID_JSON", reply.body
        assert what in reply.error["message"]
    # A chunked body one byte over the limit used to reach the function cut to the limit.
    limit = 1024  # the shared web process's III_HTTP_BODY_LIMIT
    under = post_chunked(web.port, "/_iii/invoke/web::show_payload", b'"' + b"a" * (limit - 2) + b'"')
    assert under.status == 200 and len(under.json()["body"]) == limit - 2, under.body
    over = post_chunked(web.port, "/_iii/invoke/web::show_payload", b'"' + b"a" * (limit - 1) + b'"')
    assert over.status == 413 and over.error["code"] == "PAYLOAD_TOO_LARGE", over.body


@pytest.mark.parametrize("function_id", ["noservice", "Engine::workers::list"])
def test_invoke_of_an_id_that_cannot_be_a_function_is_400_naming_it(web, function_id):
    reply = invoke(web, function_id, {})
    assert reply.status == 400, reply.body
    error = envelope(reply)
    assert error["code"] == "invalid_function_id"
    assert repr(function_id) in error["message"]


# -- the reserved prefix ----------------------------------------------------------

def test_http_triggers_under_the_reserved_prefix_are_refused_at_registration():
    with pytest.raises(TriggerConfigError, match="reserved for the management API"):
        App("x").register_trigger(type="http", function_id="a::b",
                                  config={"api_path": "/_iii/mine", "http_method": "GET"})


def test_http_triggers_under_the_reserved_prefix_are_never_served(shared, web):
    cluster = shared[0]
    cluster.worker("tests.apps.http_reserved")
    assert web.wait_status("/not-reserved", 200).json() == {"shadowed": True}
    registry = Registry(redis.Redis.from_url(cluster.settings.redis_url, decode_responses=True),
                        cluster.settings.namespace)
    paths = ("/_iii/health", "/_iii/functions", "/_iii/mine", "_iii")
    try:
        for i, path in enumerate(paths):  # as if they had got into the registry somehow
            trigger = {"id": f"shadow{i}", "type": "http", "function_id": "reserved::shadow",
                       "config": {"api_path": path, "http_method": "GET"}, "metadata": {}}
            registry.r.hset(registry.keys.triggers, trigger["id"], json.dumps(trigger))
        registry.announce("trigger_registered", trigger_id="shadow")
        wait_for(lambda: any(t["id"] == "shadow2" for t in web.get("/_iii/triggers")
                             .json()["triggers"]), what="the sneaked triggers to be listed")
        assert web.get("/_iii/health").json()["status"] == "ok"
        assert "functions" in web.get("/_iii/functions").json()
        for path in ("/_iii/mine", "/_iii", "//_iii/mine", "/_iii/mine/"):
            reply = web.get(path)
            assert reply.status == 404, path
            assert envelope(reply)["code"] == "NOT_FOUND" and b"shadowed" not in reply.body
    finally:
        for i in range(len(paths)):
            registry.remove_trigger(f"shadow{i}")
        registry.r.close()


def test_a_wrong_method_on_a_management_route_is_405_with_an_allow_header(web):
    reply = web.request("DELETE", "/_iii/health")
    assert reply.status == 405
    assert reply.headers["Allow"] == "GET, HEAD"
    assert envelope(reply)["code"] == "METHOD_NOT_ALLOWED"


def test_only_the_iii_segment_itself_is_reserved():
    assert is_reserved("/_iii") and is_reserved("/_iii/health") and is_reserved("//_iii/x/")
    assert not is_reserved("/_iiix/health") and not is_reserved("/api/_iii")


# -- access -----------------------------------------------------------------------

def test_with_a_token_set_a_request_without_it_is_401_with_www_authenticate(guarded):
    for path in ("/_iii/health", "/_iii/nothing-here"):  # unknown paths reveal nothing either
        reply = guarded.get(path)
        assert reply.status == 401, path
        assert reply.headers["WWW-Authenticate"] == "Bearer"
        assert envelope(reply)["code"] == "UNAUTHORIZED"


def test_with_a_token_set_a_wrong_token_is_401(guarded):
    for header in ("Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"):
        reply = guarded.get("/_iii/health", headers={"Authorization": header})
        assert reply.status == 401, header
        assert TOKEN not in reply.text


def test_with_a_token_set_the_right_bearer_token_is_answered(guarded):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert guarded.get("/_iii/health", headers=auth).status == 200
    assert invoke(guarded, "web::plain", {}, headers=auth).json() == {"hello": "world"}
    assert guarded.get("/plain").status == 200  # user routes need no token


def test_without_a_token_a_loopback_client_is_answered(web):
    assert web.get("/_iii/workers").status == 200  # the test client connects from 127.0.0.1


@pytest.mark.parametrize(("addr", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("10.0.0.1", False), ("192.168.1.20", False), ("::ffff:10.0.0.1", False), ("fe80::1", False),
    ("", False), (None, False), ("not-an-address", False),
])
def test_without_a_token_only_loopback_clients_are_allowed(addr, loopback):
    assert is_loopback(addr) is loopback
    assert client_allowed(addr, Settings()) is loopback
    assert client_allowed(addr, Settings(api_token=TOKEN)) is True  # the token decides


def test_a_refused_remote_client_gets_403_saying_to_set_iii_api_token():
    from flask import Flask

    with Flask(__name__).app_context():
        response = access_denied(None, "203.0.113.9", Settings())
        assert response is not None and response.status_code == 403
        error = json.loads(response.get_data())["error"]
        assert error["code"] == "FORBIDDEN" and "set III_API_TOKEN" in error["message"]
        assert access_denied(None, "127.0.0.1", Settings()) is None


def test_iii_api_token_is_read_from_the_environment_kept_by_child_env_and_hidden_from_repr():
    s = Settings.from_env({"III_API_TOKEN": TOKEN})
    assert s.api_token == TOKEN
    assert Settings.from_env(s.child_env()) == s
    assert TOKEN not in repr(s)
    assert "III_API_TOKEN" not in Settings().child_env()
    with pytest.raises(ConfigError, match="III_API_TOKEN"):
        Settings.from_env({"III_API_TOKEN": "two words"})
    with pytest.raises(ConfigError, match="unknown setting III_API_TOKN"):
        Settings.from_env({"III_API_TOKN": TOKEN})
