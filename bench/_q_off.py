"""Durable-queue benchmark: iii-broker named queues vs Celery vs Dramatiq, one run, one Redis.

    python bench/bench_queues.py                                   # all three, 20000 jobs
    python bench/bench_queues.py --only celery,dramatiq --jobs 2000

For no-op jobs run by ONE worker process at concurrency 8, measures per system the enqueue
rate (one publishing thread), the drain rate of a preloaded queue (the worker is paused with
SIGSTOP while publishing; timed from SIGCONT to the n-th job's run, as bench_core's
``throughput()`` does) and the CPU per job of client, worker and Redis:

- iii-broker: ``trigger("bench::noop", {}, action=Enqueue(queue="bench"))`` with the named
  queue ``bench`` (concurrency 8) in the engine settings file (``III_CONFIG_PATH``), one
  engine and ``iii-worker -A bench.apps --concurrency 8``;
- Celery: ``tick.delay()`` (``ignore_result=True``), ``task_acks_late=True``, threads pool;
- Dramatiq: ``tick.send()`` on its ``RedisBroker``, ``dramatiq bench.dramatiq_app
  --processes 1 --threads 8``.

Systems run one after another, each with only its own processes up. Prints a markdown
report with the targets (PASS/FAIL) and writes it to its section of bench/results.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # so `bench.*` imports work as `python bench/bench_queues.py`

from bench.bench_core import (  # noqa: E402
    CONCURRENCY,
    HEARTBEAT_S,
    Child,
    celery_ready,
    celery_worker_args,
    child_env,
    cleanup_keys,
    fmt_rate,
    iii_ready,
    report_to,
    show_tails,
    stop_children,
    throughput,
    versions,
    wait_until,
)

SYSTEMS = ("iii", "celery", "dramatiq")
LABELS = {"iii": "iii-broker named queue, `trigger(..., action=Enqueue(queue=\"bench\"))`",
          "celery": "Celery `.delay()`, `acks_late`, `ignore_result=True`",
          "dramatiq": "Dramatiq `RedisBroker`, `.send()`"}
QUEUE = "bench"  # the iii named queue; the namespace is fresh, so the name need not be
# Celery's default. The docs suggest 1 for long tasks; these are no-ops, and a late ack does
# not depend on it: a prefetched message stays unacked in Redis until its job has run.
CELERY_PREFETCH = 4
WARMUP_JOBS = 1000  # run (concurrently, not measured) before each system's measured run
BINDIR = Path(sys.executable).parent


@dataclass
class System:
    """What ``throughput()`` needs of one system, plus processes whose CPU is shown apart."""

    worker: Child
    arm: Callable[[int, str], Any]
    publish: Callable[[], Any]
    others: list[Child] = field(default_factory=list)


class ProcessGroup(Child):
    """A child that forks its worker (Dramatiq's CLI): pausing, resuming, killing and CPU cover
    the whole process group; SIGTERM goes to the parent only, which passes it on."""

    def signal(self, sig: int) -> None:
        if sig == signal.SIGTERM:
            super().signal(sig)
        elif self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)  # the group is the child's own: start_new_session

    def cpu_s(self) -> float:
        from bench.bench_web import cpu_of, tree

        return cpu_of(tree(self.popen.pid))

    def stop(self) -> None:
        super().stop()
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)  # whatever the parent left behind
        except ProcessLookupError:
            pass


class Bench:
    """One run: its namespace, Redis connection and log directory."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.ns = f"benchq{uuid.uuid4().hex[:8]}"
        self.r = redis.Redis.from_url(redis_url)
        self.redis_pid = int(self.r.info("server")["process_id"])
        self.log_dir = Path(tempfile.mkdtemp(prefix="iii-bench-queues-"))

    @contextmanager
    def processes(self, env: dict[str, str]) -> Iterator[Callable[..., Child]]:
        """Yields ``spawn(name, cmd, cls=Child)``; the processes are stopped on the way out."""
        children: list[Child] = []

        def spawn(name: str, cmd: list[str], cls: type[Child] = Child) -> Child:
            children.append(cls(name, cmd, env, self.log_dir))
            return children[-1]
        try:
            yield spawn
        except BaseException:
            show_tails(children)
            raise
        finally:
            stop_children(children)


# -- the three systems -----------------------------------------------------------------


@contextmanager
def iii_system(b: Bench) -> Iterator[System]:
    from iii_broker import App, Enqueue, Settings

    config = b.log_dir / "iii.toml"
    config.write_text(f"[modules.queue.queues.{QUEUE}]\nconcurrency = {CONCURRENCY}\n[modules.observability]\n" + os.environ.get("OBS", "enabled = false").replace(";", "\n") + "\n")
    settings = Settings(broker_url=b.redis_url, redis_url=b.redis_url, namespace=b.ns,
                        heartbeat_interval_s=HEARTBEAT_S, log_level="WARNING",
                        config_path=str(config))
    client = App("bench-client", settings=settings)
    try:
        with b.processes(child_env(settings)) as spawn:
            engine = spawn("engine", [str(BINDIR / "iii-broker"), "engine"])
            __import__("time").sleep(2)
            worker = spawn("iii-worker", [str(BINDIR / "iii-worker"), "-A", "bench.apps",
                                          "--concurrency", str(CONCURRENCY)])
            wait_until(lambda: iii_ready(client, (engine, worker), {"bench::noop", "bench::arm"}),
                       60, "the iii worker to register bench::noop")
            action = Enqueue(queue=QUEUE)

            def arm(n: int, key: str) -> None:
                client.trigger("bench::arm", {"redis_url": b.redis_url, "key": key, "n": n})

            def enqueue_one() -> bool:
                engine.check()
                # EnqueueError until the engine has published the queue's settings
                client.trigger("bench::noop", {}, action=action)
                return True
            ready = f"{b.ns}:ready"  # the worker is up when it ran one job from the queue
            arm(1, ready)
            wait_until(enqueue_one, 60, f"the engine to declare queue {QUEUE!r}")
            wait_until(lambda: worker.check() or b.r.blpop([ready], timeout=1), 60,
                       f"the iii worker to run a job from queue {QUEUE!r}")
            yield System(worker, arm, lambda: client.trigger("bench::noop", {}, action=action),
                         [engine])
    finally:
        client.close()


def at_least_once_celery() -> Any:
    """bench.celery_app's app (it reads ``BENCH_*`` when imported) with late acks."""
    from bench.celery_app import app

    app.conf.update(task_acks_late=True, worker_prefetch_multiplier=CELERY_PREFETCH)
    return app


def celery_worker() -> int:
    """``--celery-worker``: the Celery worker of this bench (the same app, late acks)."""
    at_least_once_celery().worker_main(celery_worker_args(os.environ["BENCH_QUEUE"]))
    return 0


@contextmanager
def celery_system(b: Bench) -> Iterator[System]:
    os.environ.update(BENCH_REDIS_URL=b.redis_url, BENCH_PREFIX=f"{b.ns}:celery:",
                      BENCH_QUEUE=f"{b.ns}.celery")
    capp = at_least_once_celery()
    try:
        with b.processes(child_env()) as spawn:
            worker = spawn("celery-worker", [sys.executable, str(Path(__file__).resolve()),
                                             "--celery-worker"])
            noop, tick, arm = (capp.tasks[f"bench.{t}"] for t in ("noop", "tick", "arm"))
            wait_until(lambda: celery_ready(worker, noop), 60, "the Celery worker to answer")
            yield System(worker, lambda n, key: arm.delay(b.redis_url, key, n).get(timeout=10),
                         tick.delay)
    finally:
        capp.close()


@contextmanager
def dramatiq_system(b: Bench) -> Iterator[System]:
    os.environ.update(BENCH_REDIS_URL=b.redis_url, BENCH_DRAMATIQ_NAMESPACE=f"{b.ns}:dramatiq")
    from bench import dramatiq_app

    armed = f"{b.ns}:dramatiq:armed"
    try:
        with b.processes(child_env()) as spawn:
            worker = spawn("dramatiq-worker", [
                str(BINDIR / "dramatiq"), "bench.dramatiq_app", "--processes", "1",
                "--threads", str(CONCURRENCY)], cls=ProcessGroup)

            def arm(n: int, key: str, timeout: float = 30) -> None:
                dramatiq_app.arm.send(b.redis_url, key, n, armed)
                wait_until(lambda: worker.check() or b.r.blpop([armed], timeout=1), timeout,
                           "the Dramatiq worker to arm its countdown")
            arm(0, f"{b.ns}:done", timeout=60)  # the worker is up
            yield System(worker, arm, dramatiq_app.tick.send)
    finally:
        dramatiq_app.broker.client.close()


SETUPS = {"iii": iii_system, "celery": celery_system, "dramatiq": dramatiq_system}


# -- the run ---------------------------------------------------------------------------


def measure(b: Bench, key: str, jobs: int) -> dict[str, float]:
    done = f"{b.ns}:done"
    with SETUPS[key](b) as s:
        throughput(b.r, b.redis_pid, s.worker, s.arm, s.publish, min(WARMUP_JOBS, jobs), done,
                   preload=False)
        o0 = sum(c.cpu_s() for c in s.others)
        res = throughput(b.r, b.redis_pid, s.worker, s.arm, s.publish, jobs, done, preload=True)
        res["other_cpu"] = (sum(c.cpu_s() for c in s.others) - o0) / jobs * 1e6 if s.others \
            else float("nan")
        for child in [s.worker, *s.others]:
            child.check()
    return res


def report(args: argparse.Namespace, only: list[str], tp: dict[str, dict[str, float]],
           r: redis.Redis, load: tuple[float, float, float]) -> str:
    cmd = f"python bench/bench_queues.py --jobs {args.jobs}" + (
        f" --only {','.join(only)}" if only != list(SYSTEMS) else "")
    pkgs = ("kombu", *(p for p in ("celery", "dramatiq") if p in only), "redis")
    out = [f"# Durable-queue benchmark: iii-broker named queues vs Celery vs Dramatiq\n\n"
           f"Run {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} by `{cmd}`.\n\n"
           f"{versions(r, load, pkgs)}- One Redis at `{args.redis_url}` for everything; one "
           f"worker process at concurrency {CONCURRENCY} per system; the systems run one after "
           "another, each with only its own processes up.\n",
           f"## Durable-queue throughput ({args.jobs} no-op jobs, one worker process, "
           f"concurrency {CONCURRENCY})\n",
           "| system | enqueue jobs/s | drain jobs/s (preloaded) | client CPU µs/publish | "
           "worker CPU µs/job | Redis CPU µs/job | engine CPU µs/job |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for key in SYSTEMS:
        if key not in tp:
            out.append(f"| {LABELS[key]} | not run | not run | | | | |")
            continue
        t = tp[key]
        other = "—" if t["other_cpu"] != t["other_cpu"] else f"{t['other_cpu']:.0f}"
        out.append(f"| {LABELS[key]} | {fmt_rate(t['enqueue'])} | {fmt_rate(t['rate'])} | "
                   f"{t['client_cpu']:.0f} | {t['worker_cpu']:.0f} | "
                   f"{t['redis_pub_cpu'] + t['redis_drain_cpu']:.0f} | {other} |")
    out += ["", "## Targets\n", "| target | measured | goal | result |", "|---|---:|---:|:---:|"]
    for other, factor in (("celery", 2.0), ("dramatiq", 1.0)):
        name = f"drain throughput, iii / {other.capitalize()}"
        if "iii" in tp and other in tp:
            ratio = tp["iii"]["rate"] / tp[other]["rate"]
            out.append(f"| {name} | {ratio:.2f}× | ≥ {factor:g}× | "
                       f"{'PASS' if ratio >= factor else 'FAIL'} |")
        else:
            out.append(f"| {name} | n/a | ≥ {factor:g}× | n/a |")
    out += ["", "## How it is measured\n",
            "- Each system: its processes are started and checked to answer, "
            f"{min(WARMUP_JOBS, args.jobs)} jobs are run as a warm-up (not reported), then the "
            "measured run: each no-op decrements an in-process countdown (`bench/counting.py`) "
            "armed for N jobs, whose N-th run RPUSHes `time.time()` to a Redis list the bench "
            "BLPOPs. The worker is paused with SIGSTOP, all N jobs are published by one thread "
            "(the *enqueue* rate, nothing draining), then SIGCONT; drain rate = N / (worker's "
            "last-job time − resume time).",
            "- CPU columns come from /proc (10 ms ticks), per job: client CPU (the bench process) "
            "while publishing, worker CPU while draining, Redis CPU over both, engine CPU (iii's "
            "`iii-broker engine`) over the whole measured run. Dramatiq's worker CPU is its CLI's "
            "parent process plus the worker process it forks.",
            f"- iii: the engine settings file (`III_CONFIG_PATH`) declares `[modules.queue.queues."
            f"{QUEUE}]` with `concurrency = {CONCURRENCY}`; `iii-worker -A bench.apps "
            f"--concurrency {CONCURRENCY}`; `III_HEARTBEAT_INTERVAL_S={HEARTBEAT_S:g}` so the "
            "paused worker is not swept while the queue is preloaded.",
            f"- Celery: `bench/celery_app.py`'s app with `task_acks_late=True` and "
            f"`worker_prefetch_multiplier={CELERY_PREFETCH}` (Celery's default: at most "
            f"{CELERY_PREFETCH * CONCURRENCY} unacked messages), threads pool at concurrency "
            f"{CONCURRENCY}, JSON, Redis broker (per-run `global_keyprefix` and queue); gossip, "
            "mingle, heartbeat and remote control off.",
            f"- Dramatiq: `bench/dramatiq_app.py`, its `RedisBroker` with the default middleware "
            f"under a per-run namespace, `dramatiq bench.dramatiq_app --processes 1 --threads "
            f"{CONCURRENCY}` (Dramatiq prefetches 2 × threads = {2 * CONCURRENCY} messages; a "
            "message is acked after its actor ran).",
            "- Each run uses a fresh namespace; its Redis keys are deleted and its processes "
            "stopped at the end."]
    return "\n".join(out) + "\n"


def run(args: argparse.Namespace, only: list[str]) -> str:
    load = os.getloadavg()
    b = Bench(args.redis_url)
    tp: dict[str, dict[str, float]] = {}
    try:
        print(f"namespace {b.ns}; logs in {b.log_dir}", file=sys.stderr)
        for key in only:
            tp[key] = measure(b, key, args.jobs)
            print(f"{key}: enqueue {tp[key]['enqueue']:,.0f} jobs/s, drain "
                  f"{tp[key]['rate']:,.0f} jobs/s", file=sys.stderr)
        text = report(args, only, tp, b.r, load)
    finally:
        print(f"removed {cleanup_keys(b.r, b.ns)} Redis keys of namespace {b.ns}", file=sys.stderr)
        b.r.close()
    shutil.rmtree(b.log_dir, ignore_errors=True)  # kept when the run failed
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20000, help="jobs per system")
    parser.add_argument("--only", default=",".join(SYSTEMS),
                        help=f"comma-separated systems to run, of {','.join(SYSTEMS)} (default: all)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.md")
    parser.add_argument("--celery-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.celery_worker:
        return celery_worker()
    chosen = {s.strip() for s in args.only.split(",") if s.strip()}
    if not chosen or chosen - set(SYSTEMS):
        parser.error(f"--only: choose among {', '.join(SYSTEMS)}")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    return report_to(args.out, lambda: run(args, [s for s in SYSTEMS if s in chosen]), "queues")


if __name__ == "__main__":
    sys.exit(main())
