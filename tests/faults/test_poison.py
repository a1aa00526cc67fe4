"""Poison payloads at every entry point: nested too deep or too large for the limits
(III_PAYLOAD_MAX_DEPTH, III_PAYLOAD_MAX_BYTES), or for Python's JSON decoder at all.

Each case asserts what issue 9 asks: the caller gets a clear ``invalid_payload`` promptly
(no timeout), the worker keeps serving, a poison message that reached a worker is a dead
letter (once, not looping), and a restarted worker finds nothing poisonous to run again.
Real engine and worker processes on the test's own Redis (and the shared RabbitMQ)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
import uuid
from typing import Any

import pytest
from kombu import Connection, Producer, Queue

from iii_broker import App, Enqueue, InvalidArgument, PayloadError, PayloadLimitExceeded, Void
from iii_broker.envelope import decode, encode
from iii_broker.transport import function_exchange, function_queue
from tests.conftest import AMQP_URL
from tests.faults.support import report
from tests.helpers import ROOT, bin_cmd, wait_for

APP = "tests.apps.poison"
# Well past Python's recursion limit: json.loads itself raises RecursionError on it.
UNDECODABLE = 5000
PROMPT_S = 5.0
"""A refused call is answered in well under this (the calls' timeout is 10 s)."""


def nested(depth: int) -> Any:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def deep_text(depth: int) -> str:
    return "[" * depth + "]" * depth


def dead_letters(store: Any, settings: Any) -> list[dict[str, Any]]:
    return [json.loads(x) for x in store.lrange(f"{settings.namespace}:deadletter", 0, -1)]


def cli(env: dict[str, str], *args: str, stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(bin_cmd("iii-broker", *args), env=env, cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=60)


def still_serving(cluster: Any) -> None:
    started = time.monotonic()
    assert cluster.trigger("poison::add", {"a": 1, "b": 2}, timeout_ms=5000) == {"sum": 3}
    assert time.monotonic() - started < PROMPT_S


def restart_worker(cluster: Any, worker: Any, **env: str) -> Any:
    worker.stop()
    return cluster.worker(APP, **env)


@pytest.fixture
def running(cluster):
    cluster.engine()
    cluster.worker(APP)
    return cluster


# -- refused where they enter: nothing is published --------------------------------------


@pytest.mark.parametrize("action", [None, Void, Enqueue("default")], ids=["sync", "void", "enqueue"])
@pytest.mark.parametrize("payload,limit", [
    (nested(65), "III_PAYLOAD_MAX_DEPTH"),
    (nested(UNDECODABLE), "III_PAYLOAD_MAX_DEPTH"),
    ("x" * (8 * 1024 * 1024 + 1), "III_PAYLOAD_MAX_BYTES"),
], ids=["past-the-limit", "past-json", "huge"])
def test_trigger_refuses_a_poison_payload_before_publishing_anything(
        running, store, settings, action, payload, limit):
    with pytest.raises(PayloadLimitExceeded, match=limit) as info:
        running.trigger("poison::echo", payload, action=action)
    assert info.value.code == "invalid_payload"
    assert "'poison::echo'" in info.value.message
    assert store.llen(function_queue(settings, "poison::echo").name) == 0
    assert store.llen(f"{settings.namespace}.fn.poison::echo.q.default") == 0
    still_serving(running)


def test_a_payload_at_the_limit_still_goes_through(running):
    assert running.trigger("poison::echo", nested(64)) == nested(64)


@pytest.mark.parametrize("builtin", ["publish", "iii::durable::publish"])
def test_publishing_a_poison_payload_to_a_topic_is_refused_before_it_is_sent(running, builtin):
    with pytest.raises(PayloadLimitExceeded, match="III_PAYLOAD_MAX_DEPTH"):
        running.trigger(builtin, {"topic": "poison", "data": nested(UNDECODABLE)})
    assert isinstance(running.trigger(builtin, {"topic": "poison", "data": nested(10)}), dict)
    still_serving(running)


@pytest.mark.parametrize("function_id,payload,limit", [
    ("poison::deep_result", {"depth": 65}, "III_PAYLOAD_MAX_DEPTH"),
    ("poison::deep_result", {"depth": UNDECODABLE}, "III_PAYLOAD_MAX_DEPTH"),
    ("poison::big_result", {"chars": 8 * 1024 * 1024 + 1}, "III_PAYLOAD_MAX_BYTES"),
])
def test_a_result_over_the_limits_answers_invalid_payload_naming_the_function(
        running, function_id, payload, limit):
    started = time.monotonic()
    with pytest.raises(PayloadError, match=limit) as info:
        running.trigger(function_id, payload)
    assert time.monotonic() - started < PROMPT_S
    assert (info.value.code, info.value.function_id) == ("invalid_payload", function_id)
    assert repr(function_id) in info.value.message
    still_serving(running)


def test_the_cli_refuses_deep_and_huge_payloads_with_one_prefixed_line(running):
    deep = cli(running.env, "trigger", "poison::echo", deep_text(985))
    assert deep.returncode == 1, deep.stderr
    assert deep.stderr.startswith("iii-broker: invalid_payload: payload for 'poison::echo' "
                                  "is nested deeper than the limit of 64"), deep.stderr
    assert "III_PAYLOAD_MAX_DEPTH" in deep.stderr and "Traceback" not in deep.stderr

    undecodable = cli(running.env, "trigger", "poison::echo", "-", stdin=deep_text(UNDECODABLE))
    assert undecodable.returncode == 2, undecodable.stderr
    assert undecodable.stderr.startswith("iii-broker: payload is nested too deeply"), \
        undecodable.stderr

    huge = cli({**running.env, "III_PAYLOAD_MAX_BYTES": "100000"}, "trigger", "poison::echo",
               "-", stdin=json.dumps("x" * 200_000))
    assert huge.returncode == 1, huge.stderr
    assert huge.stderr.startswith("iii-broker: invalid_payload: "), huge.stderr
    assert "over the limit of 100000 bytes (III_PAYLOAD_MAX_BYTES)" in huge.stderr
    still_serving(running)


# -- reaching a worker anyway: dead-lettered, answered, never looping --------------------


def assert_never_reconnected(worker: Any) -> None:
    """The worker never took the poison for a broken connection (and looped on it)."""
    out = worker.output()
    for sign in ("connection lost", "lost the connection", "reconnecting"):
        assert sign not in out, out


def _push_raw_call(store: Any, settings: Any, function_id: str, body: str) -> str:
    """LPUSH a call onto the function's queue as another client could, with a reply list
    of the test's own; returns that list's name."""
    reply_to = f"{settings.namespace}.reply.poison-{uuid.uuid4().hex[:8]}"
    store.lpush(function_queue(settings, function_id).name, encode(
        body, exchange=function_exchange(settings, function_id).name,
        routing_key=function_id, reply_to=reply_to, correlation_id="poison-call"))
    return reply_to


def _reply_error(store: Any, reply_to: str) -> dict[str, Any]:
    item = store.brpop(reply_to, timeout=PROMPT_S)
    assert item is not None, "the caller got no answer"
    reply = json.loads(decode(item[1]).body)
    assert reply["invocation_id"] == "poison-call"
    return reply["error"]


@pytest.mark.parametrize("depth", [65, UNDECODABLE], ids=["past-the-limit", "past-json"])
def test_a_deep_call_pushed_raw_onto_a_function_queue_is_dead_lettered_and_answered(
        running, store, settings, depth):
    worker = running.procs[-1]
    body = ('{"invocation_id":"poison-call","function_id":"poison::echo","payload":'
            + deep_text(depth) + ',"deadline":null,"attempt":1,"metadata":{}}')
    pushed = time.monotonic()
    reply_to = _push_raw_call(store, settings, "poison::echo", body)

    error = _reply_error(store, reply_to)
    answered_s = time.monotonic() - pushed
    assert error["code"] == "invalid_payload"
    assert "III_PAYLOAD_MAX_DEPTH" in error["message"]
    still_serving(running)
    [letter] = dead_letters(store, settings)
    assert "nested" in letter["reason"] and letter["queue"] == "poison::echo"
    assert_never_reconnected(worker)

    worker = restart_worker(running, worker)
    still_serving(running)
    assert len(dead_letters(store, settings)) == 1, "the poison message came back"
    assert store.llen(function_queue(settings, "poison::echo").name) == 0
    assert_never_reconnected(worker)
    report(f"a call {depth} levels deep pushed raw onto a function queue (Redis)",
           f"invalid_payload after {answered_s:.2f} s; the worker served on, across a restart",
           "nothing: one dead letter, never redelivered", 0.0)


def test_a_call_over_the_workers_size_limit_is_dead_lettered_with_its_body_cut(
        cluster, store, settings):
    """A client with a higher limit (another cluster's settings) sends what this worker
    refuses."""
    cluster.engine()
    worker = cluster.worker(APP, III_PAYLOAD_MAX_BYTES="100000")
    roomy = App("roomy", settings=settings)  # 8 MiB
    try:
        with pytest.raises(PayloadError, match="III_PAYLOAD_MAX_BYTES") as info:
            roomy.trigger("poison::echo", "x" * 200_000, timeout_ms=10_000)
    finally:
        roomy.close()
    assert info.value.code == "invalid_payload"
    still_serving(cluster)
    [letter] = dead_letters(store, settings)
    assert letter["body_truncated"] is True and letter["body_length"] > 200_000
    assert len(letter["body"]) == 65_536
    assert_never_reconnected(worker)


def test_an_item_too_deep_to_be_an_envelope_is_dead_lettered_and_the_worker_serves_on(
        running, store, settings):
    worker = running.procs[-1]
    store.lpush(function_queue(settings, "poison::echo").name, deep_text(UNDECODABLE))
    [letter] = wait_for(lambda: dead_letters(store, settings), what="a dead letter")
    assert "RecursionError" in letter["reason"]
    still_serving(running)
    restart_worker(running, worker)
    still_serving(running)
    assert len(dead_letters(store, settings)) == 1
    assert_never_reconnected(worker)


def test_a_poison_job_goes_to_the_queues_dead_letters_at_once(running, store, settings):
    from iii_broker.message import Invocation
    from iii_broker.queues.store import job_message

    worker = running.procs[-1]
    inv = Invocation("poison::echo", None)
    raw = job_message(settings.namespace, "default", "poison::echo", inv, {})
    raw = raw.replace('\\"payload\\":null', '\\"payload\\":' + deep_text(UNDECODABLE))
    running.trigger("poison::echo", 1, action=Enqueue("default"))  # the queue's set-up
    store.lpush(f"{settings.namespace}.fn.poison::echo.q.default", raw)
    store.lpush(f"{settings.namespace}:wake:poison::echo", "1")

    def dead() -> list[dict[str, Any]]:
        return running.trigger("engine::queue::dlq_messages", {"queue": "default"})["messages"]
    [letter] = wait_for(dead, what="the job's dead letter")
    assert letter["attempts"] == 1  # no retries
    assert letter["error"]["code"] == "invalid_payload"
    assert "III_PAYLOAD_MAX_DEPTH" in letter["error"]["message"]
    still_serving(running)
    restart_worker(running, worker)
    still_serving(running)
    assert len(dead()) == 1


# -- the same on RabbitMQ ----------------------------------------------------------------


def test_on_amqp_a_deep_call_is_dead_lettered_answered_and_every_function_keeps_serving(
        settings, store, tmp_path, amqp_fault_url, namespace):
    from tests.conftest import Cluster

    amqp = dataclasses.replace(settings, broker_url=amqp_fault_url)
    cluster = Cluster(amqp, tmp_path)
    reply = Queue(f"{namespace}.reply.poison", durable=False, auto_delete=True)
    try:
        cluster.engine()
        worker = cluster.worker(APP)
        body = ('{"invocation_id":"poison-call","function_id":"poison::echo","payload":'
                + deep_text(UNDECODABLE) + ',"deadline":null,"attempt":1,"metadata":{}}')
        with Connection(amqp_fault_url, connect_timeout=5) as conn:
            channel = conn.channel()
            reply.bind(channel).declare()
            Producer(channel).publish(  # declares the queue, as callers do
                body, exchange=function_exchange(amqp, "poison::echo"),
                declare=[function_queue(amqp, "poison::echo")],
                routing_key="poison::echo", content_type="application/json",
                content_encoding="utf-8", reply_to=reply.name, correlation_id="poison-call")
            answers: list[Any] = []
            with conn.Consumer(reply, callbacks=[lambda b, m: answers.append(b)],
                               accept=["application/json"]):
                deadline = time.monotonic() + PROMPT_S
                while not answers and time.monotonic() < deadline:
                    try:
                        conn.drain_events(timeout=0.5)
                    except TimeoutError:
                        pass
        assert answers, "the caller got no answer"
        assert answers[0]["error"]["code"] == "invalid_payload"
        still_serving(cluster)
        assert cluster.trigger("engine::functions::list", {}, timeout_ms=5000)["functions"]
        [letter] = dead_letters(store, amqp)
        assert letter["queue"] == "poison::echo"
        assert_never_reconnected(worker)

        worker.stop()
        worker = cluster.worker(APP)
        still_serving(cluster)
        assert len(dead_letters(store, amqp)) == 1, "RabbitMQ redelivered the poison message"
    finally:
        functions = store.smembers(f"{namespace}:functions") | {"poison::echo"}
        cluster.close()
        with Connection(AMQP_URL, connect_timeout=3) as conn:  # the shared server: tidy up
            channel = conn.channel()
            for fid in functions:
                channel.queue_delete(f"{namespace}.fn.{fid}")
                channel.exchange_delete(f"{namespace}.fn.{fid}")


# -- timeout_ms --------------------------------------------------------------------------


@pytest.mark.parametrize("timeout_ms", [0, -5, True, 1.5, "1000"])
def test_a_timeout_that_is_not_a_positive_int_is_invalid_argument_naming_it(running, timeout_ms):
    for action in (None, Void, Enqueue("default")):
        with pytest.raises(InvalidArgument, match="timeout_ms") as info:
            running.trigger("poison::add", {"a": 1, "b": 2}, action=action,
                            timeout_ms=timeout_ms)
        assert info.value.code == "invalid_argument"
