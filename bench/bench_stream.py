"""Stream benchmark: 1,000 WebSocket subscribers of one group, served by one stream process.

    python bench/bench_stream.py                                   # full run
    python bench/bench_stream.py --sockets 200 --updates 20 --duration 3 --rounds 1   # quick run

*Fan-out*: an engine and ONE ``iii-broker stream`` process; client processes
(``--clients``, asyncio ``websockets``) open ``--sockets`` sockets and join the same group;
then ``--updates`` calls of ``stream::set`` through the engine, one at a time, each timed
from just before the call until the last subscriber has the event; memory per socket is the
stream process's RSS after the sockets joined minus before, over their number.
*HTTP*: bench_web's iii path (``iii-broker web`` → ``iii-worker``, ``wrk`` with 64
connections) with no stream process, then with the stream process holding the same
subscribers, then with them receiving 10 updates/s, in ``--rounds`` alternating rounds.
Prints a markdown report with the targets (PASS/FAIL) and writes it to its section of
bench/results.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # so `bench.*` imports work as `python bench/bench_stream.py`

from bench.bench_core import (  # noqa: E402
    Child,
    child_env,
    cleanup_keys,
    pct,
    proc_cpu_s,
    report_to,
    show_tails,
    stop_children,
    wait_until,
)
from bench.bench_core import versions as core_versions  # noqa: E402
from bench.bench_web import EXPECTED, free_port, get_json, measure, tree, wrk  # noqa: E402
from bench.web_apps import PATH  # noqa: E402

STREAM, GROUP, ITEM = "bench", "room", "counter"
TARGET_P99_MS = 100.0
LIVE_UPDATES_PER_S = 10
WEB_WORKERS, WEB_THREADS, WORKER_CONCURRENCY = 2, 16, 16  # bench_web's defaults


# -- the subscribers (a child process: ``bench_stream.py client ...``) ----------------------


async def subscribe(url: str, sockets: int) -> None:
    """Open ``sockets`` sockets joined to the bench group. Prints ``{"ready": n}`` once all
    had their sync, then ``{"seq": s, "t": time}`` once every socket has update ``s`` (``t``:
    when the last one got it, ``time.time()``). Ends when stdin closes."""
    import websockets

    have: dict[int, int] = {}
    last: dict[int, float] = {}
    synced = asyncio.Event()
    n_synced = 0

    def say(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    async def one(i: int) -> None:
        try:
            await listen(i)
        except Exception as exc:  # noqa: BLE001 - reported: the bench waits on every socket
            closed[i] = repr(exc)
        say({"closed": i, "why": closed.get(i)})

    closed: dict[int, Any] = {}
    odd: list[str] = []  # messages that are not stream events (errors)

    async def listen(i: int) -> None:
        nonlocal n_synced
        async with websockets.connect(url, max_size=None, max_queue=None, ping_interval=None,
                                      open_timeout=60, compression=None) as ws:
            closed[i] = None
            join = json.dumps({"type": "join", "data": {
                "subscriptionId": f"b{os.getpid()}-{i}", "streamName": STREAM, "groupId": GROUP}})
            await ws.send(join)
            async for raw in ws:
                t = time.time()
                msg = json.loads(raw)
                event = msg.get("event") or {}
                if msg.get("type") == "error":
                    odd.append(str(raw)[:300])
                if (msg.get("error") or {}).get("code") == "broker_unavailable":  # join again
                    await asyncio.sleep(0.1)
                    await ws.send(json.dumps({"type": "leave", "data": json.loads(join)["data"]}))
                    await ws.send(join)
                if event.get("type") == "sync":
                    n_synced += 1
                    if n_synced == sockets:
                        synced.set()
                elif event.get("type") in ("create", "update"):
                    seq = event["data"]["seq"]
                    have[seq] = have.get(seq, 0) + 1
                    last[seq] = max(last.get(seq, 0.0), t)
                    if have[seq] == sockets:
                        say({"seq": seq, "t": last[seq]})
            closed[i] = (ws.close_code, ws.close_reason)

    tasks = []
    for start in range(0, sockets, 50):  # 50 at a time: no thundering herd on the listener
        tasks += [asyncio.create_task(one(i)) for i in range(start, min(sockets, start + 50))]
        await asyncio.sleep(0.05)
    waiter = asyncio.create_task(synced.wait())
    t0 = time.monotonic()
    done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED, timeout=120)
    if waiter not in done:
        for task in done:
            task.result()  # a socket that failed says why
        raise SystemExit(f"{n_synced} of {sockets} sockets had their sync after "
                         f"{time.monotonic() - t0:.1f} s; closed by the server: "
                         f"{ {i: c for i, c in closed.items() if c} }; other messages: {odd[:3]}")
    say({"ready": sockets, "rejoins": len(odd), "errors": sorted({m[:200] for m in odd})[:3]})
    stdin_closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await asyncio.wait([asyncio.ensure_future(stdin_closed), *tasks], timeout=1800,
                       return_when=asyncio.FIRST_COMPLETED)
    os._exit(0)  # the sockets close with the process


class Subscribers:
    """``clients`` child processes holding ``sockets`` subscribers between them."""

    def __init__(self, url: str, sockets: int, clients: int, env: dict[str, str],
                 log_dir: Path) -> None:
        self.lines: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        self.procs = []
        shares = [sockets // clients + (i < sockets % clients) for i in range(clients)]
        for i, share in enumerate(shares):
            proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "client", "--url", url,
                 "--sockets", str(share)], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=open(log_dir / f"client{i}.log", "wb"),  # noqa: SIM115
                text=True, start_new_session=True)
            self.procs.append(proc)
            threading.Thread(target=self._read, args=(i, proc), daemon=True).start()

    def _read(self, i: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.put((i, json.loads(line)))
        self.lines.put((i, {"exit": proc.wait()}))

    def wait_all(self, key: str, value: Any, timeout: float) -> list[dict[str, Any]]:
        """Wait until every client printed a line with ``key`` == ``value`` (any value when
        ``value`` is None); returns those lines."""
        got: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while len(got) < len(self.procs):
            try:
                i, line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"{len(got)} of {len(self.procs)} clients saw {key}={value!r} "
                                   f"within {timeout:.0f} s") from None
            if "exit" in line:
                raise RuntimeError(f"client {i} exited with {line['exit']}")
            if "closed" in line:
                raise RuntimeError(f"client {i}: the server closed a socket: {line}")
            if key in line and (value is None or line[key] == value):
                got[i] = line
        return list(got.values())

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.stdin.close()  # type: ignore[union-attr]
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- processes -------------------------------------------------------------------------


def rss_kib(pids: list[int]) -> int:
    """Resident memory of ``pids``, KiB (from /proc/PID/status)."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Bench:
    """One namespace: an engine, and the stream process and subscribers as asked."""

    def __init__(self, args: argparse.Namespace) -> None:
        from iii_broker import App, Settings

        self.args = args
        self.ns = f"benchstream{uuid.uuid4().hex[:8]}"
        self.stream_port = free_port()
        self.settings = Settings(broker_url=args.redis_url, redis_url=args.redis_url,
                                 namespace=self.ns, log_level="WARNING")
        self.env = dict(child_env(self.settings), III_STREAM_PORT=str(self.stream_port))
        self.bindir = Path(sys.executable).parent
        self.log_dir = Path(tempfile.mkdtemp(prefix="iii-bench-stream-"))
        self.children: list[Child] = []
        self.stream: Child | None = None
        self.subscribers: Subscribers | None = None
        self.rejoins, self.join_errors = 0, list[str]()  # joins answered with an error, sent again
        self.client = App("bench-stream", settings=self.settings)
        self.url = f"ws://127.0.0.1:{self.stream_port}/"

    def spawn(self, name: str, cmd: list[str], **env: str) -> Child:
        self.children.append(Child(name, cmd, {**self.env, **env}, self.log_dir))
        return self.children[-1]

    def set_item(self, seq: int) -> None:
        self.client.trigger("stream::set", {"stream_name": STREAM, "group_id": GROUP,
                                            "item_id": ITEM, "data": {"id": ITEM, "seq": seq}},
                            timeout_ms=10_000)

    def start_engine(self) -> Child:
        engine = self.spawn("engine", [str(self.bindir / "iii-broker"), "engine"])

        def answers() -> bool:
            engine.check()
            self.set_item(0)
            return True
        wait_until(answers, 60, "stream::set to answer")
        return engine

    def start_stream(self, sockets: int) -> list[int]:
        """The stream process and ``sockets`` subscribers; returns its pids and RSS (KiB)
        before and after the subscribers joined."""
        self.stream = self.spawn("stream", [str(self.bindir / "iii-broker"), "stream"])
        wait_until(lambda: self.stream.check() or listening(self.stream_port), 60,  # type: ignore[union-attr]
                   "the stream process to listen")
        warm = Subscribers(self.url, 10, 1, self.env, self.log_dir)  # loads what a socket needs
        try:
            warm.wait_all("ready", None, 60)
        finally:
            warm.stop()
        time.sleep(1)  # the server notices the warm-up sockets closed
        pids = tree(self.stream.popen.pid)
        before = rss_kib(pids)
        self.subscribers = Subscribers(self.url, sockets, self.args.clients, self.env, self.log_dir)
        ready = self.subscribers.wait_all("ready", None, 180)
        self.rejoins = sum(line["rejoins"] for line in ready)
        self.join_errors = sorted({e for line in ready for e in line["errors"]})
        time.sleep(1)
        return [before, rss_kib(pids)]

    def stop_stream(self) -> None:
        if self.subscribers:
            self.subscribers.stop()
            self.subscribers = None
        if self.stream:
            self.stream.stop()
            self.children.remove(self.stream)
            self.stream = None

    def close(self, r: redis.Redis) -> None:
        self.stop_stream()
        stop_children(self.children)
        self.client.close()
        print(f"removed {cleanup_keys(r, self.ns)} Redis keys of namespace {self.ns}",
              file=sys.stderr)


# -- the parts -------------------------------------------------------------------------


def fanout(b: Bench) -> dict[str, Any]:
    args = b.args
    before, after = b.start_stream(args.sockets)
    assert b.stream is not None and b.subscribers is not None
    stream_pids = tree(b.stream.popen.pid)
    print(f"{args.sockets} subscribers joined; stream RSS {before} → {after} KiB", file=sys.stderr)
    lat, calls = [], []
    cpu0 = sum(proc_cpu_s(p) for p in stream_pids)
    for seq in range(1, args.updates + 1):
        t0 = time.time()
        b.set_item(seq)
        calls.append((time.time() - t0) * 1e3)
        reached = b.subscribers.wait_all("seq", seq, 30)
        lat.append((max(line["t"] for line in reached) - t0) * 1e3)
        time.sleep(args.gap_ms / 1e3)
    cpu = sum(proc_cpu_s(p) for p in stream_pids) - cpu0
    b.stop_stream()
    return {"latency_ms": lat, "call_ms": calls, "rss_before": before, "rss_after": after,
            "rejoins": b.rejoins, "join_errors": b.join_errors,
            "stream_cpu_per_update_ms": cpu / args.updates * 1e3}


def feed(b: Bench, stop: threading.Event, seq: int) -> None:
    """``stream::set`` LIVE_UPDATES_PER_S times a second until ``stop``."""
    while not stop.wait(1 / LIVE_UPDATES_PER_S):
        seq += 1
        b.set_item(seq)


def http(b: Bench, r: redis.Redis) -> dict[str, list[dict[str, Any]]]:
    """bench_web's iii path with no stream process, with idle subscribers, and with live ones."""
    args = b.args
    port = free_port()
    url = f"http://127.0.0.1:{port}{PATH}"
    redis_pid = int(r.info("server")["process_id"])
    worker = b.spawn("iii-worker", [str(b.bindir / "iii-worker"), "-A", "bench.web_apps",
                                    "--concurrency", str(WORKER_CONCURRENCY)])
    web = b.spawn("iii-web", [str(b.bindir / "iii-broker"), "web", "--workers", str(WEB_WORKERS),
                              "--threads", str(WEB_THREADS)], III_HTTP_PORT=str(port))

    def answers() -> bool:
        worker.check()
        web.check()
        status, body = get_json(url)
        return status == 200 and body == EXPECTED
    wait_until(answers, 60, "the iii route")
    wait_until(lambda: len(tree(web.popen.pid)) == WEB_WORKERS + 1, 30, "the web workers")
    procs = {"web": tree(web.popen.pid), "worker": [worker.popen.pid]}
    wrk(url, args.warmup)
    res: dict[str, list[dict[str, Any]]] = {"none": [], "idle": [], "live": []}
    for rnd in range(args.rounds):
        res["none"].append(measure(url, args.duration, procs, r, redis_pid))
        b.start_stream(args.sockets)
        res["idle"].append(measure(url, args.duration, procs, r, redis_pid))
        stop = threading.Event()
        feeder = threading.Thread(target=feed, args=(b, stop, 1000 * (rnd + 1)), daemon=True)
        feeder.start()
        res["live"].append(measure(url, args.duration, procs, r, redis_pid))
        stop.set()
        feeder.join()
        b.stop_stream()
        for key in res:
            s = res[key][-1]["stats"]
            print(f"round {rnd + 1} {key}: {s['rps']:,.0f} req/s, p99 {s['p99']:.2f} ms",
                  file=sys.stderr)
    return res


# -- report ----------------------------------------------------------------------------


def report(args: argparse.Namespace, fan: dict[str, Any], web: dict[str, list[dict[str, Any]]],
           r: redis.Redis, load: tuple[float, float, float]) -> str:
    lat, calls = fan["latency_ms"], fan["call_ms"]
    per_socket = (fan["rss_after"] - fan["rss_before"]) / args.sockets
    cmd = "python bench/bench_stream.py" + "".join(
        f" --{k.replace('_', '-')} {getattr(args, k):g}" for k, d in DEFAULTS.items()
        if getattr(args, k) != d)
    out = [f"# Stream benchmark: {args.sockets:,} WebSocket subscribers on one group\n\n"
           f"Run {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} by `{cmd}`.\n\n"
           + core_versions(r, load, ("gunicorn", "gevent", "flask", "flask-sock",
                                     "simple-websocket", "websockets", "redis")),
           f"- One engine, ONE `iii-broker stream` process (gunicorn, gevent worker); "
           f"{args.sockets:,} subscribers in {args.clients} client processes (asyncio "
           f"`websockets`), all joined to one group; one Redis at `{args.redis_url}`; "
           f"everything on this machine.\n",
           f"## Fan-out: `stream::set` until every subscriber has the event ({args.updates} "
           "updates)\n",
           "| ms | p50 | p99 | max | mean |", "|---|---:|---:|---:|---:|",
           f"| `stream::set` → all {args.sockets:,} subscribers have the update | "
           f"{pct(lat, 0.5):.1f} | {pct(lat, 0.99):.1f} | {max(lat):.1f} | "
           f"{statistics.fmean(lat):.1f} |",
           f"| the `stream::set` call alone (through the engine) | {pct(calls, 0.5):.1f} | "
           f"{pct(calls, 0.99):.1f} | {max(calls):.1f} | {statistics.fmean(calls):.1f} |",
           "",
           f"Stream process memory: {fan['rss_before'] / 1024:.1f} MiB RSS before the sockets, "
           f"{fan['rss_after'] / 1024:.1f} MiB with {args.sockets:,} joined: "
           f"**{per_socket:.1f} KiB per socket**. Stream process CPU per update (fan-out to "
           f"{args.sockets:,} sockets): {fan['stream_cpu_per_update_ms']:.1f} ms.\n",
           f"Joins answered with an error instead of a sync (and sent again by the client): "
           f"{fan['rejoins']}" + (f", e.g. `{fan['join_errors'][0][:160]}`" if fan["join_errors"]
                                  else "") + ".\n"]
    rows = {"none": "no stream process",
            "idle": f"stream process with {args.sockets:,} idle subscribers",
            "live": f"… and {LIVE_UPDATES_PER_S} updates/s fanned out to them "
                    f"({LIVE_UPDATES_PER_S * args.sockets:,} frames/s)"}
    rps = {k: statistics.median(m["stats"]["rps"] for m in v) for k, v in web.items() if v}
    if web["none"]:
        out += [f"## HTTP triggers beside the stream process (bench_web's iii path, "
                f"{args.duration:g} s × {args.rounds} rounds, medians)\n",
                "| while | req/s | p50 ms | p99 ms | web CPU µs/req | errors |",
                "|---|---:|---:|---:|---:|---:|"]
        for key, label in rows.items():
            ms = web[key]
            med = {q: statistics.median(m["stats"][q] for m in ms) for q in ("p50", "p99")}
            cpu = statistics.median(m["cpu"]["web"] / m["stats"]["requests"] * 1e6 for m in ms)
            errors = sum(m["stats"]["non2xx"] + m["stats"]["socket_errors"] for m in ms)
            out.append(f"| {label} | {rps[key]:,.0f} | {med['p50']:.2f} | {med['p99']:.2f} | "
                       f"{cpu:.0f} | {errors:.0f} |")
        out.append("\nEach round's req/s (none / idle / live): " + "; ".join(
            " / ".join(f"{web[k][i]['stats']['rps']:,.0f}" for k in rows)
            for i in range(len(web["none"]))) + ".\n")
    checks = [(f"fan-out p99, {args.sockets:,} subscribers", f"{pct(lat, 0.99):.1f} ms",
               f"≤ {TARGET_P99_MS:.0f} ms", pct(lat, 0.99) <= TARGET_P99_MS)]
    if web["none"]:
        ratio = rps["idle"] / rps["none"]
        checks.append(("HTTP req/s with the stream process / without", f"{ratio:.2f}×", "≥ 0.95×",
                       ratio >= 0.95))
    out += ["## Targets\n", "| target | measured | goal | result |", "|---|---:|---:|:---:|"]
    out += [f"| {name} | {value} | {goal} | {'PASS' if ok else 'FAIL'} |"
            for name, value, goal, ok in checks]
    out += ["", "## How it is measured\n",
            f"- The subscribers join the group `{STREAM}`/`{GROUP}` (each socket its own join, "
            "answered by a `sync`). Each update is one `stream::set` of the item "
            f"`{ITEM}` with data `{{\"id\", \"seq\"}}`, called through the engine by the bench "
            "(`App.trigger`, as a user would); the clock starts just before the call. Each client "
            "process notes `time.time()` as each socket receives the update and reports when all "
            "its sockets have it; an update's time is the latest of those minus the start. The "
            f"next update follows {args.gap_ms:g} ms after every subscriber had the last one.",
            "- Memory: VmRSS of the stream process (gunicorn's arbiter and its worker), after a "
            "warm-up of 10 sockets that joined and left, then again once all subscribers had their "
            "sync; the difference over their number is the memory per socket (server side only).",
            "- HTTP: the same engine, one `iii-worker --concurrency 16` (`bench/web_apps.py`) and "
            f"`iii-broker web --workers {WEB_WORKERS} --threads {WEB_THREADS}`, loaded like bench_web "
            f"(`wrk -t2 -c64`, {args.warmup:g} s warm-up once, {args.duration:g} s measured): "
            "without a stream process, then with the stream process and its subscribers (idle but for "
            f"its pings), then while {LIVE_UPDATES_PER_S} `stream::set`/s fan out to them; the stream "
            "process is stopped between rounds. The subscribers' client processes, the stream "
            "process, Redis, the engine and wrk share the machine's 2 cores with the web process.",
            "- Each run uses a fresh namespace; its Redis keys are deleted and its processes "
            "stopped at the end."]
    return "\n".join(out) + "\n"


# -- the run ---------------------------------------------------------------------------


DEFAULTS = {"sockets": 1000, "updates": 50, "clients": 2, "gap_ms": 50, "duration": 10,
            "warmup": 3, "rounds": 2}


def run(args: argparse.Namespace) -> str:
    load = os.getloadavg()
    r = redis.Redis.from_url(args.redis_url)
    b = Bench(args)
    try:
        b.start_engine()
        fan = fanout(b)
        p = fan["latency_ms"]
        print(f"fan-out: p50 {pct(p, 0.5):.1f} ms, p99 {pct(p, 0.99):.1f} ms", file=sys.stderr)
        web = http(b, r) if args.rounds else {"none": [], "idle": [], "live": []}
        text = report(args, fan, web, r, load)
    except BaseException:
        show_tails(b.children)
        print(f"logs in {b.log_dir}", file=sys.stderr)
        raise
    finally:
        b.close(r)
        r.close()
    shutil.rmtree(b.log_dir, ignore_errors=True)  # kept when the run failed
    return text


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["client"]:
        parser = argparse.ArgumentParser(prog="bench_stream.py client")
        parser.add_argument("--url", required=True)
        parser.add_argument("--sockets", type=int, required=True)
        opts = parser.parse_args(argv[1:])
        asyncio.run(subscribe(opts.url, opts.sockets))
        return 0
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for key, default in DEFAULTS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(default), default=default)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.md")
    args = parser.parse_args(argv)
    if args.rounds and not shutil.which("wrk"):
        parser.error("wrk is not installed (apt-get install wrk), or pass --rounds 0")
    return report_to(args.out, lambda: run(args), "stream")


if __name__ == "__main__":
    sys.exit(main())
