"""Engine-owned triggers: ``engine::register_trigger`` / ``engine::unregister_trigger`` and
``iii-broker triggers add|remove``. They belong to no worker: only unregistering removes
them, whatever workers and engines do meanwhile."""

from __future__ import annotations

import json
import signal

import pytest

from iii_broker import IIIError
from tests.helpers import wait_for
from tests.test_cli import cli
from tests.triggers_support import columns, triggers, wait_answer
from tests.web.conftest import start_web

ECHO = {"type": "http", "function_id": "test::echo",
        "config": {"api_path": "/engine-echo", "http_method": "GET"}}


def _register(cluster, binding=ECHO) -> str:
    out = cluster.client.trigger("engine::register_trigger", binding)
    assert set(out) == {"id"} and isinstance(out["id"], str) and out["id"], out
    return out["id"]


def _unregister(cluster, trigger_id: str) -> dict:
    return cluster.client.trigger("engine::unregister_trigger", {"id": trigger_id})


def _entry(cluster, trigger_id: str) -> dict | None:
    return next((t for t in triggers(cluster) if t["id"] == trigger_id), None)


@pytest.fixture
def running(cluster):
    cluster.engine()
    cluster.worker()  # tests.apps.basic: test::add has a declared http trigger
    return cluster


def test_register_trigger_gives_an_id_and_the_same_binding_again_gives_the_same_id(running):
    first = _register(running)
    assert _register(running) == first

    entry = _entry(running, first)
    assert entry is not None
    assert (entry["type"], entry["function_id"], entry["config"]) == (
        "http", "test::echo", ECHO["config"])
    assert entry["active"] is True and entry["owner"] == "engine"
    assert [t["id"] for t in triggers(running)].count(first) == 1
    [declared] = [t for t in triggers(running) if t["function_id"] == "test::add"]
    assert declared["owner"] == "worker"


@pytest.mark.parametrize("binding, named", [
    ({"type": "htpp", "function_id": "test::echo", "config": {}}, "did you mean 'http'"),
    ({"type": "http", "function_id": "test::echo", "config": {"http_method": "GET"}},
     "api_path"),
    ({"type": "subscribe", "function_id": "test::echo", "config": {"topic": 7}}, "topic"),
], ids=["misspelt_type", "http_without_api_path", "topic_not_a_string"])
def test_a_bad_trigger_is_refused_with_invalid_trigger_naming_the_problem(running, binding, named):
    before = triggers(running)
    with pytest.raises(IIIError) as info:
        running.client.trigger("engine::register_trigger", binding)
    said = f"{info.value.code}: {info.value.message}"
    assert "invalid_trigger" in said and named in said, said
    assert triggers(running) == before


def test_unregister_trigger_removes_it_once_and_an_unknown_id_is_not_an_error(running):
    trigger_id = _register(running)
    assert _unregister(running, trigger_id) == {"id": trigger_id, "removed": True}
    assert _entry(running, trigger_id) is None
    assert _unregister(running, trigger_id) == {"id": trigger_id, "removed": False}
    assert _unregister(running, "no-such-trigger") == {"id": "no-such-trigger", "removed": False}
    # The worker's own trigger is untouched.
    assert [t["function_id"] for t in triggers(running)] == ["test::add"]


def test_an_engine_owned_trigger_outlives_its_workers_and_an_engine_restart(cluster):
    engine = cluster.engine()
    worker = cluster.worker()
    trigger_id = _register(cluster)

    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    wait_for(lambda: (e := _entry(cluster, trigger_id)) is not None and e["active"] is False,
             what="the engine-owned trigger to wait, inactive, without workers")

    engine.signal(signal.SIGTERM)
    assert engine.wait() == 0
    cluster.wait_registered(cluster.engine(wait=False))
    entry = _entry(cluster, trigger_id)
    assert entry is not None and entry["active"] is False and entry["owner"] == "engine"

    cluster.worker()
    entry = _entry(cluster, trigger_id)
    assert entry is not None and entry["active"] is True
    assert cluster.client.trigger("test::echo", {"x": 1})["payload"] == {"x": 1}

    assert _unregister(cluster, trigger_id)["removed"] is True
    assert _entry(cluster, trigger_id) is None


def test_the_web_process_serves_an_engine_owned_http_trigger_until_it_is_unregistered(running):
    web = start_web(running)
    assert web.get("/engine-echo").status == 404
    trigger_id = _register(running)
    reply = wait_answer(web, "GET", "/engine-echo?q=1", 200)
    assert reply.json()["function_id"] == "test::echo"
    assert reply.json()["payload"]["query_params"] == {"q": "1"}

    _unregister(running, trigger_id)
    wait_answer(web, "GET", "/engine-echo", 404)
    assert web.get("/add").status == 405  # the worker's POST /add is still routed


# -- iii-broker triggers add | remove ------------------------------------------------------


def test_triggers_add_prints_the_new_id_and_triggers_lists_it_as_engine_owned(running):
    config = json.dumps(ECHO["config"])
    done = cli(running.env, "triggers", "add", "http", "test::echo", config)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    trigger_id = lines[0].strip()
    entry = _entry(running, trigger_id)
    assert entry is not None and entry["owner"] == "engine" and entry["config"] == ECHO["config"]
    again = cli(running.env, "triggers", "add", "http", "test::echo", config)
    assert (again.returncode, again.stdout.strip()) == (0, trigger_id)

    listed = cli(running.env, "triggers")
    assert listed.returncode == 0, listed.stderr
    rows = {r["TRIGGER"]: r for r in columns(listed.stdout)}
    assert (rows[trigger_id]["FUNCTION"], rows[trigger_id]["ACTIVE"]) == ("test::echo", "yes")
    assert json.loads(rows[trigger_id]["CONFIG"]) == ECHO["config"]
    owners = {t["id"]: t["owner"] for t in
              json.loads(cli(running.env, "triggers", "--json").stdout)["triggers"]}
    assert owners.pop(trigger_id) == "engine"
    assert set(owners.values()) == {"worker"}  # test::add's declared route


def test_triggers_remove_exits_0_saying_whether_the_trigger_was_registered(running):
    trigger_id = _register(running)
    done = cli(running.env, "triggers", "remove", trigger_id)
    assert (done.returncode, done.stdout.strip()) == (0, f"removed {trigger_id}"), done.stderr
    assert _entry(running, trigger_id) is None
    again = cli(running.env, "triggers", "remove", trigger_id)
    assert (again.returncode, again.stdout.strip()) == (0, f"{trigger_id} was not registered"), \
        again.stderr


def test_triggers_add_with_a_bad_config_exits_1_with_invalid_trigger(running):
    before = triggers(running)
    bad = cli(running.env, "triggers", "add", "http", "test::echo", '{"http_method": "GET"}')
    assert bad.returncode == 1, bad.stdout
    assert "invalid_trigger" in bad.stderr and "api_path" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr
    assert triggers(running) == before


def test_triggers_add_with_a_config_too_deep_to_decode_exits_2_naming_it(running):
    deep = "[" * 5_000 + "]" * 5_000  # past the recursion limit of json.loads
    bad = cli(running.env, "triggers", "add", "http", "test::echo", deep)
    assert bad.returncode == 2, bad.stdout
    assert bad.stderr.startswith("iii-broker: CONFIG is nested too deeply"), bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("payload, code, says", [
    ({"worker": {"id": "w1"}, "functions": [{"function_id": "Engine::x"}]},
     "invalid_function_id", "reserved"),
    ({"worker": {"id": "w1"}, "functions": [{"function_id": "noservice"}]},
     "invalid_function_id", "service::name"),
    ({"functions": []}, "invalid_payload", "worker"),
])
def test_a_hand_built_registration_is_checked_like_an_app(running, payload, code, says):
    with pytest.raises(IIIError) as refused:
        running.client.trigger("engine::workers::register", payload, timeout_ms=5000)
    assert refused.value.code == code and says in refused.value.message, refused.value
    functions = running.client.trigger("engine::functions::list", {})["functions"]
    assert all(f["function_id"] not in ("Engine::x", "noservice") for f in functions)
