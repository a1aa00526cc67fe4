"""Gateway benchmark: a Kombu app calling iii's own SDK workers through ``iii-broker gateway``.

    python bench/bench_gateway.py                      # full run (1000 calls x 5 rounds per path)
    python bench/bench_gateway.py --calls 300 --rounds 2 --concurrent-calls 500
    python bench/bench_gateway.py --only worker,py     # a subset of the paths
    python bench/bench_gateway.py --profile 8          # then py-spy the gateway paths

One engine and one ``iii-broker gateway`` (on a free port, ``III_GATEWAY_PORT``) serve the
whole run. The same function, ``bench::echo`` (returns its payload), is served in turn by

- ``worker``: ``iii-worker -A bench.gateway_apps --concurrency 8`` (the baseline);
- ``py``: ``bench/sdk_echo.py``, the Python ``iii-sdk`` (PyPI) connected to the gateway;
- ``node``: ``bench/node/sdk_echo.mjs``, the Node ``iii-sdk`` 0.22.1 (npm; ``npm ci`` is run
  in ``bench/node`` when its ``node_modules`` is missing) connected to the gateway;

the SDK workers both with their default settings (OTel on: spans, logs and metrics sent to
the gateway) and with ``OTEL_ENABLED=false`` (``py-nootel``, ``node-nootel``). Each path
serves alone in its own turn of a round (its process started, registered, warmed up,
measured, stopped); rounds rotate the order of the paths, so drift on the machine hits
them alike and each path can be compared with the same round's ``iii-worker`` (paired).
Per turn: ``--calls`` sequential sync calls from one thread of this process
(``App("bench-client").trigger("bench::echo", payload)``), then ``--concurrent-calls``
calls from ``--threads`` threads at once. After each round, each SDK path also answers
a bare endpoint of the bench's (``--serve-floor``: no broker, no gateway), which gives the
SDK's own turnaround (``--no-floor`` skips it). Prints a markdown report with the target
(the gateway hop adds at most 0.5 ms p50 over the ``iii-worker`` path) and writes it to its
section of bench/results.md. SDK processes run with ``HOME`` in a temp directory (they
write ``~/.iii/run`` markers there); the namespace's Redis keys are deleted at the end.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # so `bench.*` imports work as `python bench/bench_gateway.py`

from bench.bench_core import (  # noqa: E402 - after the path set-up above
    Child,
    child_env,
    pct,
    proc_cpu_s,
    report_to,
    show_tails,
    stop_children,
    versions,
    wait_until,
)
from bench.bench_web import free_port, summarize_profile  # noqa: E402

FUNCTION = "bench::echo"
WORKER_CONCURRENCY = 8
NODE_DIR = ROOT / "bench" / "node"
TARGET_MS = 0.5
"""The gateway hop may add at most this much to the p50 of the iii-worker path."""
PATHS = ("worker", "py", "py-nootel", "node", "node-nootel")
SDK_PATHS = ("py", "node")
"""The paths the target is checked on: the SDKs as users run them (default settings)."""
BINDIR = Path(sys.executable).parent


def labels(sdk: dict[str, str]) -> dict[str, str]:
    return {
        "worker": f"`iii-worker` (Kombu, concurrency {WORKER_CONCURRENCY}), baseline",
        "py": f"Python `iii-sdk` {sdk['py']} via gateway, defaults (OTel on)",
        "py-nootel": f"Python `iii-sdk` {sdk['py']} via gateway, `OTEL_ENABLED=false`",
        "node": f"Node `iii-sdk` {sdk['node']} via gateway, defaults (OTel on)",
        "node-nootel": f"Node `iii-sdk` {sdk['node']} via gateway, `OTEL_ENABLED=false`",
    }


# -- the SDKs --------------------------------------------------------------------------


def python_sdk_version() -> str:
    try:
        return metadata.version("iii-sdk")
    except metadata.PackageNotFoundError:
        return "?"


def ensure_node() -> str:
    """``npm ci`` in bench/node when its node_modules lacks iii-sdk; returns the version
    installed. Raises when node or npm is missing."""
    package = NODE_DIR / "node_modules" / "iii-sdk" / "package.json"
    if not package.exists():
        npm = shutil.which("npm")
        if npm is None or shutil.which("node") is None:
            raise RuntimeError("the node paths need Node.js and npm (or use --only without "
                               "node, node-nootel)")
        print(f"installing the Node SDK: npm ci in {NODE_DIR}", file=sys.stderr)
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True,
                       stdout=sys.stderr)
    return str(json.loads(package.read_text())["version"])


def sdk_env(home: Path, url: str, otel: bool) -> dict[str, str]:
    """An SDK worker's environment: ours without ``III_*``/``OTEL_*`` (the SDK reads some,
    e.g. ``III_NAMESPACE``, with meanings of its own), plus its URL and a HOME of the run's."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("III_", "OTEL_", "PYTHONPATH", "NODE_"))}
    env.update(HOME=str(home), III_URL=url, PYTHONUNBUFFERED="1")
    if not otel:
        env["OTEL_ENABLED"] = "false"
    return env


# -- the SDK floor ---------------------------------------------------------------------


def serve_floor(port: int, calls: int, warmup: int) -> int:
    """The SDK floor's caller: a bare iii worker-protocol endpoint (asyncio ``websockets``,
    no broker) that, once an SDK worker registered ``bench::echo``, sends it ``warmup`` and
    then ``calls`` ``invokefunction`` frames one at a time, times each ``invocationresult``
    and prints the latencies (µs) as JSON on stdout. Telemetry frames are read and dropped."""
    import asyncio

    import websockets

    result: list[float] = []

    async def handler(ws: Any) -> None:
        if ws.request.path.startswith("/otel"):
            async for _ in ws:
                pass
            return
        await ws.send(json.dumps({"type": "workerregistered", "worker_id": str(uuid.uuid4())}))
        registered = asyncio.Event()
        waiting: dict[str, asyncio.Future[Any]] = {}

        async def read() -> None:
            async for message in ws:
                if isinstance(message, bytes):
                    continue  # telemetry
                frame = json.loads(message)
                kind = frame.get("type")
                if kind == "registerfunction" and frame.get("id") == FUNCTION:
                    registered.set()
                elif kind == "invocationresult":
                    future = waiting.pop(frame["invocation_id"], None)
                    if future is not None:
                        future.set_result(frame)
                elif kind == "invokefunction" and frame.get("invocation_id"):
                    await ws.send(json.dumps({"type": "invocationresult", "result": None,
                                              "invocation_id": frame["invocation_id"],
                                              "function_id": frame["function_id"]}))
        reader = asyncio.create_task(read())
        await asyncio.wait_for(registered.wait(), 60)
        await asyncio.sleep(0.5)  # the rest of its start-up
        loop = asyncio.get_running_loop()
        for i in range(warmup + calls):
            invocation_id = str(uuid.uuid4())
            future = waiting[invocation_id] = loop.create_future()
            payload = {"n": i, "text": "hello"}
            t = time.perf_counter_ns()
            await ws.send(json.dumps({
                "type": "invokefunction", "invocation_id": invocation_id,
                "function_id": FUNCTION, "data": payload,
                "traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"}))
            frame = await asyncio.wait_for(future, 10)
            if i >= warmup:
                result.append((time.perf_counter_ns() - t) / 1000)
            if frame.get("result") != payload:
                raise RuntimeError(f"the SDK answered {frame!r} to {payload!r}")
        reader.cancel()
        done.set()

    async def main() -> None:
        async with websockets.serve(handler, "127.0.0.1", port, compression=None):
            await asyncio.wait_for(done.wait(), 300)

    done = asyncio.Event()
    asyncio.run(main())
    print(json.dumps(result))
    return 0


# -- the run ---------------------------------------------------------------------------


class GatewayBench:
    """One run: its namespace, engine, gateway, client and log directory."""

    def __init__(self, args: argparse.Namespace) -> None:
        from iii_broker import App, Settings

        self.args = args
        self.ns = f"benchgw{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.settings = Settings(broker_url=args.redis_url, redis_url=args.redis_url,
                                 namespace=self.ns, gateway_port=self.port, log_level="WARNING")
        self.env = child_env(self.settings)
        self.r = redis.Redis.from_url(args.redis_url)
        self.redis_pid = int(self.r.info("server")["process_id"])
        self.log_dir = Path(tempfile.mkdtemp(prefix="iii-bench-gateway-"))
        self.home = self.log_dir / "home"
        self.home.mkdir()
        self.children: list[Child] = []
        self.client = App("bench-client", settings=self.settings)
        self.engine: Child | None = None
        self.gateway: Child | None = None

    def spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Child:
        self.children.append(Child(name, cmd, env or self.env, self.log_dir))
        return self.children[-1]

    def start(self) -> None:
        self.engine = self.spawn("engine", [str(BINDIR / "iii-broker"), "engine"])
        self.gateway = self.spawn("gateway", [str(BINDIR / "iii-broker"), "gateway"])

        def listening() -> bool:
            assert self.gateway is not None
            self.gateway.check()
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0
        wait_until(listening, 60, f"the gateway to listen on {self.port}")
        wait_until(lambda: self._engine_up(), 60, "the engine to answer")

    def _engine_up(self) -> bool:
        from iii_broker import IIIError

        self.check()
        try:
            self.client.trigger("engine::workers::list", {}, timeout_ms=2000)
            return True
        except IIIError:
            return False

    def check(self) -> None:
        for child in (self.engine, self.gateway):
            if child is not None:
                child.check()

    # -- one path's turn --------------------------------------------------------------

    def server(self, path: str, tag: str, url: str | None = None) -> Child:
        """Start the process serving ``bench::echo`` for ``path`` (an SDK's: connected to
        ``url``, by default the gateway's)."""
        if path == "worker":
            return self.spawn(f"iii-worker-{tag}", [
                str(BINDIR / "iii-worker"), "-A", "bench.gateway_apps",
                "--concurrency", str(WORKER_CONCURRENCY)])
        otel = not path.endswith("-nootel")
        env = sdk_env(self.home, url or self.url, otel)
        if path.startswith("py"):
            env["BENCH_WORKER_NAME"] = f"bench-sdk-{path}"
            return self.spawn(f"{path}-{tag}", [sys.executable, str(ROOT / "bench" / "sdk_echo.py")],
                              env)
        env["BENCH_WORKER_NAME"] = f"bench-sdk-{path}"
        node = shutil.which("node") or "node"
        return self.spawn(f"{path}-{tag}", [node, str(NODE_DIR / "sdk_echo.mjs")], env)

    def serving(self, child: Child) -> bool:
        """Whether ``child`` (by its pid: the SDKs announce theirs) serves bench::echo."""
        self.check()
        child.check()
        workers = self.client.trigger("engine::workers::list", {}, timeout_ms=2000)["workers"]
        mine = any(w.get("pid") == child.popen.pid and w.get("alive", True)
                   and FUNCTION in (w.get("functions") or []) for w in workers)
        return mine and bool(self.r.sismember(f"{self.ns}:functions", FUNCTION))

    def nobody_serves(self) -> bool:
        self.check()
        workers = self.client.trigger("engine::workers::list", {}, timeout_ms=2000)["workers"]
        return not any(FUNCTION in (w.get("functions") or []) and w.get("alive", True)
                       for w in workers)

    def stop_server(self, child: Child) -> None:
        child.stop()
        self.children.remove(child)
        wait_until(self.nobody_serves, 30, f"{child.name} to leave the cluster")

    def call(self, n: int) -> None:
        payload = {"n": n, "text": "hello"}
        got = self.client.trigger(FUNCTION, payload, timeout_ms=10_000)
        if got != payload:
            raise RuntimeError(f"{FUNCTION} answered {got!r} to {payload!r}")

    def turn(self, path: str, tag: str) -> dict[str, Any]:
        """Start ``path``'s server, warm it up, measure, stop it."""
        server = self.server(path, tag)
        try:
            wait_until(lambda: self.serving(server), 90, f"{server.name} to serve {FUNCTION}")
            for i in range(self.args.warmup):
                self.call(i)
            return self.measure(server)
        finally:
            if server in self.children:
                self.stop_server(server)

    def measure(self, server: Child) -> dict[str, Any]:
        pids = {"server": server.popen.pid, "engine": self.engine.popen.pid,  # type: ignore[union-attr]
                "gateway": self.gateway.popen.pid, "redis": self.redis_pid}  # type: ignore[union-attr]
        n = self.args.calls
        lat: list[float] = []
        cpu0 = {k: proc_cpu_s(p) for k, p in pids.items()}
        c0 = time.process_time()
        t0 = time.perf_counter()
        for i in range(n):
            t = time.perf_counter_ns()
            self.call(i)
            lat.append((time.perf_counter_ns() - t) / 1000)
        elapsed = time.perf_counter() - t0
        cpu = {k: (proc_cpu_s(p) - cpu0[k]) / n * 1e6 for k, p in pids.items()}
        cpu["client"] = (time.process_time() - c0) / n * 1e6
        out: dict[str, Any] = {"lat": lat, "rate": n / elapsed, "cpu": cpu}
        server.check()
        if self.args.concurrent_calls:
            out.update(self.concurrent(self.args.threads, self.args.concurrent_calls))
        server.check()
        return out

    def concurrent(self, threads: int, total: int) -> dict[str, Any]:
        """``total`` calls from ``threads`` threads at once (one shared App, as a web server's)."""
        per = max(1, total // threads)
        lats: list[list[float]] = [[] for _ in range(threads)]
        errors: list[BaseException] = []
        start = threading.Barrier(threads + 1)

        def loop(k: int) -> None:
            try:
                start.wait()
                for i in range(per):
                    t = time.perf_counter_ns()
                    self.call(k * per + i)
                    lats[k].append((time.perf_counter_ns() - t) / 1000)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
        ts = [threading.Thread(target=loop, args=(k,), daemon=True) for k in range(threads)]
        for t in ts:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in ts:
            t.join()
        elapsed = time.perf_counter() - t0
        if errors:
            raise errors[0]
        flat = [x for lat in lats for x in lat]
        return {"clat": flat, "crate": len(flat) / elapsed}

    def floor(self, path: str, tag: str) -> list[float]:
        """The SDK of ``path`` answering a bare endpoint (:func:`serve_floor`), no broker."""
        port = free_port()
        endpoint = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve-floor", str(port),
             "--calls", str(self.args.calls), "--warmup", str(self.args.warmup)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        try:
            wait_until(lambda: endpoint.poll() is None and _listening(port), 30,
                       "the floor's endpoint to listen")
            sdk = self.server(path, f"floor-{tag}", url=f"ws://127.0.0.1:{port}")
            try:
                out, err = endpoint.communicate(timeout=120)
            finally:
                sdk.stop()
                self.children.remove(sdk)
            if endpoint.returncode != 0:
                raise RuntimeError(f"the floor endpoint failed:\n{err[-3000:]}")
            return [float(x) for x in json.loads(out)]
        finally:
            if endpoint.poll() is None:
                endpoint.kill()
                endpoint.wait()

    def close(self) -> None:
        from iii_broker.testing import delete_namespace

        stop_children(self.children)
        self.client.close()
        removed = delete_namespace(self.args.redis_url, self.ns)
        print(f"removed {removed} Redis keys of namespace {self.ns}", file=sys.stderr)
        self.r.close()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# -- profiling -------------------------------------------------------------------------


def profile(b: GatewayBench, paths: list[str], seconds: float) -> str:
    """py-spy (``--gil``: where CPU goes, 100 Hz) on the gateway, and on the Python SDK
    worker, while one thread makes sequential calls to each SDK path for ``seconds``."""
    spy = shutil.which("py-spy") or str(BINDIR / "py-spy")
    text = [f"# py-spy --gil (100 Hz, {seconds:g} s per path) of `iii-broker gateway` and the "
            f"Python SDK worker, {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, by "
            f"`python bench/bench_gateway.py --profile {seconds:g}` (load average "
            f"{os.getloadavg()[0]:.2f})"]
    for path in paths:
        server = b.server(path, "profile")
        try:
            wait_until(partial(b.serving, server), 90, f"{server.name} to serve")
            for i in range(b.args.warmup):
                b.call(i)
            targets = {"gateway": b.gateway.popen.pid}  # type: ignore[union-attr]
            if path.startswith("py"):
                targets["python-sdk"] = server.popen.pid
            spies = {}
            for name, pid in targets.items():
                out = b.log_dir / f"profile-{path}-{name}.txt"
                spies[name] = (out, subprocess.Popen(
                    [spy, "record", "--format", "raw", "--rate", "100", "--gil", "--duration",
                     f"{int(seconds)}", "--pid", str(pid), "--output", str(out)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
            time.sleep(1)  # py-spy attaches
            lat: list[float] = []
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                t = time.perf_counter_ns()
                b.call(len(lat))
                lat.append((time.perf_counter_ns() - t) / 1000)
            text.append(f"## {path}: {len(lat)} sequential calls while profiled (perturbed): "
                        f"p50 {pct(lat, 0.5):.0f} µs, p99 {pct(lat, 0.99):.0f} µs")
            for name, (out, proc) in spies.items():
                try:
                    _, err = proc.communicate(timeout=seconds + 30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    _, err = proc.communicate()
                body = summarize_profile(out) if out.exists() else \
                    f"(py-spy failed: {err.strip()})"
                text.append(f"== {name} (pid {targets[name]})\n{body}")
        finally:
            if server in b.children:
                b.stop_server(server)
    return "\n".join(text)


# -- report ----------------------------------------------------------------------------


def tree_line(r: redis.Redis) -> str:
    """The ``- iii-broker at ...`` line of :func:`versions` as of now."""
    text = versions(r, (0.0, 0.0, 0.0), packages=())
    return next(line for line in text.splitlines() if line.startswith("- iii-broker at "))


def broker_code() -> tuple[str, ...]:
    """What identifies the code of ``iii_broker/`` now: its tree at HEAD, and each
    uncommitted file of it with its modification time (commits elsewhere do not count)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, text=True, capture_output=True,
                              timeout=10, check=False).stdout.strip()
    try:
        dirty = [line[3:] for line in git("status", "--porcelain", "--", "iii_broker")
                 .splitlines() if line.strip()]
        stamps = []
        for path in sorted(dirty):
            try:
                stamps.append(f"{path}@{(ROOT / path).stat().st_mtime_ns}")
            except OSError:
                stamps.append(f"{path}@gone")
        return (git("rev-parse", "HEAD:iii_broker"), *stamps)
    except (OSError, subprocess.SubprocessError):
        return ("?",)


def report(args: argparse.Namespace, paths: list[str], results: dict[str, list[dict[str, Any]]],
           floors: dict[str, list[list[float]]], sdk: dict[str, str], r: redis.Redis,
           load: tuple[float, float, float], tree_at_start: str,
           code_at_start: tuple[str, ...]) -> str:
    names = labels(sdk)

    def med(path: str, f: Callable[[dict[str, Any]], float]) -> float:
        return statistics.median(f(x) for x in results[path])

    def over_worker_ms(path: str, key: str = "lat") -> float:
        """Median over rounds of (this round's p50 − the same round's iii-worker p50), ms."""
        return statistics.median(
            (pct(x[key], 0.5) - pct(w[key], 0.5)) / 1000
            for x, w in zip(results[path], results["worker"], strict=True))

    has_worker = "worker" in paths
    cmd = "python bench/bench_gateway.py" + "".join(
        f" --{k.replace('_', '-')} {getattr(args, k)}"
        for k, default in (("calls", 1000), ("warmup", 200), ("rounds", 5),
                           ("concurrent_calls", 2000), ("threads", 8))
        if getattr(args, k) != default) + (f" --only {args.only}" if args.only else "") + (
        "" if args.floor else " --no-floor") + (f" --profile {args.profile:g}" if args.profile else "")
    node_v = subprocess.run(["node", "--version"], capture_output=True, text=True,
                            check=False).stdout.strip() if shutil.which("node") else "?"
    out = [
        "# Gateway benchmark: iii's SDK workers through `iii-broker gateway` vs an `iii-worker`",
        "",
        f"Run {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} by `{cmd}`.",
        "",
        versions(r, load, packages=("kombu", "websockets", "redis"),
                 extra=f"; Python `iii-sdk` {sdk['py']}; Node.js {node_v}, "
                       f"`iii-sdk` {sdk['node']}").rstrip().replace(
            tree_line(r), tree_at_start if code_at_start == broker_code() else
            f"{tree_at_start} when the run started; `iii_broker/` changed during the run (now "
            f"{tree_line(r).removeprefix('- iii-broker at ')}): processes started after the "
            "change ran the newer code"),
        f"- One engine and one `iii-broker gateway` for the run, one Redis at "
        f"`{args.redis_url}`; the caller is `App(\"bench-client\").trigger(\"{FUNCTION}\", "
        "{\"n\": i, \"text\": \"hello\"})` in the bench's process; the broker's observability "
        "module at its defaults.",
        "",
        f"## Sync round trip, one caller thread ({args.calls} sequential calls per round, "
        f"median of {args.rounds} rounds)",
        "",
        "| path | p50 µs | p99 µs | calls/s | p50 over iii-worker (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for path in paths:
        cell = f"{over_worker_ms(path):+.2f}" if has_worker and path != "worker" else "–"
        out.append(f"| {names[path]} | {med(path, lambda x: pct(x['lat'], 0.5)):.0f} | "
                   f"{med(path, lambda x: pct(x['lat'], 0.99)):.0f} | "
                   f"{med(path, lambda x: x['rate']):,.0f} | {cell} |")
    if args.concurrent_calls:
        out += ["", f"## Sync round trip, {args.threads} caller threads at once "
                    f"({args.concurrent_calls} calls per round, median of {args.rounds} rounds)",
                "", "| path | p50 µs | p99 µs | calls/s | p50 over iii-worker (ms) |",
                "|---|---:|---:|---:|---:|"]
        for path in paths:
            cell = f"{over_worker_ms(path, 'clat'):+.2f}" if has_worker and path != "worker" \
                else "–"
            out.append(f"| {names[path]} | {med(path, lambda x: pct(x['clat'], 0.5)):.0f} | "
                       f"{med(path, lambda x: pct(x['clat'], 0.99)):.0f} | "
                       f"{med(path, lambda x: x['crate']):,.0f} | {cell} |")
    if floors:
        out += ["", "## The SDKs alone: no broker, no gateway (the least the gateway path can add)",
                "", f"A bare endpoint (`--serve-floor`: asyncio `websockets`, one process) sends "
                f"the SDK worker {args.calls} `invokefunction` frames one at a time per round "
                "and times each `invocationresult`; medians of rounds.", "",
                "| SDK worker | alone p50 µs | alone p99 µs | gateway path over iii-worker (ms) "
                "| the gateway's own share: over iii-worker − alone (ms) |",
                "|---|---:|---:|---:|---:|"]
        for path, lats in floors.items():
            alone = statistics.median(pct(x, 0.5) for x in lats)
            over = over_worker_ms(path) if has_worker else float("nan")
            out.append(f"| {names[path].replace(' via gateway', '')} | {alone:.0f} | "
                       f"{statistics.median(pct(x, 0.99) for x in lats):.0f} | {over:+.2f} | "
                       f"{over - alone / 1000:+.2f} |")
    groups = ("client", "server", "gateway", "engine", "redis")
    out += ["", "## CPU per sequential call (µs, from /proc over the measured calls, median of "
                "rounds)", "",
            "| path | caller | iii-worker / SDK process | gateway | engine | Redis | total |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for path in paths:
        cells = [statistics.median(x["cpu"][g] for x in results[path]) for g in groups]
        out.append(f"| {names[path]} | " + " | ".join(f"{c:.0f}" for c in cells)
                   + f" | {sum(cells):.0f} |")
    out += ["", "## Target", ""]
    if has_worker:
        for path in SDK_PATHS:
            if path not in paths:
                continue
            over = over_worker_ms(path)
            side = "" if f"{path}-nootel" not in paths else \
                f"; with `OTEL_ENABLED=false`: {over_worker_ms(f'{path}-nootel'):+.2f} ms"
            sdk_name = "Python" if path == "py" else "Node"
            out.append(f"- {sdk_name} SDK: gateway hop adds at most {TARGET_MS} ms p50 over the "
                       f"iii-worker path: **{'PASS' if over <= TARGET_MS else 'FAIL'}** "
                       f"(measured {over:+.2f} ms, default SDK settings{side})")
    else:
        out.append("- n/a: the iii-worker path was not run (`--only`)")
    out += [
        "",
        "## How it is measured",
        "",
        f"- `{FUNCTION}` returns its payload; `bench/gateway_apps.py` (a sync handler) for the "
        "`iii-worker`, `bench/sdk_echo.py` and `bench/node/sdk_echo.mjs` (async handlers, "
        "`register_worker`/`registerWorker` with default options, as a user writes them) for "
        "the SDKs, which connect to the gateway with `III_URL`. Each path serves alone: a round "
        "starts each path's process in turn, waits until the registry lists it (by pid) with "
        f"`{FUNCTION}`, makes {args.warmup} warm-up calls, measures, stops it (SIGTERM) and "
        "waits until no worker serves the function. Rounds rotate the order of the paths.",
        f"- Sequential: {args.calls} calls from one thread, `time.perf_counter_ns` around "
        "each; calls/s = calls / wall time. Concurrent: "
        f"{args.threads} threads sharing the one `App`, {args.concurrent_calls} calls in all. "
        "p50/p99/calls/s are medians over rounds of each round's figure; \"p50 over "
        "iii-worker\" is the median over rounds of (the round's p50 − the same round's "
        "iii-worker p50), paired so that drift on the machine cancels out.",
        "- The SDK rows with OTel on are what users run (the SDKs' default): spans, logs and "
        "metrics go to the gateway over its WebSocket; the `OTEL_ENABLED=false` rows show what "
        "that costs. SDK processes get none of the broker's `III_*` variables (only `III_URL`) "
        "and a `HOME` in the run's temp directory.",
        "- The SDKs alone: per round, each SDK path is also run against a bare endpoint of the "
        "bench's (`--serve-floor`, a Python asyncio `websockets` server, no broker) that sends "
        "it `invokefunction` frames one at a time and times each `invocationresult`: the SDK's "
        "own turnaround plus one WebSocket hop each way, i.e. about the least any WebSocket "
        "forwarder could add to the iii-worker path. \"The gateway's own share\" is the gateway "
        "path's p50 over iii-worker minus that.",
        "- CPU columns: /proc (10 ms ticks) of each process over the sequential calls, per call; "
        "\"caller\" is this process (the calls' thread and its reply consumer).",
        "- Everything shares the machine's cores (and Redis) with whatever else runs: check the "
        "load average above.",
    ]
    return "\n".join(out) + "\n"


def run(args: argparse.Namespace) -> str:
    load = os.getloadavg()
    paths = [p for p in PATHS if not args.only or p in args.only.split(",")]
    sdk = {"py": python_sdk_version(), "node": "?"}
    with redis.Redis.from_url(args.redis_url) as r:
        tree_at_start, code_at_start = tree_line(r), broker_code()
    if any(p.startswith("node") for p in paths):
        sdk["node"] = ensure_node()
    b = GatewayBench(args)
    results: dict[str, list[dict[str, Any]]] = {p: [] for p in paths}
    floors: dict[str, list[list[float]]] = {}
    profile_text = ""
    try:
        b.start()
        print(f"namespace {b.ns}: engine and gateway ({b.url}) are up; logs in {b.log_dir}",
              file=sys.stderr)
        for i in range(args.rounds):
            order = paths[i % len(paths):] + paths[:i % len(paths)]
            for path in order:
                res = b.turn(path, f"r{i + 1}")
                results[path].append(res)
                line = (f"round {i + 1} {path}: p50 {pct(res['lat'], 0.5):.0f} µs, "
                        f"p99 {pct(res['lat'], 0.99):.0f} µs, {res['rate']:,.0f} calls/s")
                if "clat" in res:
                    line += f"; {args.threads} threads: {res['crate']:,.0f} calls/s"
                print(line, file=sys.stderr)
            for path in [p for p in paths if p != "worker"] if args.floor else []:
                lat = b.floor(path, f"r{i + 1}")
                floors.setdefault(path, []).append(lat)
                print(f"round {i + 1} {path} alone (no broker): p50 {pct(lat, 0.5):.0f} µs, "
                      f"p99 {pct(lat, 0.99):.0f} µs", file=sys.stderr)
        text = report(args, paths, results, floors, sdk, b.r, load, tree_at_start,
                      code_at_start)
        if args.profile:
            profile_text = profile(b, [p for p in paths if p in SDK_PATHS], args.profile)
    except BaseException:
        show_tails(b.children)
        b.close()
        raise
    b.close()
    if profile_text:
        args.profile_out.write_text(profile_text + "\n")
        print(f"profile summary written to {args.profile_out}; raw stacks in {b.log_dir}",
              file=sys.stderr)
    else:
        shutil.rmtree(b.log_dir, ignore_errors=True)  # kept when the run failed
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000,
                        help="sequential calls per path and round")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up calls per turn")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrent-calls", type=int, default=2000,
                        help="calls of the concurrent variant per path and round (0: skip it)")
    parser.add_argument("--threads", type=int, default=8, help="caller threads of the concurrent variant")
    parser.add_argument("--only", help=f"a comma list of paths ({', '.join(PATHS)})")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.md")
    parser.add_argument("--no-floor", dest="floor", action="store_false",
                        help="skip the SDKs-alone measurement (no broker, no gateway)")
    parser.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--profile", type=float, default=0, metavar="SECONDS",
                        help="after the rounds, py-spy the gateway (and the Python SDK) for "
                             "SECONDS per SDK path")
    parser.add_argument("--profile-out", type=Path, default=ROOT / "bench" / "profile-gateway.txt")
    args = parser.parse_args(argv)
    if args.serve_floor:
        return serve_floor(args.serve_floor, args.calls, args.warmup)
    if min(args.calls, args.warmup, args.rounds, args.threads) < 1 or args.concurrent_calls < 0:
        parser.error("--calls, --warmup, --rounds and --threads must be at least 1")
    if args.only and not set(args.only.split(",")) <= set(PATHS):
        parser.error(f"--only: choose among {', '.join(PATHS)}")
    return report_to(args.out, lambda: run(args), "gateway")


if __name__ == "__main__":
    sys.exit(main())
