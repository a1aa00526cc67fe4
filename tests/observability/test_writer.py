"""The telemetry writer: the child process a worker hands its history, logs and spans to.

It is started with the worker, replaced when it dies, deaf to the signals a terminal or a
supervisor sends the whole process group, and writes what it was handed once its worker
is gone (killed included); bad frames are dropped with an error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from iii_broker.modules.observability.history.store import HistoryStore, line
from iii_broker.modules.observability.logs.store import LogQuery, LogStore
from iii_broker.modules.observability.logs.store import line as log_line
from iii_broker.modules.observability.writer import COMMAND, joined_frame
from iii_broker.store import Keys
from tests.helpers import wait_for
from tests.observability.test_history import attempts, invocations


def writer_of(pid: int) -> int | None:
    """The pid of the telemetry writer process whose parent is ``pid``, if there is one."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == pid and b"observability.writer" in cmdline and stat[0] != "Z":
            return int(entry.name)
    return None


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_killed_writer_is_replaced_and_later_runs_are_recorded(cluster):
    cluster.engine()
    worker = cluster.worker()
    assert writer_of(worker.pid) is None  # started by the first records handed over
    before = cluster.trigger("test::echo", {"n": "before"})["invocation_id"]
    attempts(cluster, before)
    first = writer_of(worker.pid)
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: not alive(first), what="the writer to die")
    after = [cluster.trigger("test::echo", {"n": i})["invocation_id"] for i in range(3)]
    for iid in after:  # the batch the dead writer refused waits for the next one
        attempts(cluster, iid)
    second = writer_of(worker.pid)
    assert second is not None and second != first
    assert f"the telemetry writer (pid {first}) exited" in worker.output()
    assert worker.popen.poll() is None


def test_the_writer_outlives_the_signals_that_stop_its_worker_and_ends_after_it(cluster):
    """A terminal's Ctrl-C reaches the worker's process group, a supervisor's stop may reach
    every process of its cgroup: the worker drains and flushes through its writer, which
    must still be there to take it."""
    cluster.engine()
    worker = cluster.worker()
    ids = [cluster.trigger("test::echo", {"n": i})["invocation_id"] for i in range(5)]
    writer = wait_for(lambda: writer_of(worker.pid), what="the worker's telemetry writer")
    assert os.getsid(writer) != os.getsid(worker.pid)  # a session of its own
    os.kill(writer, signal.SIGTERM)
    os.kill(writer, signal.SIGINT)
    os.killpg(worker.pid, signal.SIGINT)  # the test's Proc is a session (group) leader
    assert worker.wait(timeout=20) == 0
    wait_for(lambda: not alive(writer), timeout=15, what="the writer to end after its worker")
    out = worker.output()
    assert "telemetry writer" not in out, out  # never died, never restarted
    for iid in ids:
        assert attempts(cluster, iid)[0]["status"] == "succeeded"


def run_writer(settings: Any, frames: list[Any], raw: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """A writer process fed ``frames`` (and ``raw`` bytes) whose input then ends, as when its
    worker is killed. An ``h`` or ``l`` frame is given with its lines as its last item."""
    def encoded(frame: list[Any]) -> bytes:
        if frame[0] in ("h", "l") and len(frame) > 1 and isinstance(frame[-1], list):
            return joined_frame(frame[:-1], frame[-1])
        return (json.dumps(frame) + "\n").encode()
    data = b"".join(encoded(f) for f in [["hello", {"otlp": None}], *frames]) + raw
    env = {**os.environ, **settings.child_env()}
    return subprocess.run([sys.executable, "-c", COMMAND], input=data, env=env,
                          capture_output=True, timeout=60)


def history_line(iid: str, started: int, function_id: str = "w::f") -> str:
    record = {"invocation_id": iid, "function_id": function_id, "attempt": 1,
              "status": "succeeded", "started_at": started, "worker_id": "w:1",
              "payload": {"x": iid}, "result": None, "error": None}
    got = line(iid, 1, "succeeded", started, "w:1", function_id, json.dumps(record))
    assert got is not None
    return got


def test_a_writer_whose_input_ends_writes_everything_it_was_handed(settings, store):
    """What a worker handed over survives the worker: the writer's input ends (the worker
    died), and it still stores every record before it exits."""
    now = int(time.time() * 1000)
    lines = [history_line(f"inv-{i}", now + i) for i in range(300)]  # three script calls
    trace = "ab" * 16
    logged = [{"trace_id": trace, "span_id": "cd" * 8, "function_id": "w::f",
               "severity_text": "INFO", "severity_number": 9, "body": f"line {i}",
               "timestamp_unix_nano": time.time_ns(), "attributes": {}} for i in range(50)]
    log_lines = [log_line(r) for r in logged]
    done = run_writer(settings, [["h", 3600, lines[:150]], ["l", 10_000, 3600, log_lines],
                                 ["h", 3600, lines[150:]]])
    assert done.returncode == 0, done.stderr.decode()
    keys = Keys(settings.namespace)
    history = HistoryStore(store, keys)
    assert history.page(function_id="w::f", limit=1000).total == 300
    assert history.attempts("inv-299")[0]["payload"] == {"x": "inv-299"}
    found = LogStore(store, keys).find(LogQuery(trace_id=trace, limit=100))["logs"]
    assert sorted(r["body"] for r in found) == sorted(f"line {i}" for i in range(50))


def test_bad_frames_are_dropped_with_an_error_and_the_writer_goes_on(settings, store):
    now = int(time.time() * 1000)
    done = run_writer(settings, [["h"], ["?", 1], ["h", 3600, [history_line("good", now)]]],
                      raw=b"not json\n")
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert "a frame that is not JSON was dropped" in err
    assert "dropped a 'h' frame (IndexError" in err
    assert "dropped a '?' frame (ValueError: no such frame" in err
    assert HistoryStore(store, Keys(settings.namespace)).attempts("good")[0]["status"] \
        == "succeeded"


def test_with_writer_thread_a_worker_writes_its_telemetry_itself(cluster):
    cluster.engine(config='[modules.observability]\nwriter = "thread"\n')
    worker = cluster.worker()
    iid = cluster.trigger("test::echo", {"n": 1})["invocation_id"]
    assert attempts(cluster, iid)[0]["status"] == "succeeded"
    assert invocations(cluster, function_id="test::echo")["total"] == 1
    assert writer_of(worker.pid) is None


def test_a_forked_child_lets_go_of_its_parents_writer(settings):
    """A handler that forks (multiprocessing) must not write into its worker's pipe, nor
    keep the writer from seeing the worker exit."""
    code = """
import os
from iii_broker.settings import Settings
from iii_broker.modules.observability.writer import ProcessWriter
w = ProcessWriter(Settings.from_env())
w.start()
fd = w._proc.stdin.fileno()
pid = os.fork()
if pid == 0:
    try:
        os.fstat(fd)
        os._exit(1)  # the parent's pipe is still open in the child
    except OSError:
        os._exit(0 if w._proc is None else 2)
_, status = os.waitpid(pid, 0)
print(w._proc.pid, os.waitstatus_to_exitcode(status), flush=True)
os._exit(0)  # the worker dies (no flush, no close): only its exit ends the writer's input
"""
    env = {**os.environ, **settings.child_env()}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    writer, child_status = (int(x) for x in done.stdout.split())
    assert child_status == 0, "the forked child kept its parent's writer"
    wait_for(lambda: not alive(writer), timeout=15, what="the writer to end with its worker")
