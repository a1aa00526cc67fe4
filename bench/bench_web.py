"""Web benchmark: HTTP triggers through ``iii-broker web`` vs a plain Flask route (ceiling).

    python bench/bench_web.py                            # full run (3 s warm-up, 10 s measured)
    python bench/bench_web.py --warmup 1 --duration 3    # quick run
    python bench/bench_web.py --profile 8                # then py-spy the iii path for 8 s

Starts (a) ``iii-broker web`` + an engine + one ``iii-worker`` (concurrency 16) serving
``GET /bench/ok`` → ``benchweb::ok``, which returns ``{"status_code": 200, "body": {"ok":
true}}``, (b) the ceiling: the same JSON from a plain Flask route under the same
gunicorn settings (``bench/web_ceiling.py``), and (c) the broker floor: a Flask route that
LPUSHes a small JSON request to Redis and BRPOPs the reply of a raw redis-py echo process
(``bench/web_floor.py``), the least any design with a separate worker process over Redis
does. Loads each with ``wrk`` (64 keep-alive connections), prints a markdown report with
the targets (PASS/FAIL) and writes it to its section of bench/results.md.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # so `bench.*` imports work as `python bench/bench_web.py`

from bench.bench_core import (  # noqa: E402
    Child,
    cleanup_keys,
    proc_cpu_s,
    report_to,
    show_tails,
    stop_children,
    wait_until,
)
from bench.bench_core import versions as core_versions  # noqa: E402
from bench.web_apps import PATH  # noqa: E402

CONNECTIONS = 64
WRK_THREADS = 2
WEB_WORKERS = 2       # gunicorn processes: one per core (each is bound by its GIL)
WEB_THREADS = 16      # per process (iii-broker web's default): 32 requests in flight at most
WORKER_CONCURRENCY = 16
EXPECTED = {"ok": True}
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


# -- processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (gunicorn's arbiter and its worker processes)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo += [int(c) for c in task.read_text().split()]
            except OSError:
                pass
    return out


def cpu_of(pids: list[int]) -> float:
    return sum(proc_cpu_s(p) for p in pids)


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - 127.0.0.1 only
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


# -- wrk -------------------------------------------------------------------------------


def ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * UNITS[unit]


def parse_wrk(out: str) -> dict[str, float]:
    res: dict[str, float] = {"non2xx": 0, "socket_errors": 0}
    for q, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.M):
        res[f"p{q}"] = ms(value)
    m = re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", out, re.M)
    if m:
        res["mean"], res["max"] = ms(m.group(1)), ms(m.group(3))
    m = re.search(r"^\s+(\d+) requests in ([\d.]+)(\w+),", out, re.M)
    if m:
        res["requests"], res["seconds"] = float(m.group(1)), ms(m.group(2) + m.group(3)) / 1e3
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["socket_errors"] = float(sum(int(x) for x in m.groups()))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["non2xx"] = float(m.group(1))
    m = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if m:
        res["rps"] = float(m.group(1))
    missing = {"p50", "p99", "rps", "requests", "max"} - res.keys()
    if missing:
        raise RuntimeError(f"could not read {sorted(missing)} from wrk's output:\n{out}")
    return res


def wrk(url: str, seconds: float) -> tuple[dict[str, float], float]:
    """Run wrk; returns its stats and its own CPU seconds."""
    cmd = ["wrk", f"-t{WRK_THREADS}", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--timeout", "10s",
           "--latency", url]
    before = os.times()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    after = os.times()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}: {proc.stderr}{proc.stdout}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return parse_wrk(proc.stdout), cpu


def measure(url: str, seconds: float, procs: dict[str, list[int]], r: redis.Redis,
            redis_pid: int) -> dict[str, Any]:
    """wrk against ``url`` while counting the CPU of each process group."""
    c0 = {k: cpu_of(v) for k, v in procs.items()}
    r0, cmd0 = proc_cpu_s(redis_pid), command_counts(r)
    stats, wrk_cpu = wrk(url, seconds)
    cpu = {k: cpu_of(v) - c0[k] for k, v in procs.items()}
    cpu["redis"] = proc_cpu_s(redis_pid) - r0
    cpu["wrk"] = wrk_cpu
    cmd1 = command_counts(r)
    commands = {c: (n - cmd0.get(c, 0)) / stats["requests"] for c, n in cmd1.items()}
    return {"stats": stats, "cpu": cpu, "commands": {c: n for c, n in commands.items() if n >= 0.01}}


def command_counts(r: redis.Redis) -> dict[str, int]:
    """Redis's per-command call counters (server-wide: other clients count too)."""
    return {k.removeprefix("cmdstat_"): int(v["calls"])
            for k, v in r.info("commandstats").items() if isinstance(v, dict)}


# -- profiling -------------------------------------------------------------------------


def summarize_profile(path: Path, top: int = 18) -> str:
    """Self and inclusive shares of py-spy's collapsed stacks (``--format raw``)."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith("process ")]
        if not frames:
            continue
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        return "(no samples)"
    lines = [f"{total} samples", "self:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    lines += ["inclusive:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in incl.most_common(top + 12)]
    return "\n".join(lines)


def profile(url: str, seconds: float, targets: dict[str, int], out_dir: Path) -> str:
    """py-spy (100 Hz, only the thread holding the GIL: where CPU goes) on each target under wrk."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    spies = {}
    for name, pid in targets.items():
        spies[name] = (out_dir / f"{name}.txt", subprocess.Popen(
            [spy, "record", "--format", "raw", "--rate", "100", "--subprocesses", "--gil",
             "--duration", f"{int(seconds)}", "--pid", str(pid), "--output",
             str(out_dir / f"{name}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    time.sleep(1)  # py-spy attaches
    stats, _ = wrk(url, seconds)
    text = [f"wrk during profiling (perturbed): {stats['rps']:,.0f} req/s, "
            f"p50 {stats['p50']:.2f} ms, p99 {stats['p99']:.2f} ms"]
    for name, (path, proc) in spies.items():
        try:
            _, err = proc.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        body = summarize_profile(path) if path.exists() else f"(py-spy failed: {err.strip()})"
        text.append(f"== {name} (pid {targets[name]})\n{body}")
    return "\n".join(text)


# -- report ----------------------------------------------------------------------------


def versions(r: redis.Redis, load: tuple[float, float, float]) -> str:
    wrk_v = subprocess.run(["wrk", "--version"], capture_output=True, text=True,
                           check=False).stdout.split(" Copyright")[0].strip()
    return core_versions(r, load, ("gunicorn", "flask", "werkzeug", "kombu", "redis"),
                         extra=f"; {wrk_v}")


def report(args: argparse.Namespace, res: dict[str, dict[str, Any]], r: redis.Redis,
           load: tuple[float, float, float]) -> str:
    names = {"ceiling": "plain Flask route under the same gunicorn (ceiling)",
             "floor": "Flask route → Redis LPUSH/BRPOP → raw echo process (broker floor)",
             "iii": "`iii-broker web` → `iii-worker` (HTTP trigger)"}
    cmd = "python bench/bench_web.py" + (
        f" --warmup {args.warmup:g} --duration {args.duration:g}"
        if (args.warmup, args.duration) != (3, 10) else "")
    out = [f"# Web benchmark: HTTP triggers vs a plain Flask route\n\n"
           f"Run {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} by `{cmd}`.\n\n"
           f"{versions(r, load)}"
           f"- All three servers: gunicorn `gthread`, {args.web_workers} worker processes × "
           f"{args.web_threads} threads, bound to 127.0.0.1; iii: one engine and one `iii-worker "
           f"--concurrency {WORKER_CONCURRENCY}` on one Redis at `{args.redis_url}`.\n"
           f"- Load: `wrk -t{WRK_THREADS} -c{CONNECTIONS} -d{args.duration:g}s --latency` "
           f"(64 keep-alive connections) on `GET {PATH}`, after a {args.warmup:g} s warm-up; "
           "everything on this machine.\n",
           f"## Throughput and latency ({CONNECTIONS} keep-alive connections, "
           f"{args.duration:g} s each)\n",
           "| server | req/s | p50 ms | p90 ms | p99 ms | max ms | errors |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for key, label in names.items():
        s = res[key]["stats"]
        out.append(f"| {label} | {s['rps']:,.0f} | {s['p50']:.2f} | {s['p90']:.2f} | "
                   f"{s['p99']:.2f} | {s['max']:.1f} | {s['non2xx'] + s['socket_errors']:.0f} |")
    groups = ("web", "worker", "engine", "redis", "wrk")
    out += ["", "## CPU per request (µs, from /proc over the measured window)\n",
            "| server | " + " | ".join(groups) + " | total | cores busy |",
            "|---|" + "---:|" * (len(groups) + 2)]
    for key, label in names.items():
        cpu, n = res[key]["cpu"], res[key]["stats"]["requests"]
        per = [cpu[g] / n * 1e6 if g in cpu else None for g in groups]
        total = sum(cpu.values())
        out.append(f"| {label} | " + " | ".join("–" if v is None else f"{v:.0f}" for v in per)
                   + f" | {total / n * 1e6:.0f} | {total / res[key]['stats']['seconds']:.2f} |")
    cmds = sorted(res["iii"]["commands"].items(), key=lambda kv: -kv[1])
    out += ["", f"Redis commands per iii request: {sum(n for _, n in cmds):.1f} "
            f"({', '.join(f'{c} {n:.2f}' for c, n in cmds)}; counted server-wide, so other "
            "clients of this Redis count too).\n" if cmds else ""]
    rps = {k: res[k]["stats"]["rps"] for k in names}
    ratio = rps["iii"] / rps["ceiling"]
    out += ["", f"Throughput ratios: floor / ceiling = **{rps['floor'] / rps['ceiling']:.2f}×** "
            f"(the most any design with a worker process over Redis can reach here); "
            f"iii / floor = **{rps['iii'] / rps['floor']:.2f}×**; iii / ceiling = {ratio:.2f}×."]
    p99 = res["iii"]["stats"]["p99"]
    errors = sum(res[k]["stats"]["non2xx"] + res[k]["stats"]["socket_errors"] for k in res)
    floor_ratio = rps["iii"] / rps["floor"]
    checks = [
        ("throughput, iii / broker floor", f"{floor_ratio:.2f}×", "≥ 0.75×", floor_ratio >= 0.75),
        ("throughput, iii / ceiling", f"{ratio:.2f}×", "≥ 0.5×", ratio >= 0.5),
        (f"iii p99 at {CONNECTIONS} connections", f"{p99:.2f} ms", "< 20 ms", p99 < 20),
        ("errors (non-2xx + socket), all servers", f"{errors:.0f}", "0", errors == 0),
    ]
    out += ["", "## Targets\n", "| target | measured | goal | result |", "|---|---:|---:|:---:|"]
    out += [f"| {name} | {value} | {goal} | {'PASS' if ok else 'FAIL'} |"
            for name, value, goal, ok in checks]
    out += ["", "## How it is measured\n",
            "- All three servers run at the same time on free ports (`III_HTTP_PORT`); each is "
            "checked to answer 200 `{\"ok\": true}`, warmed up with wrk, then measured with wrk, "
            "the ceiling first, then the floor, then iii. Latency percentiles are wrk's "
            "(`--latency`, per request, over the whole measured window); req/s is wrk's "
            "completed requests / duration.",
            "- The ceiling (`bench/web_ceiling.py`) is iii-broker's own `WebServer` gunicorn "
            "application with only `load()` replaced by a plain Flask app, so bind, worker class, "
            "workers, threads, timeouts and log level are identical.",
            "- The broker floor (`bench/web_floor.py`) is the same `WebServer` with a Flask route "
            "that LPUSHes `{\"id\", \"reply_to\"}` (a per-thread reply list) onto one Redis list "
            "and BRPOPs its reply, one redis-py connection per thread; its worker (`worker` "
            f"column) is one process with {WORKER_CONCURRENCY} threads, each a BRPOP loop that "
            "LPUSHes `{\"id\", \"result\": {\"status_code\": 200, \"body\": {\"ok\": true}}}` "
            "back: 4 Redis commands per request, no Kombu, no envelope, no registry, no tracing.",
            f"- {args.web_workers} gunicorn workers for 2 cores: each Python process is bound by "
            f"its GIL, so one per core; {args.web_threads} threads each (the `iii-broker web` "
            "default) keep up to "
            f"{args.web_workers * args.web_threads} requests in flight, each waiting on its "
            "function's reply; the other connections wait in gthread's keep-alive poller.",
            "- wrk, Redis, the engine and the worker share the same 2 cores with the servers, "
            "so the iii path pays for its extra processes' CPU out of the same budget; the CPU "
            "table shows where it goes (`web` is gunicorn's arbiter plus its workers; `worker` is "
            "the `iii-worker` or the floor's echo process).",
            "- Each run uses a fresh namespace; its Redis keys are deleted and its processes "
            "stopped at the end."]
    return "\n".join(out) + "\n"


# -- the run ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> str:
    from iii_broker import Settings

    load = os.getloadavg()
    ns = f"benchweb{uuid.uuid4().hex[:8]}"
    ports = {"iii": free_port(), "ceiling": free_port(), "floor": free_port()}
    base = Settings(broker_url=args.redis_url, redis_url=args.redis_url, namespace=ns,
                    log_level="WARNING")
    env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
    env.update(base.child_env(), PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    bindir = Path(sys.executable).parent
    r = redis.Redis.from_url(args.redis_url)
    redis_pid = int(r.info("server")["process_id"])
    log_dir = Path(tempfile.mkdtemp(prefix="iii-bench-web-"))
    children: list[Child] = []
    urls = {k: f"http://127.0.0.1:{p}{PATH}" for k, p in ports.items()}
    try:
        def spawn(name: str, cmd: list[str], port: int | None = None) -> Child:
            e = dict(env, III_HTTP_PORT=str(port)) if port else env
            children.append(Child(name, cmd, e, log_dir))
            return children[-1]
        engine = spawn("engine", [str(bindir / "iii-broker"), "engine"])
        worker = spawn("iii-worker", [str(bindir / "iii-worker"), "-A", "bench.web_apps",
                                      "--concurrency", str(WORKER_CONCURRENCY)])
        web = spawn("iii-web", [str(bindir / "iii-broker"), "web", "--workers",
                                str(args.web_workers), "--threads", str(args.web_threads)],
                    ports["iii"])
        ceiling = spawn("ceiling", [sys.executable, "-m", "bench.web_ceiling", "--workers",
                                    str(args.web_workers), "--threads", str(args.web_threads)],
                        ports["ceiling"])
        floor = spawn("floor", [sys.executable, "-m", "bench.web_floor", "--workers",
                                str(args.web_workers), "--threads", str(args.web_threads)],
                      ports["floor"])
        echo = spawn("floor-echo", [sys.executable, "-m", "bench.web_floor", "echo", "--threads",
                                    str(WORKER_CONCURRENCY)])

        def answers(key: str, *watch: Child) -> bool:
            for child in watch:
                child.check()
            status, body = get_json(urls[key])
            if status == 200 and body != EXPECTED:
                raise RuntimeError(f"{key}: unexpected body {body!r}")
            return status == 200
        wait_until(lambda: answers("ceiling", ceiling), 60, "the ceiling server")
        wait_until(lambda: answers("floor", floor, echo), 60, "the floor server")
        wait_until(lambda: answers("iii", engine, worker, web), 60, "the iii route")
        print(f"namespace {ns}: engine, worker, iii web on :{ports['iii']}, ceiling on "
              f":{ports['ceiling']} and floor on :{ports['floor']} are up; logs in {log_dir}",
              file=sys.stderr)

        for server in (web, ceiling, floor):  # the first worker may answer before the others start
            wait_until(lambda s=server: s.check() or len(tree(s.popen.pid)) == args.web_workers + 1,
                       30, f"{args.web_workers} gunicorn workers of {server.name}")
        procs = {"ceiling": {"web": tree(ceiling.popen.pid)},
                 "floor": {"web": tree(floor.popen.pid), "worker": [echo.popen.pid]},
                 "iii": {"web": tree(web.popen.pid), "worker": [worker.popen.pid],
                         "engine": [engine.popen.pid]}}
        for key in procs:
            wrk(urls[key], args.warmup)
        res = {}
        for key in procs:
            res[key] = measure(urls[key], args.duration, procs[key], r, redis_pid)
            s = res[key]["stats"]
            print(f"{key}: {s['rps']:,.0f} req/s, p50 {s['p50']:.2f} ms, p99 {s['p99']:.2f} ms",
                  file=sys.stderr)
        for child in children:
            child.check()
        text = report(args, res, r, load)
        if args.profile:
            prof_dir = Path(tempfile.mkdtemp(prefix="iii-bench-web-prof-"))
            summary = profile(urls["iii"], args.profile,
                              {"iii-web": web.popen.pid, "iii-worker": worker.popen.pid},
                              prof_dir)
            args.profile_out.write_text(summary + "\n")
            print(summary, file=sys.stderr)
            print(f"profile summary written to {args.profile_out}; raw stacks in {prof_dir}",
                  file=sys.stderr)
    except BaseException:
        show_tails(children)
        raise
    finally:
        stop_children(children)
        print(f"removed {cleanup_keys(r, ns)} Redis keys of namespace {ns}", file=sys.stderr)
        r.close()
    shutil.rmtree(log_dir, ignore_errors=True)  # kept when the run failed
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10, help="measured seconds per server")
    parser.add_argument("--warmup", type=float, default=3, help="warm-up seconds per server")
    parser.add_argument("--web-workers", type=int, default=WEB_WORKERS)
    parser.add_argument("--web-threads", type=int, default=WEB_THREADS)
    parser.add_argument("--profile", type=float, default=0, metavar="SECONDS",
                        help="after measuring, py-spy the iii web process and worker under load")
    parser.add_argument("--profile-out", type=Path, default=ROOT / "bench" / "profile-web.txt")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.md")
    args = parser.parse_args(argv)
    if min(args.duration, args.warmup, args.web_workers, args.web_threads) < 1:
        parser.error("--duration, --warmup, --web-workers and --web-threads must be at least 1")
    if not shutil.which("wrk"):
        parser.error("wrk is not installed (apt-get install wrk)")
    return report_to(args.out, lambda: run(args), "web")


if __name__ == "__main__":
    sys.exit(main())
