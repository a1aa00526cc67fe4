"""Handlers' logs: captured with their trace, stored in Redis within the count and age
limits, listed by ``engine::logs::list`` and ``iii-broker logs``, and fed to ``log``
triggers that never fire for a log handler's own records."""

from __future__ import annotations

import json
import subprocess
import uuid
from typing import Any

import pytest
import redis

from iii_broker.errors import IIIError
from iii_broker.store import Keys
from tests.conftest import Cluster
from tests.helpers import bin_cmd, wait_for

LOGS_APP = "tests.observability.logs_app"


def listed(c: Cluster, **query: Any) -> list[dict[str, Any]]:
    return c.trigger("engine::logs::list", query)["logs"]


def cli(c: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(bin_cmd("iii-broker", "logs", *args), env=c.env, capture_output=True,
                          text=True, timeout=30)


def test_records_carry_the_trace_and_iii_broker_logs_lists_one_trace(cluster: Cluster) -> None:
    c = cluster
    c.engine()
    c.worker(LOGS_APP)
    tag = f"t-{uuid.uuid4().hex[:6]}"
    out = c.trigger("logs::speak", {"tag": tag, "nested": True})
    c.trigger("logs::speak", {"tag": f"{tag}-other"})  # another trace: not listed
    trace = out["trace_id"]
    got = wait_for(lambda: len(listed(c, trace_id=trace)) == 5 and listed(c, trace_id=trace),
                   timeout=15, what="the 5 records of the trace")
    assert [r["body"] for r in reversed(got)] == \
        [f"{tag} info", f"{tag} warn", f"{tag} error", f"{tag} inner", f"{tag} boom"]
    assert {r["trace_id"] for r in got} == {trace}
    by_body = {r["body"]: r for r in got}
    warn = by_body[f"{tag} warn"]
    assert (warn["severity_number"], warn["severity_text"]) == (13, "WARN")
    assert warn["function_id"] == "logs::speak" and warn["span_id"] == out["span_id"]
    assert warn["quiet"] is False
    assert warn["attributes"]["sku"] == "A1"  # ctx.logger keeps a call's extra fields
    error = by_body[f"{tag} error"]  # plain logging, with extra attributes
    assert error["attributes"]["logger.name"] == "plain.user"
    assert error["attributes"]["order_id"] == 42
    boom = by_body[f"{tag} boom"]
    assert boom["function_id"] == "logs::inner" and boom["span_id"] != out["span_id"]
    assert boom["attributes"]["exception.type"] == "ZeroDivisionError"
    assert "1 / 0" in boom["attributes"]["exception.stacktrace"]

    done = cli(c, "--trace", trace, "--json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["body"] for r in lines] == [r["body"] for r in reversed(got)]  # oldest first
    done = cli(c, "--trace", trace, "--level", "error")
    assert done.returncode == 0, done.stderr
    assert f"ERROR logs::speak trace={trace} {tag} error" in done.stdout
    assert f"{tag} boom" in done.stdout and "ZeroDivisionError" in done.stdout
    assert "info" not in done.stdout and "warn" not in done.stdout
    done = cli(c, "--function", "logs::inner", "--since", "5m", "--json")
    assert {json.loads(line)["function_id"] for line in done.stdout.splitlines()} == \
        {"logs::inner"}

    follow = c.spawn("logs-follow", bin_cmd("iii-broker", "logs", "--follow", "--function",
                                            "logs::inner"))
    wait_for(lambda: f"{tag} boom" in follow.output(), timeout=15, what="the first page")
    c.trigger("logs::speak", {"tag": f"{tag}-later", "nested": True})
    wait_for(lambda: f"{tag}-later boom" in follow.output(), timeout=15,
             what="--follow to print a new record")
    assert f"{tag}-later warn" not in follow.output()  # another function's

    assert [r["body"] for r in listed(c, trace_id=trace, severity_min="warn", limit=2,
                                      offset=1)] == [f"{tag} error", f"{tag} warn"]
    everything = listed(c, limit=10_000)
    assert everything and not [r for r in everything if r["function_id"].startswith("engine::")]
    with pytest.raises(IIIError, match="severity_min is 'loud'") as caught:
        listed(c, severity_min="loud")
    assert caught.value.code == "invalid_argument"
    with pytest.raises(IIIError, match="limit must be an integer"):
        listed(c, limit="ten")
    with pytest.raises(IIIError, match="trace_id 'nope' is not a trace id"):
        listed(c, trace_id="nope")
    assert [r["body"] for r in listed(c, trace_id=trace.upper(), limit=1)] == [f"{tag} boom"]
    done = cli(c, "--since", "yesterday")
    assert done.returncode == 2 and "--since 'yesterday' is not a duration" in done.stderr
    done = cli(c, "--trace", "nope")
    assert done.returncode == 2 and "--trace 'nope' is not a trace id" in done.stderr


def test_records_are_kept_within_the_count_and_age_limits(cluster: Cluster,
                                                          store: redis.Redis) -> None:
    c = cluster
    keys = Keys(c.settings.namespace)
    old = {"key": "x", "event": "INFO", "ts": "1000",
           "meta": json.dumps({"body": "ancient", "timestamp_unix_nano": 10**12})}
    for i in range(1, 51):  # stored long before the 60 s age limit
        store.xadd(keys.logs, old, id=f"{1000 + i}-0")
    c.engine(config="[modules.observability]\nlogs_max_count = 100\nlogs_max_age_s = 60\n"
                    "level = \"debug\"\n")  # the worker logs at INFO: ctx.logger.debug is kept
    c.worker(LOGS_APP)
    tag = f"m-{uuid.uuid4().hex[:6]}"
    c.trigger("logs::many", {"tag": tag, "n": 300})

    def trimmed() -> bool:
        entries = store.xrange(keys.logs)
        return len(entries) == 100 and f"{tag} n=299" in entries[-1][1]["meta"] \
            and not any("ancient" in e[1]["meta"] for e in entries)
    wait_for(trimmed, timeout=20, what="the records trimmed to the newest 100")
    got = listed(c, function_id="logs::many", limit=1000)
    assert {r["severity_text"] for r in got} == {"DEBUG"}
    assert [r["body"] for r in got] == [f"{tag} n={i}" for i in range(299, 199, -1)]
    # under the worker's own level these took the direct way (no LogRecord): the same record
    attributes = got[0]["attributes"]
    assert attributes["logger.name"] == "iii.fn.logs::many" and attributes["i"] == 299
    assert attributes["code.function"] == "many" and \
        attributes["code.filepath"].endswith("logs_app.py")
    ttl = store.ttl(keys.log_trace(got[0]["trace_id"]))
    assert 0 < ttl <= 60  # the trace index goes with the records


def calls(store: redis.Redis, c: Cluster, fn: str, tag: str) -> list[dict[str, Any]]:
    raw = store.lrange(f"{c.settings.namespace}:test:log-calls", 0, -1)
    return [x["record"] for x in map(json.loads, raw) if x["fn"] == fn and tag in x["record"]["body"]]


def test_a_log_trigger_fires_at_its_level_and_never_for_its_own_records(
        cluster: Cluster, store: redis.Redis) -> None:
    c = cluster
    c.engine()
    c.worker(LOGS_APP)
    keys = Keys(c.settings.namespace)
    tag = f"trig-{uuid.uuid4().hex[:6]}"
    c.trigger("logs::speak", {"tag": tag})
    wait_for(lambda: len(calls(store, c, "logs::on_any", tag)) >= 3, timeout=15,
             what="the log trigger of every level to fire 3 times")
    # the handler's own records ("trig saw", and "trig chatty about" of the function it
    # called) are stored, and every trigger has read past them
    wait_for(lambda: len(listed(c, function_id="logs::chatty")) >= 3, timeout=15,
             what="the chatty records")

    def read_past_everything() -> bool:
        last = store.xrevrange(keys.logs, count=1)[0][0]
        cursors = store.hgetall(keys.log_cursors)
        return len(cursors) == 2 and set(cursors.values()) == {last}
    wait_for(read_past_everything, timeout=15, what="both log triggers to read every record")

    warned = calls(store, c, "logs::on_warn", tag)
    assert sorted((r["severity_text"], r["body"]) for r in warned) == \
        [("ERROR", f"{tag} error"), ("WARN", f"{tag} warn")]  # not the info one
    seen = calls(store, c, "logs::on_any", tag)
    assert sorted(r["body"] for r in seen) == [f"{tag} error", f"{tag} info", f"{tag} warn"]
    assert all(r["service_name"] == "iii-broker" and r["trace_id"] for r in seen)
    own = listed(c, function_id="logs::on_any") + listed(c, function_id="logs::chatty")
    assert len(own) == 6 and all(r["quiet"] for r in own)  # stored, quiet, fired nothing
