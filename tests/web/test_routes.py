"""Matching request paths against http triggers (no Redis needed)."""

from __future__ import annotations

from iii_broker import Settings
from iii_broker.modules import EngineConfig
from iii_broker.modules.http.routes import Route, RouteTable
from iii_broker.procs import process_commands


def trigger(path: str, method: str = "GET", fid: str = "f::x", active: bool = True) -> dict:
    return {"type": "http", "function_id": fid, "active": active,
            "config": {"api_path": path, "http_method": method}}


def table(*triggers: dict) -> RouteTable:
    t = RouteTable(Settings())
    routes = sorted((Route.from_trigger(x) for x in triggers),
                    key=lambda r: (r.specificity, r.api_path, r.method))
    t.routes = tuple(routes)
    return t


def test_parameters_match_one_non_empty_segment_and_slashes_at_the_ends_do_not_count():
    t = table(trigger("users/:id"))
    assert t.match("/users/7", "GET").path_params == {"id": "7"}
    assert t.match("/users/7/", "GET").path_params == {"id": "7"}
    assert t.match("/users/7/x", "GET").route is None
    assert t.match("/users//", "GET").route is None
    assert t.match("/users", "GET").route is None


def test_a_static_segment_is_preferred_to_a_parameter_whatever_the_order():
    t = table(trigger("/a/:x/c", fid="f::param"), trigger("/a/b/:y", fid="f::static"))
    assert t.match("/a/b/c", "GET").route.function_id == "f::static"
    assert t.match("/a/z/c", "GET").route.function_id == "f::param"


def test_a_path_with_other_methods_lists_them_as_allowed():
    t = table(trigger("/items", "POST"), trigger("/items", "PUT"), trigger("/items/:id"))
    found = t.match("/items", "GET")
    assert found.route is None and found.allowed == ("POST", "PUT")
    assert t.match("/nothing", "GET").allowed == ()


def test_up_starts_the_web_process_with_the_engine_the_worker_and_the_modules_processes():
    commands = process_commands("examples.quickstart", 2)
    assert list(commands) == ["engine", "worker", "web", "beat", "stream", "gateway"]
    assert commands["web"][-2:] == ["iii_broker", "web"]
    assert commands["beat"][-2:] == ["iii_broker", "beat"]
    assert commands["stream"][-2:] == ["iii_broker", "stream"]
    assert commands["gateway"][-2:] == ["iii_broker", "gateway"]


def test_up_starts_no_beat_when_the_cron_module_is_disabled():
    enabled = EngineConfig.from_dict({"modules": {"cron": {"enabled": False}}}).modules
    assert list(process_commands("examples.quickstart", 2, enabled)) == \
        ["engine", "worker", "web", "stream", "gateway"]
    enabled = EngineConfig.from_dict({"modules": {"stream": {"enabled": False},
                                                  "gateway": {"enabled": False}}}).modules
    assert list(process_commands("examples.quickstart", 2, enabled)) == \
        ["engine", "worker", "web", "beat"]
