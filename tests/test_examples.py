"""examples/quickstart.py, served by a real worker."""

from __future__ import annotations

import pytest

from examples import quickstart
from tests.helpers import wait_for


@pytest.fixture
def quick(cluster):
    cluster.engine()
    cluster.worker("examples.quickstart", concurrency=2)
    return cluster


def test_the_quickstart_defines_its_functions_an_http_and_a_cron_trigger():
    app = quickstart.app
    assert set(app.functions) == {"math::add", "math::sum_of_squares", "math::square",
                                  "math::add_http", "reports::minutely"}
    assert app.functions["math::square"].is_async
    assert app.functions["math::sum_of_squares"].wants_context
    http, cron = app.triggers
    assert (http.type, http.function_id) == ("http", "math::add_http")
    assert http.config == {"api_path": "/add", "http_method": "POST"}
    assert (cron.type, cron.function_id) == ("cron", "reports::minutely")
    assert cron.config == {"expression": "0 * * * * *"}


def test_math_add_adds(quick):
    assert quick.client.trigger("math::add", {"a": 2, "b": 3}) == {"sum": 5}
    assert quick.client.trigger("math::add", {"a": -1.5, "b": 0.5}) == {"sum": -1.0}


def test_the_async_math_square_squares(quick):
    assert quick.client.trigger("math::square", {"x": 7}) == {"result": 49}


def test_math_sum_of_squares_calls_math_square_twice(quick):
    assert quick.client.trigger("math::sum_of_squares", {"a": 3, "b": 4}) == {"result": 25}


def test_nested_calls_of_the_quickstart_work_at_concurrency_1(cluster):
    cluster.engine()
    cluster.worker("examples.quickstart", concurrency=1)
    assert cluster.client.trigger("math::sum_of_squares", {"a": 1, "b": 2}, timeout_ms=5000) == {
        "result": 5}


def test_a_bad_payload_reaches_the_caller_as_the_handlers_error(quick):
    from iii_broker import InvocationFailed
    with pytest.raises(InvocationFailed, match="KeyError"):
        quick.client.trigger("math::add", {"a": 1})


def test_the_registry_shows_the_quickstart_descriptions_and_its_active_triggers(quick):
    functions = {f["function_id"]: f for f in
                 quick.client.trigger("engine::functions::list", {})["functions"]}
    assert functions["math::add"]["description"] == "Add two numbers"
    assert functions["math::sum_of_squares"]["description"] == "a² + b², using math::square twice"
    triggers = quick.client.trigger("engine::triggers::list", {})["triggers"]
    assert {(t["function_id"], t["type"], t["active"]) for t in triggers} == {
        ("math::add_http", "http", True), ("reports::minutely", "cron", True)}


def test_post_add_over_http_adds_and_refuses_a_bad_body(quick):
    from tests.web.conftest import start_web

    web = start_web(quick)
    reply = web.request("POST", "/add", b'{"a": 2, "b": 3}',
                        headers={"Content-Type": "application/json"})
    assert (reply.status, reply.json()) == (200, {"sum": 5})
    reply = web.request("POST", "/add", b'{"a": "two"}', headers={"Content-Type": "application/json"})
    assert reply.status == 400 and "send a JSON object" in reply.json()["error"]


def test_a_refused_body_is_logged_with_its_trace_and_the_run_is_in_the_history(quick):
    """What the quickstart's docstring promises: `iii-broker invocations` and `logs` show it."""
    request = {"body": [1, 2], "headers": {}, "method": "POST", "path": "/add"}
    answer = quick.client.trigger("math::add_http", request)
    assert answer["status_code"] == 400
    logs = wait_for(lambda: quick.client.trigger("engine::logs::list", {
        "function_id": "math::add_http", "severity_min": "warn"})["logs"], timeout=10,
        what="the warning in the log store")
    assert "refused a body that is not {a, b}: [1, 2]" in logs[0]["body"]
    runs = wait_for(lambda: quick.client.trigger("engine::invocations::list", {
        "function_id": "math::add_http"})["invocations"], timeout=10, what="the run's record")
    assert runs[0]["status"] == "succeeded" and runs[0]["trace_id"] == logs[0]["trace_id"]
