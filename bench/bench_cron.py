"""Cron benchmark: fire jitter of an every-second schedule, and a beat with 10,000 schedules.

    python bench/bench_cron.py                        # both parts, defaults below
    python bench/bench_cron.py --fires 60 --schedules 10000 --due 1000 --rounds 3

Each part starts its own engine, worker (``iii-worker -A bench.cron_apps``) and one
``iii-broker beat`` in a fresh namespace:

- **jitter**: one ``* * * * * *`` trigger; ``--fires`` fires after two warm-up ones;
  actual − scheduled (the payload's ``actual_time − scheduled_time``: when the beat fired)
  and received − scheduled (when the handler ran), p50/p99/max.
- **scale**: ``--schedules`` triggers, ``--due`` of them every 10 s on the same second, the
  rest yearly; ``--rounds`` bursts measured. Reports the same delays over every due fire,
  the share fired within 1 s of its slot, the beat's CPU per fire (/proc, over the measured
  rounds), and the longest single Redis command meanwhile (``SLOWLOG``, threshold 1 ms,
  restored afterwards): the due set is read, claimed and advanced in pipelines of 500, so
  no one script or command holds Redis for long.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_core import (  # noqa: E402
    Child,
    child_env,
    cleanup_keys,
    iii_ready,
    pct,
    report_to,
    show_tails,
    stop_children,
    versions,
    wait_until,
)

BINDIR = Path(sys.executable).parent
JITTER_P99_MS = 50.0


def parse_rfc3339(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Part:
    """One part's processes, namespace and Redis connection."""

    def __init__(self, redis_url: str, mode: str, expect: int) -> None:
        from iii_broker import App, Settings

        self.ns = f"benchc{uuid.uuid4().hex[:8]}"
        self.settings = Settings(broker_url=redis_url, redis_url=redis_url, namespace=self.ns)
        self.r = redis.Redis.from_url(redis_url, decode_responses=True)
        self.log_dir = Path(tempfile.mkdtemp(prefix="iii-bench-cron-"))
        env = child_env(self.settings)
        env["BENCH_CRON"] = mode
        self.children = [
            Child("engine", [str(BINDIR / "iii-broker"), "engine"], env, self.log_dir),
            Child("worker", [str(BINDIR / "iii-worker"), "-A", "bench.cron_apps",
                             "--concurrency", "16"], env, self.log_dir),
        ]
        self.client = App("bench-cron-client", settings=self.settings)
        try:
            wait_until(lambda: iii_ready(self.client, tuple(self.children), {"bench::cron"}),
                       120, "the engine and worker")
            self.beat = Child("beat", [str(BINDIR / "iii-broker"), "beat"], env, self.log_dir)
            self.children.append(self.beat)
            schedule = f"{self.ns}:redbeat::schedule"
            wait_until(lambda: self.beat.check() or self.r.zcard(schedule) >= expect, 120,
                       f"{expect} schedule entries")
        except BaseException:
            show_tails(self.children)
            self.close()
            raise

    @property
    def fires_key(self) -> str:
        return f"{self.ns}:bench:fires"

    def fires(self, start: int = 0) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.r.lrange(self.fires_key, start, -1)]

    def close(self) -> None:
        self.client.close()
        stop_children(self.children)
        cleanup_keys(self.r, self.ns)
        self.r.close()
        shutil.rmtree(self.log_dir, ignore_errors=True)


def delays_ms(fires: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    fired = [(parse_rfc3339(f["actual"]) - parse_rfc3339(f["scheduled"])) * 1000 for f in fires]
    received = [(f["received"] - parse_rfc3339(f["scheduled"])) * 1000 for f in fires]
    return fired, received


def jitter(args: argparse.Namespace) -> dict[str, Any]:
    part = Part(args.redis_url, "jitter", 1)
    try:
        wait_until(lambda: part.r.llen(part.fires_key) >= 2, 30, "two warm-up fires")
        start = part.r.llen(part.fires_key)
        wait_until(lambda: part.r.llen(part.fires_key) >= start + args.fires,
                   args.fires + 30, f"{args.fires} fires")
        fires = part.fires(start)[:args.fires]
        fired, received = delays_ms(fires)
        slots = [f["scheduled"] for f in fires]
        return {"n": len(fires), "fired": fired, "received": received,
                "duplicates": len(slots) - len(set(slots))}
    finally:
        part.close()


def scale(args: argparse.Namespace) -> dict[str, Any]:
    part = Part(args.redis_url, f"scale:{args.schedules}:{args.due}", args.schedules)
    old_slowlog = part.r.config_get("slowlog-log-slower-than")["slowlog-log-slower-than"]
    try:
        # Start measuring at a burst boundary: wait for one burst to have fired entirely.
        wait_until(lambda: part.r.llen(part.fires_key) >= args.due, 60, "a first burst")
        wait_until(lambda: part.r.llen(part.fires_key) % args.due == 0, 15, "the burst to end")
        start = part.r.llen(part.fires_key)
        part.r.config_set("slowlog-log-slower-than", 1000)
        part.r.slowlog_reset()
        cpu0 = part.beat.cpu_s()
        wait_until(lambda: part.r.llen(part.fires_key) >= start + args.rounds * args.due,
                   args.rounds * 10 + 30, f"{args.rounds} bursts")
        cpu = part.beat.cpu_s() - cpu0
        slow = part.r.slowlog_get(128)
        fires = part.fires(start)[:args.rounds * args.due]
        fired, received = delays_ms(fires)
        slots = [(f["scheduled"], i % args.due) for i, f in enumerate(fires)]
        return {"n": len(fires), "fired": fired, "received": received,
                "within_1s": sum(1 for d in fired if d <= 1000) / len(fired),
                "cpu_us_per_fire": cpu * 1e6 / len(fires),
                "slowest_us": max((e["duration"] for e in slow), default=0),
                "slow_commands": [(e["duration"], " ".join(str(a) for a in e["command"].split()[:2])
                                   if isinstance(e["command"], str) else str(e["command"])[:60])
                                  for e in sorted(slow, key=lambda e: -e["duration"])[:3]],
                "distinct_slots": len({s for s, _ in slots})}
    finally:
        part.r.config_set("slowlog-log-slower-than", old_slowlog)
        part.close()


def row(name: str, values: list[float]) -> str:
    return f"| {name} | {pct(values, 0.5):.1f} | {pct(values, 0.99):.1f} | {max(values):.1f} |"


def report(args: argparse.Namespace, j: dict[str, Any] | None, s: dict[str, Any] | None,
           r: redis.Redis, load: tuple[float, float, float]) -> str:
    out = [f"# Cron benchmark: beat fire jitter and 10,000 schedules\n\n"
           f"Run {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} by `python "
           f"bench/bench_cron.py --fires {args.fires} --schedules {args.schedules} --due "
           f"{args.due} --rounds {args.rounds}`.\n\n"
           f"{versions(r, load, ('kombu', 'celery', 'celery-redbeat', 'redis'))}"
           "- One Redis for everything; one engine, one worker (concurrency 16), one "
           "`iii-broker beat` per part, in a fresh namespace.\n"]
    targets = []
    if j is not None:
        out += [f"## Fire jitter: `* * * * * *`, {j['n']} fires\n",
                "| delay after the slot (ms) | p50 | p99 | max |", "|---|---:|---:|---:|",
                row("fired (payload `actual_time − scheduled_time`)", j["fired"]),
                row("handler ran (received − scheduled)", j["received"]),
                "", f"Slots fired twice: {j['duplicates']}.\n"]
        p99 = pct(j["fired"], 0.99)
        targets.append(f"| fire jitter p99 | {p99:.1f} ms | ≤ {JITTER_P99_MS:.0f} ms | "
                       f"{'PASS' if p99 <= JITTER_P99_MS else 'FAIL'} |")
    if s is not None:
        out += [f"## Scale: {args.schedules:,} schedules, {args.due:,} due on the same second, "
                f"{args.rounds} bursts ({s['n']:,} fires)\n",
                "| delay after the slot (ms) | p50 | p99 | max |", "|---|---:|---:|---:|",
                row("fired (payload `actual_time − scheduled_time`)", s["fired"]),
                row("handler ran (received − scheduled)", s["received"]),
                "", "| measure | value |", "|---|---:|",
                f"| fired within 1 s of the slot | {s['within_1s'] * 100:.1f}% |",
                f"| beat CPU per fire | {s['cpu_us_per_fire']:.0f} µs |",
                f"| longest single Redis command meanwhile | {s['slowest_us'] / 1000:.1f} ms |",
                ""]
        if s["slow_commands"]:
            out.append("Slowest commands (SLOWLOG, ≥ 1 ms): " + "; ".join(
                f"{d / 1000:.1f} ms `{c}`" for d, c in s["slow_commands"]) + "\n")
        targets.append(f"| every due fire within 1 s of its slot | {s['within_1s'] * 100:.1f}% | "
                       f"100% | {'PASS' if s['within_1s'] == 1.0 else 'FAIL'} |")
    out += ["## Targets\n", "| target | measured | goal | result |", "|---|---:|---:|:---:|",
            *targets, "", "## How it is measured\n",
            "- The worker records each fire (`bench/cron_apps.py`): the payload's "
            "`scheduled_time` and `actual_time` (set by the beat as it publishes the call) and "
            "the time the handler ran, RPUSHed to a Redis list the bench reads.",
            "- Jitter: the first two fires are a warm-up; the next ones are measured.",
            "- Scale: the measurement starts after a first complete burst; beat CPU is its "
            "user + system time from /proc over the measured bursts divided by the fires; the "
            "slow log is reset at the start and read at the end."]
    return "\n".join(out) + "\n"


def run(args: argparse.Namespace) -> str:
    load = os.getloadavg()
    r = redis.Redis.from_url(args.redis_url, decode_responses=True)
    try:
        j = jitter(args) if args.part in ("both", "jitter") else None
        if j is not None:
            print(f"jitter: p99 {pct(j['fired'], 0.99):.1f} ms", file=sys.stderr)
        s = scale(args) if args.part in ("both", "scale") else None
        if s is not None:
            print(f"scale: within 1 s {s['within_1s'] * 100:.1f}%", file=sys.stderr)
        return report(args, j, s, r, load)
    finally:
        r.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fires", type=int, default=60)
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--due", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--part", choices=("both", "jitter", "scale"), default="both")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.md")
    args = parser.parse_args(argv)
    if not 0 < args.due <= args.schedules:
        parser.error("--due must be between 1 and --schedules")
    return report_to(args.out, lambda: run(args), "cron")


if __name__ == "__main__":
    sys.exit(main())
