"""``iii-broker queues`` and ``iii-broker dlq``, run as a user runs them."""

from __future__ import annotations

import json

import pytest

from iii_broker import Enqueue
from tests.helpers import wait_for
from tests.test_cli import cli
from tests.triggers_support import columns

CONFIG = """
[modules.queue.queues.payment]
max_retries = 1
backoff_ms = 50
concurrency = 2
"""


@pytest.fixture
def dead(cluster, store, settings):
    """A running cluster whose ``payment`` queue holds two dead letters."""
    cluster.engine(config=CONFIG)
    cluster.worker("tests.apps.jobs")
    ids = [cluster.client.trigger("jobs::fail", {"id": i}, action=Enqueue(queue="payment"))
           ["messageReceiptId"] for i in ("a", "b")]
    wait_for(lambda: store.zcard(f"{settings.namespace}:q:payment:dlq:index") == 2, timeout=15,
             what="two dead letters")
    return ids



def test_queues_lists_every_queue_with_its_counts(cluster, dead):
    done = cli(cluster.env, "queues")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split()[:3] == ["QUEUE", "TYPE", "DEPTH"]
    payment = next(r.split() for r in rows if r.startswith("payment "))
    # QUEUE TYPE DEPTH IN FLIGHT DELAYED DEAD CAP RETRIES COMPLETED (TOTAL)
    assert payment == ["payment", "standard", "0", "0", "0", "2", "2", "1", "0"]
    assert any(r.startswith("default ") for r in rows)
    data = json.loads(cli(cluster.env, "queues", "--json").stdout)
    assert {q["queue"] for q in data["queues"]} >= {"default", "payment"}


def test_dlq_list_and_show_describe_the_dead_letters(cluster, dead):
    done = cli(cluster.env, "dlq", "list", "payment")
    assert done.returncode == 0, done.stderr
    assert all(mid in done.stdout for mid in dead)
    assert "ValueError: no good" in done.stdout
    assert "(2 of 2 dead letter(s) on 'payment')" in done.stdout
    shown = json.loads(cli(cluster.env, "dlq", "show", "payment", dead[0]).stdout)
    assert shown["message_id"] == dead[0]
    assert shown["attempts"] == 2 and shown["payload"] == {"id": "a"}
    missing = cli(cluster.env, "dlq", "show", "payment", "nope")
    assert missing.returncode == 1
    assert "no dead letter 'nope' on queue 'payment'" in missing.stderr


def test_dlq_redrive_runs_a_letter_again_and_discard_deletes_one(cluster, dead, store, settings):
    runs_key = f"{settings.namespace}:test:runs"
    before = store.llen(runs_key)
    done = cli(cluster.env, "dlq", "redrive", "payment", dead[0])
    assert (done.returncode, done.stdout.strip()) == (0, "redriven 1 dead letter(s) onto 'payment'")
    # It runs again from attempt 1 (and, still failing, dies again after its retry).
    wait_for(lambda: [json.loads(x)["attempt"] for x in store.lrange(runs_key, before, -1)]
             == [1, 2], timeout=15, what="the redriven job's two attempts")
    done = cli(cluster.env, "dlq", "discard", "payment", dead[1])
    assert done.returncode == 0, done.stderr
    wait_for(lambda: json.loads(cli(cluster.env, "dlq", "list", "payment", "--json").stdout)
             ["total"] == 1, timeout=15, what="one dead letter left")
    again = cli(cluster.env, "dlq", "discard", "payment", dead[1])
    assert again.returncode == 1 and "no dead letter" in again.stderr


def test_trigger_enqueue_prints_the_receipt_and_an_unknown_queue_exits_1(cluster, store, settings):
    cluster.engine(config=CONFIG)
    cluster.worker("tests.apps.jobs")
    done = cli(cluster.env, "trigger", "jobs::record", '{"id": "cli"}', "--enqueue", "payment")
    assert done.returncode == 0, done.stderr
    receipt = json.loads(done.stdout)["messageReceiptId"]
    wait_for(lambda: any(json.loads(x)["id"] == "cli"
                         for x in store.lrange(f"{settings.namespace}:test:runs", 0, -1)),
             timeout=15, what="the enqueued job to run")
    assert len(receipt) == 32
    bad = cli(cluster.env, "trigger", "jobs::record", "{}", "--enqueue", "nope")
    assert bad.returncode == 1
    assert bad.stderr.startswith("iii-broker: enqueue_error: queue 'nope' does not exist")


def _row(cluster, queue: str) -> dict[str, str]:
    done = cli(cluster.env, "queues")
    assert done.returncode == 0, done.stderr
    [row] = [r for r in columns(done.stdout) if r["QUEUE"] == queue]
    return row


def test_queues_shows_the_dead_letters_there_are_not_how_many_ever_died(cluster, dead):
    assert _row(cluster, "payment")["DEAD"] == "2"
    assert cli(cluster.env, "dlq", "discard", "payment", dead[1]).returncode == 0
    assert _row(cluster, "payment")["DEAD"] == "1"
    # With no worker to run (and fail) it again, the redriven job waits on the queue.
    [worker] = [p for p in cluster.procs if p.name == "worker"]
    worker.stop()
    assert cli(cluster.env, "dlq", "redrive", "payment", dead[0]).returncode == 0
    letters = json.loads(cli(cluster.env, "dlq", "list", "payment", "--json").stdout)["total"]
    assert letters == 0
    assert (_row(cluster, "payment")["DEAD"], _row(cluster, "payment")["DEPTH"]) == ("0", "1")
    [payment] = [q for q in json.loads(cli(cluster.env, "queues", "--json").stdout)["queues"]
                 if q["queue"] == "payment"]
    assert (payment["dead"], payment["dead_total"]) == (0, 2)  # the running total, named so


@pytest.mark.parametrize("command", [
    ["dlq", "list", "NOSUCH"], ["dlq", "show", "NOSUCH", "x"], ["dlq", "redrive", "NOSUCH"],
    ["dlq", "discard", "NOSUCH", "x"], ["queues", "purge", "NOSUCH", "--yes"]])
def test_an_unknown_queue_exits_1_naming_the_queues_there_are(cluster, command):
    cluster.engine(config=CONFIG)
    done = cli(cluster.env, *command)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.startswith("iii-broker: no queue or topic 'NOSUCH'; "
                                  "queues: default, payment; topics: (none)"), done.stderr
    assert done.stdout == ""


def test_a_topics_dead_letters_are_reached_by_the_topic_and_subscriber_names(cluster):
    cluster.engine()
    cluster.worker("tests.apps.topics:durable", concurrency=2)
    receipt = cluster.client.trigger("iii::durable::publish", {
        "topic": "orders", "data": {"n": 1, "bounce": True}})["messageReceiptId"]
    wait_for(lambda: json.loads(cli(cluster.env, "dlq", "list", "orders", "--json").stdout)
             ["total"] == 1, timeout=15, what="topics::mail's dead letter")

    listed = cli(cluster.env, "dlq", "list", "orders")
    assert listed.returncode == 0, listed.stderr
    assert receipt in listed.stdout and "topics::mail" in listed.stdout
    assert "(1 of 1 dead letter(s) on topic 'orders')" in listed.stdout
    one = cli(cluster.env, "dlq", "list", "orders", "--subscriber", "topics::mail")
    assert "(1 of 1 dead letter(s) on topic 'orders' subscriber 'topics::mail')" in one.stdout
    none = cli(cluster.env, "dlq", "list", "orders", "--subscriber", "topics::audit")
    assert "(0 of 0 dead letter(s)" in none.stdout
    shown = json.loads(cli(cluster.env, "dlq", "show", "orders", receipt).stdout)
    assert (shown["function_id"], shown["payload"]) == ("topics::mail", {"n": 1, "bounce": True})
    # The full queue name iii-broker queues lists still works.
    assert cli(cluster.env, "dlq", "show", "durable:orders:topics::mail", receipt).returncode == 0

    stranger = cli(cluster.env, "dlq", "list", "orders", "--subscriber", "nobody::here")
    assert stranger.returncode == 1
    assert stranger.stderr.startswith("iii-broker: 'nobody::here' does not subscribe to topic "
                                      "'orders'; its subscribers: topics::audit, topics::mail")
    assert cli(cluster.env, "dlq", "discard", "orders", receipt).returncode == 0
    assert json.loads(cli(cluster.env, "dlq", "list", "orders", "--json").stdout)["total"] == 0
