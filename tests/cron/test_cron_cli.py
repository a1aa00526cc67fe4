"""``iii-broker cron list`` and ``iii-broker cron run``, run as users run them."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

from tests.cron.conftest import beat, cli, cron_worker, engine, fires, job_id, status, ts
from tests.helpers import wait_for

NOON_BERLIN = {"expression": "0 0 12 * * *", "timezone": "Europe/Berlin"}


def test_cron_list_shows_zones_next_times_last_outcome_and_counts(cluster, store, settings):
    engine(cluster)
    cron_worker(cluster, ("cron::tick", {"expression": "* * * * * *"}),
                ("cron::other", NOON_BERLIN))
    beat(cluster)
    tick, other = job_id(cluster, "cron::tick"), job_id(cluster, "cron::other")
    wait_for(lambda: status(store, settings, tick).get("last_outcome") == "ok", timeout=10,
             what="a recorded fire")

    out = cli(cluster, "cron", "list", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["job_id"]: r for r in json.loads(out.stdout)}
    assert set(rows) == {tick, other}
    t, o = rows[tick], rows[other]
    assert (t["function_id"], t["timezone"], t["active"], t["scheduled"]) == \
        ("cron::tick", "UTC", True, True)
    nxt = [ts(s) for s in t["next"]]
    assert len(nxt) == 3 and [b - a for a, b in zip(nxt, nxt[1:], strict=False)] == \
        [timedelta(seconds=1)] * 2
    assert nxt[0] > datetime.now(UTC) - timedelta(seconds=2)
    assert t["last_outcome"] == "ok" and t["runs"] >= 1 and t["last_scheduled_time"]
    assert (t["skipped_overlap"], t["skipped_condition"]) == (0, 0)
    # A beat held up for over a second (a loaded machine) skips this 1-second schedule's
    # slots as misfires: the list shows the count stored, which only grows after it.
    stored = int(status(store, settings, tick).get("skipped_misfire") or 0)
    assert isinstance(t["skipped_misfire"], int) and 0 <= t["skipped_misfire"] <= stored
    assert o["timezone"] == "Europe/Berlin" and o["last_outcome"] is None and o["runs"] == 0
    noons = [ts(s) for s in o["next"]]
    assert len(noons) == 3 and all(n.minute == n.second == 0 for n in noons)
    assert all(n.hour in (10, 11) for n in noons), noons  # 12:00 in Berlin, CET or CEST
    assert [b - a for a, b in zip(noons, noons[1:], strict=False)] == [timedelta(days=1)] * 2

    table = cli(cluster, "cron", "list")
    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.splitlines()
    assert header.split()[:4] == ["JOB", "FUNCTION", "SCHEDULE", "ZONE"]
    line = next(line for line in lines if tick in line)
    assert "cron::tick" in line and "UTC" in line and "ok" in line
    assert re.search(r"misfire \d+, overlap 0, condition 0", line), line  # misfires: see above
    assert "Europe/Berlin" in next(line for line in lines if other in line)


def test_cron_run_fires_a_job_now_and_prints_its_outcome(cluster, store, settings):
    engine(cluster)
    cron_worker(cluster, ("cron::other", NOON_BERLIN))
    job = job_id(cluster, "cron::other")

    out = cli(cluster, "cron", "run", job)
    assert out.returncode == 0, out.stderr
    outcome = json.loads(out.stdout)
    assert outcome["outcome"] == "ok" and outcome["job_id"] == job
    (fire,) = fires(store, settings, "cron::other")
    assert fire["payload"]["trigger"] == "cron" and fire["payload"]["job_id"] == job
    assert fire["payload"]["scheduled_time"] == outcome["last_scheduled_time"]
    recorded = status(store, settings, job)
    assert recorded["last_outcome"] == "ok" and recorded["runs"] == "1"


def test_cron_run_of_a_failing_job_exits_1_with_the_error(cluster, store, settings):
    engine(cluster)
    cron_worker(cluster, ("cron::fail", NOON_BERLIN))
    out = cli(cluster, "cron", "run", job_id(cluster, "cron::fail"))
    assert out.returncode == 1, out
    outcome = json.loads(out.stdout)
    assert outcome["outcome"] == "failed" and "always fails" in outcome["last_error"]


def test_cron_run_of_an_unknown_job_exits_1_naming_the_known_ones(cluster, store, settings):
    engine(cluster)
    cron_worker(cluster, ("cron::other", NOON_BERLIN))
    job = job_id(cluster, "cron::other")
    out = cli(cluster, "cron", "run", "nosuchjob")
    assert out.returncode == 1
    assert "nosuchjob" in out.stderr and job in out.stderr, out.stderr
    assert fires(store, settings) == []
