"""A/B web bench: the iii HTTP path of two source trees, and the broker floor, alternated.

    python bench/ab_web.py --tree before=/work/wt-base --tree after=/work/wt-perf \
        --rounds 5 --duration 6

Each tree runs its own engine, ``iii-worker --concurrency 16`` and ``iii-broker web``
(its own ``.venv/bin`` scripts, its own namespace); the floor is ``bench.web_floor`` of
this tree. All stacks are up at once (idle stacks cost next to nothing) and each round
loads every arm once with the same wrk settings as ``bench_web.py``, in rotating order;
the report gives each arm's median over the rounds (req/s, latency, CPU per request of
each process group) and each tree's ratio to the floor, round by round and as a median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_core import cleanup_keys, wait_until  # noqa: E402
from bench.bench_web import (  # noqa: E402
    EXPECTED,
    WORKER_CONCURRENCY,
    free_port,
    get_json,
    measure,
    tree,
    wrk,
)
from bench.web_apps import PATH  # noqa: E402


class Proc:
    def __init__(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path,
                 log_dir: Path) -> None:
        self.name = name
        self.log = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115
        self.popen = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self.log,
                                      stderr=subprocess.STDOUT, start_new_session=True)

    def check(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log.close()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tree", action="append", required=True, help="name=/path/to/tree")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=float, default=6)
    p.add_argument("--warmup", type=float, default=2)
    p.add_argument("--web-workers", type=int, default=2)
    p.add_argument("--web-threads", type=int, default=16)
    p.add_argument("--no-floor", action="store_true")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--hold", type=float, default=0,
                   help="after the rounds, keep the stacks up this many seconds (profiling)")
    args = p.parse_args()
    import signal

    def _stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _stop)  # stacks are stopped in `finally`
    signal.signal(signal.SIGINT, _stop)

    r = redis.Redis.from_url(args.redis_url)
    redis_pid = int(r.info("server")["process_id"])
    log_dir = Path(tempfile.mkdtemp(prefix="iii-ab-web-"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
    base_env.update(PYTHONUNBUFFERED="1", III_BROKER_URL=args.redis_url,
                    III_REDIS_URL=args.redis_url, III_LOG_LEVEL="WARNING")
    procs: list[Proc] = []
    namespaces: list[str] = []
    arms: dict[str, dict[str, Any]] = {}
    try:
        for spec in args.tree:
            name, path = spec.split("=", 1)
            root = Path(path).resolve()
            bindir = root / ".venv" / "bin"
            ns = f"ab{name}{uuid.uuid4().hex[:6]}"
            namespaces.append(ns)
            port = free_port()
            env = dict(base_env, III_NAMESPACE=ns, PYTHONPATH=str(root))

            def spawn(what: str, cmd: list[str], e: dict[str, str] = env,
                      cwd: Path = root, n: str = name) -> Proc:
                procs.append(Proc(f"{n}-{what}", cmd, e, cwd, log_dir))
                return procs[-1]
            engine = spawn("engine", [str(bindir / "iii-broker"), "engine"])
            worker = spawn("worker", [str(bindir / "iii-worker"), "-A", "bench.web_apps",
                                      "--concurrency", str(WORKER_CONCURRENCY)])
            web = spawn("web", [str(bindir / "iii-broker"), "web", "--workers",
                                str(args.web_workers), "--threads", str(args.web_threads)],
                        dict(env, III_HTTP_PORT=str(port)))
            arms[name] = {"url": f"http://127.0.0.1:{port}{PATH}", "watch": [engine, worker, web],
                          "procs": lambda web=web, worker=worker, engine=engine: {
                              "web": tree(web.popen.pid), "worker": [worker.popen.pid],
                              "engine": [engine.popen.pid]}}
        if not args.no_floor:
            ns = f"abfloor{uuid.uuid4().hex[:6]}"
            namespaces.append(ns)
            port = free_port()
            env = dict(base_env, III_NAMESPACE=ns, PYTHONPATH=str(ROOT))
            floor = Proc("floor", [sys.executable, "-m", "bench.web_floor", "--workers",
                                   str(args.web_workers), "--threads", str(args.web_threads)],
                         dict(env, III_HTTP_PORT=str(port)), ROOT, log_dir)
            echo = Proc("floor-echo", [sys.executable, "-m", "bench.web_floor", "echo",
                                       "--threads", str(WORKER_CONCURRENCY)], env, ROOT, log_dir)
            procs += [floor, echo]
            arms["floor"] = {"url": f"http://127.0.0.1:{port}{PATH}", "watch": [floor, echo],
                             "procs": lambda floor=floor, echo=echo: {
                                 "web": tree(floor.popen.pid), "worker": [echo.popen.pid]}}

        def answers(arm: dict[str, Any]) -> bool:
            for child in arm["watch"]:
                child.check()
            status, body = get_json(arm["url"])
            if status == 200 and body != EXPECTED:
                raise RuntimeError(f"unexpected body {body!r}")
            return status == 200
        for name, arm in arms.items():
            wait_until(lambda arm=arm: answers(arm), 60, name)
            web = arm["watch"][-1] if name != "floor" else arm["watch"][0]
            wait_until(lambda web=web: len(tree(web.popen.pid)) == args.web_workers + 1, 30,
                       f"{name} workers")
            arm["pids"] = arm["procs"]()
        print(f"up: {', '.join(n + ' ' + a['url'] for n, a in arms.items())}; logs {log_dir}",
              file=sys.stderr, flush=True)
        for arm in arms.values():
            wrk(arm["url"], args.warmup)
        names = list(arms)
        results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        for rnd in range(args.rounds):
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            line = []
            for name in order:
                res = measure(arms[name]["url"], args.duration, arms[name]["pids"], r, redis_pid)
                results[name].append(res)
                s = res["stats"]
                cpu = {g: v / s["requests"] * 1e6 for g, v in res["cpu"].items()}
                line.append(f"{name} {s['rps']:,.0f} (web {cpu['web']:.0f} µs, worker "
                            f"{cpu.get('worker', 0):.0f} µs)")
            print(f"round {rnd + 1}: " + ", ".join(line), file=sys.stderr, flush=True)
        print_report(results, args)
        if args.hold:
            print(f"holding for {args.hold:g} s: " + ", ".join(
                f"{n}: web {a['pids']['web']} worker {a['pids']['worker']}"
                for n, a in arms.items()), flush=True)
            import time
            time.sleep(args.hold)
    finally:
        for proc in reversed(procs):
            proc.stop()
        for ns in namespaces:
            cleanup_keys(r, ns)
    return 0


def print_report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    groups = ("web", "worker", "engine", "redis", "wrk")
    print(f"\n{args.rounds} rounds × {args.duration:g} s, medians; load avg {os.getloadavg()[0]:.2f}\n")
    print("| arm | req/s | p50 ms | p99 ms | " + " | ".join(f"{g} µs" for g in groups)
          + " | total µs | errors |")
    print("|---|" + "---:|" * (len(groups) + 5))
    med = statistics.median
    for name, runs in results.items():
        rps = med(x["stats"]["rps"] for x in runs)
        p50 = med(x["stats"]["p50"] for x in runs)
        p99 = med(x["stats"]["p99"] for x in runs)
        per = []
        for g in groups:
            vals = [x["cpu"][g] / x["stats"]["requests"] * 1e6 for x in runs if g in x["cpu"]]
            per.append(f"{med(vals):.0f}" if vals else "–")
        total = med(sum(x["cpu"].values()) / x["stats"]["requests"] * 1e6 for x in runs)
        errors = sum(x["stats"]["non2xx"] + x["stats"]["socket_errors"] for x in runs)
        print(f"| {name} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | " + " | ".join(per)
              + f" | {total:.0f} | {errors:.0f} |")
    if "floor" in results:
        print()
        floor = [x["stats"]["rps"] for x in results["floor"]]
        for name, runs in results.items():
            if name == "floor":
                continue
            ratios = [x["stats"]["rps"] / f for x, f in zip(runs, floor, strict=True)]
            print(f"{name} / floor per round: {', '.join(f'{v:.2f}' for v in ratios)}; "
                  f"median {med(ratios):.2f}")
    for name, runs in results.items():
        cmds: dict[str, list[float]] = {}
        for x in runs:
            for c, n in x["commands"].items():
                cmds.setdefault(c, []).append(n)
        print(f"{name} redis cmds/req (server-wide): " + ", ".join(
            f"{c} {med(v):.2f}" for c, v in sorted(cmds.items(), key=lambda kv: -med(kv[1]))))


if __name__ == "__main__":
    sys.exit(main())
