"""Observability benchmark: the cost of traces, logs, history and metrics on the hot path.

    python bench/bench_observability.py                  # full run (2000 calls, 20000 jobs, 5 rounds)
    python bench/bench_observability.py --calls 300 --jobs 2000 --rounds 1

Runs the same cluster (one engine, one ``iii-worker`` at concurrency 8) three ways:

- ``off``: ``[modules.observability] enabled = false``;
- ``on``: the module's defaults (logs, history and metrics stored in Redis; no span export);
- ``on + OTLP``: the same plus ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at a local OTLP/HTTP
  endpoint (a process of this bench's) that accepts every request and drops it.

and measures for each, with a no-op handler and one that logs one INFO line, (a) the sync
round trip of ``trigger``, (b) the drain rate of 20,000 jobs preloaded on a named queue. Rounds alternate
the three set-ups so drift on the machine hits them alike; the report shows medians.
"""

from __future__ import annotations

import argparse
import http.server
import os
import statistics
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_core import (  # noqa: E402 - after the path set-up above
    CONCURRENCY,
    HEARTBEAT_S,
    cleanup_keys,
    iii_ready,
    latencies_us,
    pct,
    proc_cpu_s,
    report_to,
    throughput,
    versions,
    wait_until,
)
from bench.bench_queues import BINDIR, Bench, child_env  # noqa: E402
from bench.bench_web import free_port  # noqa: E402

QUEUE = "bench"
FUNCTIONS = {"noop": "bench::noop", "logged": "bench::noop_logged"}
"""The handlers measured: a no-op, and a no-op that logs one INFO line through ctx.logger."""
SETUPS = ("off", "on", "otlp")
LABELS = {"off": "observability off", "on": "on (logs, history, metrics in Redis)",
          "otlp": "on + spans and logs exported over OTLP/HTTP"}


class DropSink(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that accepts everything and keeps nothing."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


def serve_sink(port: int) -> int:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), DropSink)
    parent = os.getppid()

    def watch() -> None:  # exit with the bench
        while os.getppid() == parent:
            threading.Event().wait(1)
        server.shutdown()
    threading.Thread(target=watch, daemon=True).start()
    server.serve_forever()
    return 0


def writer_of(pid: int) -> int | None:
    """The pid of the worker's telemetry writer process (its child), if it has one."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid and b"observability.writer" in cmdline:
            return int(entry.name)
    return None


def drain_with_writer(b: Bench, ns: str, worker: Any, arm: Any, enqueue: Any, n: int,
                      function: str) -> dict[str, float]:
    """:func:`throughput` (preloaded) plus the CPU the worker's telemetry writer spent on
    the drained jobs, read once it has stored the last job's history record (Redis's CPU
    until then is counted too)."""
    from iii_broker.store import Keys

    writer = writer_of(worker.popen.pid)
    index = Keys(ns).invocations_of(function)
    recorded = b.r.zcard(index)
    before = proc_cpu_s(writer) if writer else 0.0
    out = throughput(b.r, b.redis_pid, worker, arm, enqueue, n, f"{b.ns}:done", preload=True)
    out["writer_cpu"] = 0.0
    if writer:
        redis_at = proc_cpu_s(b.redis_pid)
        wait_until(lambda: b.r.zcard(index) >= recorded + n, 60,
                   "the writer to store the drain's history")
        out["writer_cpu"] = (proc_cpu_s(writer) - before) / n * 1e6
        # what Redis spent storing the last of it counts too
        out["redis_drain_cpu"] += (proc_cpu_s(b.redis_pid) - redis_at) / n * 1e6
    return out


@contextmanager
def cluster(b: Bench, setup: str) -> Iterator[tuple[Any, Any, Any]]:
    """An engine and a worker configured for ``setup``; yields (client, worker, spawn)."""
    from iii_broker import App, Settings

    config = b.log_dir / f"iii-{setup}.toml"
    text = f"[modules.queue.queues.{QUEUE}]\nconcurrency = {CONCURRENCY}\n"
    if setup == "off":
        text += "[modules.observability]\nenabled = false\n"
    config.write_text(text)
    ns = f"{b.ns}{setup}"
    settings = Settings(broker_url=b.redis_url, redis_url=b.redis_url, namespace=ns,
                        heartbeat_interval_s=HEARTBEAT_S, log_level="WARNING",
                        config_path=str(config))
    env = child_env(settings)
    env = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
    client = App("bench-client", settings=settings)
    try:
        with b.processes(env) as spawn:
            if setup == "otlp":
                port = free_port()
                spawn("otlp-sink", [sys.executable, str(Path(__file__).resolve()),
                                    "--serve-sink", str(port)])
                env.update(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
                           OTEL_SERVICE_NAME="iii-bench")
            engine = spawn("engine", [str(BINDIR / "iii-broker"), "engine"])
            # the worker reads the cluster's observability settings as it starts
            wait_until(lambda: engine.check() or b.r.exists(f"{ns}:seeded"), 60,
                       "the engine to write the cluster's settings")
            worker = spawn("iii-worker", [str(BINDIR / "iii-worker"), "-A", "bench.apps",
                                          "--concurrency", str(CONCURRENCY)])
            wait_until(lambda: iii_ready(client, (engine, worker), {*FUNCTIONS.values(), "bench::arm"}),
                       60, "the worker to register its functions")
            yield client, worker, ns
    finally:
        client.close()
        cleanup_keys(b.r, ns)


def one_round(b: Bench, setup: str, calls: int, warmup: int, jobs: int) -> dict[str, Any]:
    from iii_broker import Enqueue

    out: dict[str, Any] = {}
    with cluster(b, setup) as (client, worker, ns):
        for key, function in FUNCTIONS.items():
            def call(function: str = function) -> Any:
                return client.trigger(function, {}, timeout_ms=10_000)
            latencies_us(call, warmup)
            out[f"lat-{key}"] = latencies_us(call, calls)
        action = Enqueue(queue=QUEUE)

        def arm(n: int, key: str) -> None:
            client.trigger("bench::arm", {"redis_url": b.redis_url, "key": key, "n": n})

        for key, function in FUNCTIONS.items():
            def enqueue(function: str = function) -> Any:
                return client.trigger(function, {}, action=action)
            wait_until(lambda: enqueue() is not None, 60, f"queue {QUEUE!r} to take jobs")
            throughput(b.r, b.redis_pid, worker, arm, enqueue, min(1000, jobs), f"{b.ns}:done",
                       preload=False)  # warm-up
            out[f"drain-{key}"] = drain_with_writer(b, ns, worker, arm, enqueue, jobs, function)
        worker.check()
    return out


def report(args: argparse.Namespace, results: dict[str, list[dict[str, Any]]], r: redis.Redis,
           load: tuple[float, float, float]) -> str:
    import datetime

    def med(setup: str, f: Any) -> float:
        return statistics.median(f(x) for x in results[setup])

    def p(key: str, q: float) -> dict[str, float]:
        return {s: med(s, lambda x: pct(x[key], q)) for s in SETUPS}

    def drain(key: str, field: str) -> dict[str, float]:
        return {s: med(s, lambda x: x[key][field]) for s in SETUPS}

    def paired(s: str, f: Any) -> float:
        """The median over rounds of ``f(round of s) / f(the same round's off)``: set-ups
        of one round ran minutes apart, so the machine's drift cancels out."""
        return statistics.median(f(x) / f(o) for x, o in zip(results[s], results["off"],
                                                                strict=True))

    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Observability benchmark: the hot path with traces, logs, history and metrics on",
        "",
        f"Run {now} by `python bench/bench_observability.py --calls {args.calls} "
        f"--jobs {args.jobs} --rounds {args.rounds}`.",
        "",
        versions(r, load, packages=("kombu", "redis", "opentelemetry-sdk")).rstrip(),
        f"- One engine and one `iii-worker --concurrency {CONCURRENCY}` per set-up; two "
        "handlers: `bench::noop` (does nothing) and `bench::noop_logged` (logs one INFO line "
        f"through `ctx.logger`); one Redis at `{args.redis_url}`.",
        "",
        f"## Sync round trip ({args.calls} calls per round and handler, µs, median of "
        f"{args.rounds} rounds)",
        "",
        "| set-up | no-op p50 | p99 | vs off | logging no-op p50 | p99 | vs off |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    p50 = {k: p(f"lat-{k}", 0.5) for k in FUNCTIONS}
    p99 = {k: p(f"lat-{k}", 0.99) for k in FUNCTIONS}
    rt = {k: {s: paired(s, lambda x, k=k: pct(x[f"lat-{k}"], 0.5)) for s in SETUPS}
          for k in FUNCTIONS}
    for s in SETUPS:
        cells = []
        for k in FUNCTIONS:
            cells += [f"{p50[k][s]:.0f}", f"{p99[k][s]:.0f}", f"{rt[k][s]:.2f}×"]
        lines.append(f"| {LABELS[s]} | " + " | ".join(cells) + " |")
    rate = {k: drain(f"drain-{k}", "rate") for k in FUNCTIONS}
    wcpu = {k: drain(f"drain-{k}", "worker_cpu") for k in FUNCTIONS}
    rcpu = {k: drain(f"drain-{k}", "redis_drain_cpu") for k in FUNCTIONS}
    tcpu = {k: drain(f"drain-{k}", "writer_cpu") for k in FUNCTIONS}
    lines += [
        "",
        f"## Queue drain ({args.jobs} jobs preloaded on a named queue, median of "
        f"{args.rounds} rounds)",
        "",
        "| set-up | handler | drain jobs/s | time vs off | worker CPU µs/job | "
        "its writer's CPU µs/job | Redis CPU µs/job | all three vs off |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    dt = {k: {s: paired(s, lambda x, k=k: 1 / x[f"drain-{k}"]["rate"]) for s in SETUPS}
          for k in FUNCTIONS}

    def machine_cpu(x: dict[str, Any], k: str) -> float:
        d = x[f"drain-{k}"]
        return float(d["worker_cpu"] + d.get("writer_cpu", 0.0) + d["redis_drain_cpu"])
    mc = {k: {s: paired(s, lambda x, k=k: machine_cpu(x, k)) for s in SETUPS} for k in FUNCTIONS}
    for k in FUNCTIONS:
        for s in SETUPS:
            lines.append(f"| {LABELS[s]} | {FUNCTIONS[k]} | {rate[k][s]:,.0f} | "
                         f"{dt[k][s]:.2f}× | {wcpu[k][s]:.0f} | "
                         f"{tcpu[k][s]:.0f} | {rcpu[k][s]:.0f} | {mc[k][s]:.2f}× |")
    worst_rt = max(rt[k][s] for k in FUNCTIONS for s in ("on", "otlp"))
    worst_drain = max(dt[k][s] for k in FUNCTIONS for s in ("on", "otlp"))
    worst_on = max(dt[k]["on"] for k in FUNCTIONS)
    lines += [
        "",
        "## Targets",
        "",
        "| target | measured | goal | result |",
        "|---|---:|---:|:---:|",
        f"| sync p50, on / off (worst of both handlers and both on set-ups) | {worst_rt:.2f}× "
        f"| ≤ 1.3× | {'PASS' if worst_rt <= 1.3 else 'FAIL'} |",
        f"| queue drain time, on / off (worst handler, no export) | {worst_on:.2f}× | ≤ 1.3× | "
        f"{'PASS' if worst_on <= 1.3 else 'FAIL'} |",
        f"| queue drain time, on / off (worst of both handlers and both on set-ups) | "
        f"{worst_drain:.2f}× | ≤ 1.3× | {'PASS' if worst_drain <= 1.3 else 'FAIL'} |",
        "",
        "## How it is measured",
        "",
        "- Each round starts a fresh namespace with an engine and a worker for each set-up in "
        "turn (off, on, OTLP); the set-up's engine settings file enables or disables the module, "
        "which the worker reads from Redis. Rounds repeat the three. Rates, latencies and CPU "
        "figures are medians over rounds; every \"vs off\" figure is the median over rounds "
        "of that round's set-up against the same round's off (paired: on this machine the "
        "same set-up's drain rate moves by ±15% from one minute to the next, and pairing "
        "cancels that drift).",
        f"- Sync: {args.warmup} warm-up calls, then {args.calls} measured calls, one at a time "
        "from one thread, `time.perf_counter_ns` around each.",
        "- Drain: as bench_queues: the worker is paused (SIGSTOP), the jobs are enqueued by one "
        "thread, then SIGCONT; drain rate = N / (worker's last-job time − resume time). CPU "
        "columns from /proc over the drain; the writer's (the worker's telemetry writer "
        "process, docs/observability.md) until it stored the last job's history record. "
        "\"All three vs off\" is the CPU the drain cost the machine (worker + writer + "
        "Redis), on / off: what a machine with no core to spare would feel.",
        "- OTLP: the endpoint is a separate process (`--serve-sink`) answering 200 to every "
        "POST without decoding it; runs' spans and handlers' log records go to it through "
        "iii-broker's own exporter threads (OTLP/HTTP protobuf).",
    ]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> str:
    load = os.getloadavg()
    b = Bench(args.redis_url)
    b.ns = f"bencho{uuid.uuid4().hex[:6]}"
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in SETUPS}
    for i in range(args.rounds):
        for setup in SETUPS:
            res = one_round(b, setup, args.calls, args.warmup, args.jobs)
            results[setup].append(res)
            print(f"round {i + 1} {setup}: " + ", ".join(
                f"{k} p50 {pct(res[f'lat-{k}'], 0.5):.0f} µs, drain "
                f"{res[f'drain-{k}']['rate']:,.0f} jobs/s" for k in FUNCTIONS), file=sys.stderr)
    return report(args, results, b.r, load)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.md")
    parser.add_argument("--serve-sink", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_sink:
        return serve_sink(args.serve_sink)
    if min(args.calls, args.warmup, args.rounds, args.jobs) < 1:
        parser.error("--calls, --warmup, --rounds and --jobs must be at least 1")
    return report_to(args.out, lambda: run(args), "observability")


if __name__ == "__main__":
    sys.exit(main())
