"""``iii-broker``'s commands, run as a user runs them, against real engine and worker processes."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.helpers import ROOT, bin_cmd, free_port, wait_for


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(bin_cmd("iii-broker", *args), env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def clean_env(settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
    env.update(settings.child_env(), **extra)
    return env


@pytest.fixture
def running(cluster):
    cluster.engine()
    cluster.worker()
    return cluster


def test_trigger_prints_exactly_the_result_as_json(running):
    done = cli(running.env, "trigger", "test::add", '{"a": 2, "b": 3}')
    assert (done.returncode, done.stdout, done.stderr) == (0, '{"sum": 5}\n', "")


def test_trigger_without_a_payload_sends_null(running):
    done = cli(running.env, "trigger", "test::echo")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["payload"] is None


def test_a_failing_function_exits_1_printing_the_error_and_its_stacktrace(running):
    done = cli(running.env, "trigger", "test::fail", '{"x": 1}')
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("iii-broker: invocation_failed: ValueError: bad input: {'x': 1}\n")
    assert 'raise ValueError(f"bad input: {payload!r}")' in done.stderr  # the handler's stacktrace


def test_an_unknown_function_exits_1_with_function_not_found(running):
    done = cli(running.env, "trigger", "test::missing", "{}")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("iii-broker: function_not_found: ")
    assert "'test::missing'" in done.stderr


def test_void_prints_nothing_exits_0_and_the_function_still_runs(running, store, settings):
    done = cli(running.env, "trigger", "test::record", '{"id": 42}', "--void")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    key = f"{settings.namespace}:test:records"
    wait_for(lambda: store.lrange(key, 0, -1) == ["42"], what="the void call to run")


def test_a_call_slower_than_timeout_ms_exits_1_with_timeout(running, store, settings):
    done = cli(running.env, "trigger", "test::slow", '{"seconds": 2, "id": "cli"}',
               "--timeout-ms", "200")
    finished = store.lrange(f"{settings.namespace}:test:finished", 0, -1)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("iii-broker: TIMEOUT: no answer from 'test::slow'")
    assert "cli" not in finished, "the CLI waited for the function instead of timing out"
    wait_for(lambda: "cli" in store.lrange(f"{settings.namespace}:test:started", 0, -1),
             what="the timed-out call to have been delivered all the same")


def test_the_timeout_message_names_the_timeout_that_was_given(running):
    done = cli(running.env, "trigger", "test::slow", '{"seconds": 1}', "--timeout-ms", "200")
    assert done.stderr.startswith(
        "iii-broker: TIMEOUT: no answer from 'test::slow' within 200 ms"), done.stderr


def test_a_payload_that_is_not_json_exits_2_with_a_clear_message(settings):
    done = cli(clean_env(settings), "trigger", "test::add", "{a: 1}")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("iii-broker: payload is not valid JSON: ")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_a_timeout_that_is_not_a_positive_integer_is_a_usage_error(settings, value):
    done = cli(clean_env(settings), "trigger", "test::add", "{}", "--timeout-ms", value)
    assert done.returncode == 2
    assert "--timeout-ms" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_invalid_function_id_exits_1_naming_it(settings):
    done = cli(clean_env(settings), "trigger", "not valid", "{}")
    assert done.returncode == 1
    assert done.stderr.startswith(
        "iii-broker: invalid_function_id: function id 'not valid' is malformed")


def test_functions_lists_every_live_function_with_its_worker_count(running):
    done = cli(running.env, "functions")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["FUNCTION", "WORKERS", "DESCRIPTION"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert rows["test::add"] == ["1"]
    assert rows["engine::functions::list"][0] == "1"
    assert {"test::fail", "test::slow", "test::async_add", "engine::workers::register"} <= set(rows)


def test_functions_json_is_parseable_and_names_the_workers(running):
    done = cli(running.env, "functions", "--json")
    assert done.returncode == 0, done.stderr
    functions = {f["function_id"]: f for f in json.loads(done.stdout)["functions"]}
    from tests.apps.basic import app
    assert set(app.functions) <= set(functions)
    assert len(functions["test::add"]["workers"]) == 1


def test_workers_lists_the_engine_and_the_worker_with_their_pids(running):
    worker = running.procs[1]
    done = cli(running.env, "workers")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:4] == ["WORKER", "APP", "KIND", "PID"]
    by_pid = {line.split()[3]: line.split() for line in lines[1:]}
    assert by_pid[str(worker.pid)][1:3] == ["basic", "worker"]
    assert by_pid[str(running.procs[0].pid)][1:3] == ["engine", "engine"]
    assert "test::add," in by_pid[str(worker.pid)]


def test_workers_json_is_parseable(running):
    done = cli(running.env, "workers", "--json")
    workers = json.loads(done.stdout)["workers"]
    mine = [w for w in workers if w["pid"] == running.procs[1].pid]
    assert len(mine) == 1
    assert mine[0]["name"] == "basic" and mine[0]["alive"] is True
    assert "test::add" in mine[0]["functions"]


def test_triggers_lists_each_trigger_and_whether_it_is_active(running):
    done = cli(running.env, "triggers")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["TRIGGER", "TYPE", "FUNCTION", "ACTIVE", "CONFIG"]
    assert len(lines) == 2
    cells = lines[1].split(None, 4)
    assert cells[1:4] == ["http", "test::add", "yes"]
    assert json.loads(cells[4]) == {"api_path": "/add", "http_method": "POST"}


def test_triggers_json_is_parseable(running):
    done = cli(running.env, "triggers", "--json")
    (trigger,) = json.loads(done.stdout)["triggers"]
    assert trigger["type"] == "http" and trigger["function_id"] == "test::add"
    assert trigger["active"] is True
    assert trigger["config"] == {"api_path": "/add", "http_method": "POST"}


def test_listing_without_an_engine_says_none_is_running(settings, store):
    done = cli(clean_env(settings), "functions")
    assert done.returncode == 1
    assert f"no engine is running in namespace '{settings.namespace}'" in done.stderr
    assert "iii-broker engine" in done.stderr


@pytest.mark.parametrize("args", [("trigger", "test::add", '{"a": 1, "b": 2}'), ("functions",),
                                  ("workers", "--json")])
def test_an_unreachable_broker_exits_1_naming_the_url_without_its_password(args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
    env["III_BROKER_URL"] = "redis://:secret@127.0.0.1:1/0"
    started = time.monotonic()
    done = cli(env, *args)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "redis://:***@127.0.0.1:1/0" in out
    assert "cannot reach" in out
    assert "secret" not in out
    assert "Traceback" not in out
    assert time.monotonic() - started < 20


def test_an_unknown_setting_exits_2_naming_it(settings):
    done = cli(clean_env(settings, III_BROKR_URL="redis://x/0"), "functions")
    assert done.returncode == 2
    assert "unknown setting III_BROKR_URL" in done.stderr
    assert "Traceback" not in done.stderr


def cli_input(env: dict[str, str], *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(bin_cmd("iii-broker", *args), env=env, cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_trigger_reads_the_payload_from_stdin_with_a_dash(running):
    done = cli_input(running.env, "trigger", "test::add", "-", stdin='{"a": 2, "b": 40}')
    assert (done.returncode, done.stdout) == (0, '{"sum": 42}\n'), done.stderr


def test_trigger_reads_the_payload_from_a_file_with_an_at_sign(running, tmp_path):
    big = {"a": 1, "b": 2, "pad": "x" * 300_000}  # past what one argument may carry
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(big))
    done = cli(running.env, "trigger", "test::echo", f"@{path}")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["payload"] == big


def test_a_payload_file_that_cannot_be_read_exits_2_naming_it(settings, tmp_path):
    done = cli(clean_env(settings), "trigger", "test::add", f"@{tmp_path}/missing.json")
    assert done.returncode == 2
    assert done.stderr.startswith(f"iii-broker: cannot read the payload from {tmp_path}/missing.json")


def test_a_payload_too_deep_for_json_is_an_error_not_a_traceback(settings):
    done = cli_input(clean_env(settings), "trigger", "test::add", "-",
                     stdin="[" * 5000 + "]" * 5000)
    assert done.returncode == 2
    assert done.stderr.startswith("iii-broker: payload is nested too deeply")
    assert "III_PAYLOAD_MAX_DEPTH" in done.stderr and "Traceback" not in done.stderr


def test_a_payload_past_the_depth_limit_is_invalid_payload_naming_the_limit(settings):
    done = cli(clean_env(settings), "trigger", "test::add", "[" * 100 + "]" * 100)
    assert done.returncode == 1
    assert done.stderr.startswith("iii-broker: invalid_payload: payload for 'test::add' is "
                                  "nested deeper than the limit of 64")


def test_deadletters_lists_what_workers_refused_and_drops_by_id_or_all(running, store, settings):
    queue = f"{settings.namespace}.fn.test::add"
    store.lpush(queue, "<<not a message>>")
    store.lpush(queue, "<<nor this one>>")
    key = f"{settings.namespace}:deadletter"
    wait_for(lambda: store.llen(key) == 2, what="two dead letters")

    listed = cli(running.env, "deadletters")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "WHEN", "QUEUE", "REASON", "PREVIEW"]
    assert len(rows) == 2 and all("not a Kombu message" in r for r in rows)
    assert "<<nor this one>>" in rows[0] and "<<not a message>>" in rows[1]  # newest first
    letters = json.loads(cli(running.env, "deadletters", "--json").stdout)["letters"]
    assert [x["body"] for x in letters] == ["<<nor this one>>", "<<not a message>>"]

    dropped = cli(running.env, "deadletters", "drop", letters[0]["id"])
    assert dropped.returncode == 0, dropped.stderr
    assert [json.loads(x)["body"] for x in store.lrange(key, 0, -1)] == ["<<not a message>>"]
    unknown = cli(running.env, "deadletters", "drop", "feedfacecafe")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("iii-broker: no dead letter with id feedfacecafe")

    refused = cli(running.env, "deadletters", "drop", "--all")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert cli(running.env, "deadletters", "drop", "--all", "--yes").returncode == 0
    assert store.llen(key) == 0


@pytest.mark.parametrize("args, says", [
    (["trigger", "x::y", "--timeout-ms", "0"], "argument --timeout-ms: must be positive, not 0"),
    (["nosuch"], "argument COMMAND: invalid choice: 'nosuch'"),
    (["queues", "purge"], "the following arguments are required: QUEUE"),
])
def test_usage_errors_of_subcommands_carry_the_same_prefix_as_every_other_error(args, says):
    done = subprocess.run(bin_cmd("iii-broker", *args), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].startswith(f"iii-broker: {says}"), done.stderr


@pytest.mark.parametrize("args", [
    ["functions"], ["workers"], ["triggers"], ["queues"], ["dlq", "list", "default"],
    ["queues", "purge", "default", "--yes"], ["deadletters"], ["trigger", "math::add", "{}"],
])
def test_every_command_says_in_one_line_that_redis_cannot_be_reached(args):
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
    done = subprocess.run(bin_cmd("iii-broker", *args), capture_output=True, text=True,
                          timeout=60, env={**env, "III_BROKER_URL": url})
    assert done.returncode == 1, done
    assert done.stderr.startswith(f"iii-broker: broker_unavailable: cannot reach Redis at {url}")
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
