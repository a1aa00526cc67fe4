"""An ``api_path`` needs its leading slash and a name of its own for every parameter: a
path without them is refused at registration, naming the problem."""

from __future__ import annotations

import pytest

from iii_broker import App
from iii_broker.errors import IIIError, TriggerConfigError
from iii_broker.modules.http.paths import path_problem
from tests.helpers import bin_cmd


@pytest.mark.parametrize(("api_path", "problem"), [
    ("users/:id", "'users/:id': it must start with '/' (e.g. '/users/:id')"),
    ("/a/:id/:id", "parameter ':id' appears twice"),
    ("/e/:", "a parameter needs a name after ':'"),
    ("/e/:/x", "a parameter needs a name after ':'"),
])
def test_a_bad_api_path_is_refused_when_the_trigger_registers(api_path, problem):
    app = App("t")
    app.register_function("paths::show", lambda payload: payload)
    with pytest.raises(TriggerConfigError, match="'api_path' is") as info:
        app.register_trigger("http", "paths::show", {"api_path": api_path, "http_method": "GET"})
    assert problem in str(info.value)
    assert app.triggers == []


@pytest.mark.parametrize("api_path", ["/", "/users/:id", "/users/:id/", "/a/:x/b/:y", "/v1.0/:id"])
def test_good_api_paths_pass(api_path):
    assert path_problem(api_path) is None


def test_a_worker_declaring_a_bad_api_path_does_not_start_and_says_why(cluster):
    cluster.engine()
    bad = cluster.spawn("worker", bin_cmd("iii-worker", "-A", "tests.apps.http_bad_path"))
    code = bad.wait(timeout=30)
    out = bad.output()
    assert code != 0, out
    assert "'/a/:id/:id': parameter ':id' appears twice" in out, out


def test_the_engine_refuses_to_add_a_trigger_with_a_bad_api_path(cluster):
    cluster.engine()
    cluster.worker("tests.apps.http_app")
    binding = {"type": "http", "function_id": "web::plain",
               "config": {"api_path": "/e/:", "http_method": "GET"}}
    with pytest.raises(IIIError) as info:
        cluster.trigger("engine::register_trigger", binding)
    said = f"{info.value.code}: {info.value.message}"  # the engine's invalid_trigger, relayed
    assert "invalid_trigger" in said and "a parameter needs a name after ':'" in said, said
