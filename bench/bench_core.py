"""Core benchmark: iii-broker vs Celery vs raw redis-py, one run, one Redis.

    python bench/bench_core.py                      # full run (2000 calls, 20000 jobs)
    python bench/bench_core.py --calls 200 --jobs 2000

Measures (a) sync round trip of ``trigger`` to a no-op on a separate ``iii-worker``,
(b) Celery ``delay().get()`` to a threads-pool worker, (c) the floor: a raw redis-py
LPUSH/BRPOP request-reply with a separate echo process, and (d) fire-and-forget
throughput of one worker process at concurrency 8, iii (``action=Void``) vs Celery
(``ignore_result=True``). Prints a markdown report and writes it to its section of
bench/results.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # so `bench.*` imports work as `python bench/bench_core.py`

CONCURRENCY = 8
# Long enough that a worker paused (SIGSTOP) while the queue is preloaded is not swept.
HEARTBEAT_S = 20.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- processes -------------------------------------------------------------------------


class Child:
    """A process this bench started; output goes to a log file."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self._log,
                                      stderr=subprocess.STDOUT, start_new_session=True)

    def check(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    def cpu_s(self) -> float:
        return proc_cpu_s(self.popen.pid)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(timeout=10)
        self._log.close()


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (NaN when /proc cannot tell)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return float("nan")


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except RuntimeError:
            raise  # a child died: no point waiting
        except Exception as exc:  # noqa: BLE001 - not ready yet
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last!r})")


def child_env(settings: Any = None) -> dict[str, str]:
    """The environment of the bench's children: ours without ``III_*``, plus ``settings``'."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
    env.update(settings.child_env() if settings else {}, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return env


def iii_ready(client: Any, watch: tuple[Child, ...], functions: set[str]) -> bool:
    """Whether ``functions`` are registered; raises if one of ``watch`` died."""
    from iii_broker import IIIError

    for child in watch:
        child.check()
    try:
        fns = client.trigger("engine::functions::list", {}, timeout_ms=2000)["functions"]
    except IIIError:
        return False
    return functions <= {f["function_id"] for f in fns}


def celery_worker_args(queue: str) -> list[str]:
    """``celery worker`` arguments: threads pool at concurrency 8 on ``queue``, less chatter."""
    return ["worker", "--pool", "threads", "--concurrency", str(CONCURRENCY), "-Q", queue,
            "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]


def celery_ready(worker: Child, task: Any) -> bool:
    """Whether the Celery ``worker`` runs ``task`` (one returning None); raises if it died."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    worker.check()
    try:
        return task.delay().get(timeout=2) is None
    except CeleryTimeout:
        return False


def show_tails(children: list[Child]) -> None:
    for child in children:
        print(f"----- {child.name} (last lines)\n{child.tail()}", file=sys.stderr)


def stop_children(children: list[Child]) -> None:
    """Stop ``children``, the last started first; one that will not stop does not stop the rest."""
    for child in reversed(children):
        try:
            child.stop()
        except Exception as exc:  # noqa: BLE001 - stop the others all the same
            print(f"could not stop {child.name} (pid {child.popen.pid}): {exc}", file=sys.stderr)


def serve_echo(redis_url: str, req: str, rep: str, max_s: float = 1800) -> int:
    """The raw floor's server: BRPOP a request, LPUSH it back as the reply, until SIGTERM."""
    r = redis.Redis.from_url(redis_url)
    parent, deadline = os.getppid(), time.monotonic() + max_s
    r.lpush(rep, b"ready")
    while time.monotonic() < deadline and os.getppid() == parent:
        item = r.brpop([req], timeout=1)
        if item is not None:
            r.lpush(rep, item[1])
    return 0


# -- measuring -------------------------------------------------------------------------


def latencies_us(call: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter_ns()
        call()
        out.append((time.perf_counter_ns() - t) / 1000)
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def throughput(r: redis.Redis, redis_pid: int, worker: Child, arm: Callable[[int, str], Any],
               publish: Callable[[], Any], n: int, done_key: str, preload: bool) -> dict[str, float]:
    """Publish ``n`` fire-and-forget no-ops; the worker reports when it ran the n-th.

    ``preload``: the worker is paused (SIGSTOP) while publishing and resumed after,
    so enqueue and drain are timed apart; otherwise it drains while we publish.
    """
    r.delete(done_key)
    arm(n, done_key)  # a sync call: the worker is up and its countdown is armed
    if preload:
        worker.signal(signal.SIGSTOP)
    try:
        c0, r0 = time.process_time(), proc_cpu_s(redis_pid)
        t0 = time.time()
        for _ in range(n):
            publish()
        t_pub = time.time()
        c1, r1, w1 = time.process_time(), proc_cpu_s(redis_pid), worker.cpu_s()
    finally:
        if preload:
            worker.signal(signal.SIGCONT)
    t_start = t_pub if preload else t0
    deadline, item = time.monotonic() + max(60, n / 200), None
    while item is None and time.monotonic() < deadline:  # short BLPOPs: redis-py 8 times out at 5 s
        worker.check()
        item = r.blpop([done_key], timeout=1)
    if item is None:
        raise TimeoutError(f"the worker did not finish {n} jobs in time")
    t_end = float(item[1])
    r2, w2 = proc_cpu_s(redis_pid), worker.cpu_s()
    r.delete(done_key)
    return {"enqueue": n / (t_pub - t0), "rate": n / (t_end - t_start),
            "client_cpu": (c1 - c0) / n * 1e6, "worker_cpu": (w2 - w1) / n * 1e6,
            "redis_pub_cpu": (r1 - r0) / n * 1e6, "redis_drain_cpu": (r2 - r1) / n * 1e6}


# -- report ----------------------------------------------------------------------------


def versions(r: redis.Redis, load: tuple[float, float, float],
             packages: tuple[str, ...] = ("kombu", "celery", "redis"), extra: str = "") -> str:
    """The report's lines on the machine, the versions of ``packages`` and the iii-broker tree."""
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?")
    pkgs = ", ".join(f"{p} {metadata.version(p)}" for p in packages)
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "iii_broker"], cwd=ROOT,
                               text=True, capture_output=True, timeout=10).stdout.split("\n")
        changed = [line[3:] for line in dirty if line.strip()]
    except (OSError, subprocess.SubprocessError):
        head, changed = "?", []
    tree = f"`{head}`" + (f" + uncommitted changes to {', '.join(changed)}" if changed else "")
    return (f"- Machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu}, "
            f"{platform.system()} {platform.release()}; load average "
            f"{load[0]:.2f} when the run started, {os.getloadavg()[0]:.2f} when it ended\n"
            f"- Python {platform.python_version()}; {pkgs} (redis-py); "
            f"Redis server {r.info('server')['redis_version']}{extra}\n"
            f"- iii-broker at {tree}\n")


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def report(args: argparse.Namespace, lat: dict[str, list[float]], tp: dict[str, dict[str, float]],
           r: redis.Redis, load: tuple[float, float, float]) -> str:
    p50 = {k: pct(v, 0.5) for k, v in lat.items()}
    names = {"iii": "iii-broker `trigger`", "celery": "Celery `delay().get()`",
             "raw": "raw redis-py LPUSH + BRPOP (floor)"}
    out = [f"# Core benchmark: iii-broker vs Celery vs raw Redis\n\n"
           f"Run {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} by "
           f"`python bench/bench_core.py --calls {args.calls} --jobs {args.jobs}`.\n\n"
           f"{versions(r, load)}- Broker and store: one Redis at `{args.redis_url}` for everything; "
           f"every worker is a separate process at concurrency {CONCURRENCY}.\n",
           f"## Sync round trip to a no-op ({args.calls} calls each, µs)\n",
           "| path | p50 | p99 | mean | p50 vs floor |", "|---|---:|---:|---:|---:|"]
    for key, label in names.items():
        v = lat[key]
        out.append(f"| {label} | {p50[key]:.0f} | {pct(v, 0.99):.0f} | {sum(v) / len(v):.0f} | "
                   f"{p50[key] / p50['raw']:.2f}× |")
    out += ["", f"## Fire-and-forget throughput ({args.jobs} no-op jobs, one worker process, "
                f"concurrency {CONCURRENCY})\n",
            "| path | enqueue jobs/s | drain jobs/s (preloaded) | publish+drain jobs/s "
            "(concurrent) | client CPU µs/publish | worker CPU µs/job | Redis CPU µs/job |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for key, label in (("iii", "iii-broker `trigger(..., action=Void)`"),
                       ("celery", "Celery `.delay()`, `ignore_result=True`")):
        pre, con = tp[f"{key}-preload"], tp[f"{key}-concurrent"]
        out.append(f"| {label} | {fmt_rate(pre['enqueue'])} | {fmt_rate(pre['rate'])} | "
                   f"{fmt_rate(con['rate'])} | {pre['client_cpu']:.0f} | {pre['worker_cpu']:.0f} | "
                   f"{pre['redis_pub_cpu'] + pre['redis_drain_cpu']:.0f} |")
    checks = [
        ("sync p50, iii / Celery", p50["iii"] / p50["celery"], "≤ 0.5×", p50["iii"] <= 0.5 * p50["celery"]),
        ("sync p50, iii / raw Redis floor", p50["iii"] / p50["raw"], "≤ 3×", p50["iii"] <= 3 * p50["raw"]),
        ("drain throughput, iii / Celery", tp["iii-preload"]["rate"] / tp["celery-preload"]["rate"],
         "≥ 2×", tp["iii-preload"]["rate"] >= 2 * tp["celery-preload"]["rate"]),
    ]
    out += ["", "## Targets\n", "| target | measured | goal | result |", "|---|---:|---:|:---:|"]
    out += [f"| {name} | {ratio:.2f}× | {goal} | {'PASS' if ok else 'FAIL'} |"
            for name, ratio, goal, ok in checks]
    out += ["", "## How it is measured\n",
            f"- Sync: each path is warmed up with {args.warmup} calls, then the {args.calls} measured "
            f"calls are split into {args.rounds} rounds interleaved across the three paths, so drift "
            "on the machine hits all three alike. One caller thread, one call at a time, "
            "`time.perf_counter_ns` around each call.",
            "- Celery: `celery worker --pool threads --concurrency 8` (default prefetch multiplier "
            "4), JSON serializer, Redis broker and result backend with a per-run `global_keyprefix` "
            "and queue; gossip, mingle, heartbeat and remote control off (less work for Celery).",
            "- Raw floor: a separate Python process BRPOPs a request list and LPUSHes each request "
            "onto a reply list; the client LPUSHes and BRPOPs, one redis-py connection each.",
            "- Throughput: each no-op decrements an in-process countdown (a lock and a decrement); "
            "the N-th run RPUSHes `time.time()` to a Redis list the bench BLPOPs, so the end time "
            "is taken inside the worker when the last job has run, at one Redis command per run. "
            "*Preloaded*: the worker is paused with SIGSTOP, all N jobs are published (the "
            "*enqueue* rate: one publishing thread, nothing draining), then SIGCONT; drain rate = "
            "N / (worker's last-job time − resume time). *Concurrent*: the worker runs while the "
            "N jobs are published; rate = N / (last-job time − first publish).",
            "- CPU columns come from /proc (10 ms ticks) over the preloaded run: client CPU while "
            "publishing, worker CPU while draining, Redis CPU over both; per job.",
            f"- iii processes run with `III_HEARTBEAT_INTERVAL_S={HEARTBEAT_S:g}` so a paused "
            "worker is not swept while the queue is preloaded. Targets compare p50s and the "
            "preloaded drain rates."]
    return "\n".join(out) + "\n"


# -- the run ---------------------------------------------------------------------------


def cleanup_keys(r: redis.Redis, ns: str) -> int:
    keys: list[bytes] = []
    for pattern in (f"{ns}*", f"_kombu.binding.{ns}*", f"_kombu.binding_permanent.{ns}*"):
        keys += list(r.scan_iter(match=pattern, count=1000))
    for i in range(0, len(keys), 500):
        r.delete(*keys[i:i + 500])
    deadlines = [m for m in r.zrange("_kombu.binding_deadlines", 0, -1) if ns.encode() in m]
    if deadlines:
        r.zrem("_kombu.binding_deadlines", *deadlines)
    return len(keys)


def run(args: argparse.Namespace) -> str:
    from iii_broker import App, Settings, Void

    load = os.getloadavg()
    ns = f"bench{uuid.uuid4().hex[:8]}"
    settings = Settings(broker_url=args.redis_url, redis_url=args.redis_url, namespace=ns,
                        heartbeat_interval_s=HEARTBEAT_S, log_level="WARNING")
    # bench.celery_app reads these when imported, here and in the Celery worker.
    os.environ.update(BENCH_REDIS_URL=args.redis_url, BENCH_PREFIX=f"{ns}:celery:",
                      BENCH_QUEUE=f"{ns}.celery")
    from bench.celery_app import app as capp

    queue = os.environ["BENCH_QUEUE"]
    env = child_env(settings)
    bindir = Path(sys.executable).parent
    r = redis.Redis.from_url(args.redis_url)
    redis_pid = int(r.info("server")["process_id"])
    log_dir = Path(tempfile.mkdtemp(prefix="iii-bench-"))
    children: list[Child] = []
    client = App("bench-client", settings=settings)
    req, rep = f"{ns}:raw:req", f"{ns}:raw:rep"
    try:
        def spawn(name: str, cmd: list[str]) -> Child:
            children.append(Child(name, cmd, env, log_dir))
            return children[-1]
        engine = spawn("engine", [str(bindir / "iii-broker"), "engine"])
        worker = spawn("iii-worker", [str(bindir / "iii-worker"), "-A", "bench.apps",
                                      "--concurrency", str(CONCURRENCY)])
        cworker = spawn("celery-worker", [sys.executable, "-m", "celery", "-A", "bench.celery_app",
                                          *celery_worker_args(queue)])
        echo = spawn("raw-echo", [sys.executable, str(Path(__file__).resolve()), "--serve-echo",
                                  req, rep, "--redis-url", args.redis_url])

        wait_until(lambda: iii_ready(client, (engine, worker), {"bench::noop", "bench::arm"}), 60,
                   "the iii worker to register bench::noop")
        noop, tick, carm = (capp.tasks[f"bench.{t}"] for t in ("noop", "tick", "arm"))
        wait_until(lambda: celery_ready(cworker, noop), 60, "the Celery worker to answer")
        wait_until(lambda: echo.check() or r.brpop([rep], timeout=1), 30, "the echo process")
        print(f"namespace {ns}: engine, iii worker, Celery worker and echo process are up; "
              f"logs in {log_dir}", file=sys.stderr)

        def raw_call() -> None:
            token = uuid.uuid4().bytes
            r.lpush(req, token)
            item = r.brpop([rep], timeout=10)
            if item is None or item[1] != token:
                raise RuntimeError(f"raw echo: bad reply {item!r}")

        calls: dict[str, Callable[[], Any]] = {
            "iii": lambda: client.trigger("bench::noop", {}, timeout_ms=10_000),
            "celery": lambda: noop.delay().get(timeout=10),
            "raw": raw_call,
        }
        lat: dict[str, list[float]] = {k: [] for k in calls}
        for call in calls.values():
            latencies_us(call, args.warmup)
        per_round = max(1, args.calls // args.rounds)
        for _ in range(args.rounds):
            for key, call in calls.items():
                lat[key] += latencies_us(call, per_round)
        print("sync round trips done", file=sys.stderr)

        systems = {
            "iii": (worker, lambda n, key: client.trigger(
                "bench::arm", {"redis_url": args.redis_url, "key": key, "n": n}),
                lambda: client.trigger("bench::noop", {}, action=Void)),
            "celery": (cworker, lambda n, key: carm.delay(args.redis_url, key, n).get(timeout=10),
                       tick.delay),
        }
        tp: dict[str, dict[str, float]] = {}
        for preload in (True, False):
            for key, (child, arm, publish) in systems.items():
                mode = "preload" if preload else "concurrent"
                tp[f"{key}-{mode}"] = throughput(r, redis_pid, child, arm, publish, args.jobs,
                                                 f"{ns}:done", preload)
                print(f"throughput {key} {mode}: {tp[f'{key}-{mode}']['rate']:,.0f} jobs/s",
                      file=sys.stderr)
        text = report(args, lat, tp, r, load)
    except BaseException:
        show_tails(children)
        raise
    finally:
        stop_children(children)
        client.close()
        capp.close()
        print(f"removed {cleanup_keys(r, ns)} Redis keys of namespace {ns}", file=sys.stderr)
        r.close()
    shutil.rmtree(log_dir, ignore_errors=True)  # kept when the run failed
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="measured sync calls per path")
    parser.add_argument("--warmup", type=int, default=300, help="warm-up sync calls per path")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds of sync calls")
    parser.add_argument("--jobs", type=int, default=20000, help="fire-and-forget jobs per run")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.md")
    parser.add_argument("--serve-echo", nargs=2, metavar=("REQ", "REP"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_echo:
        return serve_echo(args.redis_url, *args.serve_echo)
    if min(args.calls, args.warmup, args.rounds, args.jobs) < 1:
        parser.error("--calls, --warmup, --rounds and --jobs must be at least 1")
    return report_to(args.out, lambda: run(args), "core")


SECTIONS = ("core", "queues", "web", "cron", "stream", "observability", "gateway")


def report_to(out: Path, make: Callable[[], str], section: str) -> int:
    """Run a bench (SIGTERM still runs its clean-up), print its report, and write it as
    ``section`` of ``out`` (bench/results.md holds every bench's latest report, each
    between its own markers, so one bench's run leaves the others' results alone)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally blocks run
    text = make()
    write_section(out, section, text)
    print(text)
    print(f"written to {out} (section {section!r})", file=sys.stderr)
    return 0


def write_section(out: Path, section: str, text: str) -> None:
    old = out.read_text() if out.exists() else ""
    found = {name: m.group(0) for name in SECTIONS
             if (m := re.search(_section_re(name), old, re.S))}
    found[section] = f"<!-- bench:{section} -->\n{text.strip()}\n<!-- /bench:{section} -->"
    out.write_text("\n\n".join(found[name] for name in SECTIONS if name in found) + "\n")


def _section_re(name: str) -> str:
    return rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->"


if __name__ == "__main__":
    sys.exit(main())
