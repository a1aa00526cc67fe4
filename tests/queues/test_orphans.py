"""Durable subscriber queues whose trigger was removed: no new publishes reach them, and
the jobs already in them stay, shown as orphaned by ``iii-broker queues`` until a worker
drains them or ``iii-broker queues purge NAME --yes`` drops them."""

from __future__ import annotations

import json
import signal

from tests.helpers import wait_for
from tests.queues.support import queue_stats, runs
from tests.test_cli import cli
from tests.triggers_support import bindings, columns

STRANDED = "durable:a:orders::on_event"  # orders::on_event's copy of topic a
LIVE = "durable:b:orders::on_event"
JOBS = 3


def _publish(cluster, topic: str, n: int) -> dict:
    return cluster.client.trigger("iii::durable::publish", {"topic": topic, "data": {"n": n}})


def _queues(cluster) -> dict[str, dict]:
    done = cli(cluster.env, "queues", "--json")
    assert done.returncode == 0, done.stderr
    return {q["queue"]: q for q in json.loads(done.stdout)["queues"]}


def _strand_jobs(cluster) -> None:
    """``orders::on_event`` subscribed to topic ``a`` (v1) got JOBS publishes while no worker
    ran, then came back as v2, which subscribes to ``b`` only: the ``a`` queue is stranded."""
    cluster.engine()
    v1 = cluster.worker("tests.apps.deploy_v1")
    v1.signal(signal.SIGTERM)
    assert v1.wait() == 0
    wait_for(lambda: not any(t["active"] for t in cluster.client.trigger(
        "engine::triggers::list", {})["triggers"]), what="v1's triggers to go inactive")
    for n in range(JOBS):  # the subscription is still there (inactive): the jobs are kept
        assert _publish(cluster, "a", n)["subscribers"] == ["orders::on_event"]
    assert queue_stats(cluster, STRANDED)["depth"] == JOBS

    cluster.worker("tests.apps.deploy_v2")
    wait_for(lambda: ("durable:subscriber", "orders::on_event", "a") not in bindings(cluster),
             timeout=5, what="the subscription to topic a to be removed")


def test_a_queue_whose_subscription_was_removed_keeps_its_jobs_and_is_listed_as_orphaned(
        cluster, store, settings):
    _strand_jobs(cluster)
    # New publishes no longer reach it.
    assert _publish(cluster, "a", 99)["subscribers"] == []
    queues = _queues(cluster)
    assert queues[STRANDED]["orphaned"] is True
    assert queues[STRANDED]["depth"] == JOBS
    assert not queues[LIVE].get("orphaned") and not queues["default"].get("orphaned")

    done = cli(cluster.env, "queues")
    assert done.returncode == 0, done.stderr
    rows = {r["QUEUE"]: r for r in columns(done.stdout)}
    assert rows[STRANDED]["STATUS"] == "orphaned"
    assert rows[STRANDED]["DEPTH"] == str(JOBS)
    assert rows[LIVE]["STATUS"] != "orphaned" and rows["default"]["STATUS"] != "orphaned"
    assert runs(store, settings) == []  # v2 does not run topic a's jobs


def test_queues_purge_needs_yes_and_then_drops_exactly_the_orphaned_jobs(cluster):
    _strand_jobs(cluster)
    refused = cli(cluster.env, "queues", "purge", STRANDED)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "--yes" in refused.stderr, refused.stderr
    assert _queues(cluster)[STRANDED]["depth"] == JOBS

    done = cli(cluster.env, "queues", "purge", STRANDED, "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"purged {JOBS} job(s) from {STRANDED!r}"
    left = _queues(cluster).get(STRANDED)
    assert left is None or left["depth"] == 0


def test_an_orphaned_queue_is_drained_when_a_worker_subscribing_to_it_comes_back(
        cluster, store, settings):
    _strand_jobs(cluster)
    assert _queues(cluster)[STRANDED]["orphaned"] is True
    cluster.worker("tests.apps.deploy_v1")

    wait_for(lambda: len(runs(store, settings)) == JOBS, timeout=10,
             what="the stranded jobs to run on v1")
    assert sorted(r["payload"]["n"] for r in runs(store, settings)) == list(range(JOBS))
    assert {r["version"] for r in runs(store, settings)} == {"v1"}
    wait_for(lambda: not (q := _queues(cluster)[STRANDED]).get("orphaned") and q["depth"] == 0,
             what="the queue to be neither orphaned nor holding jobs")
