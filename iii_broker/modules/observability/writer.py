"""The telemetry writer: a child process of each worker that does its telemetry's I/O.

A worker runs its handlers on threads that share one interpreter lock. Storing history
and log records in Redis and encoding and sending OTLP is work that lock would serialise
with the handlers, so a worker hands it, in batches, to a process of its own (started
when the worker first has records to hand over: ``python -c COMMAND``, in a session of
its own): the
worker's threads make the records (the history's and the logs' lines, the runs' span
notes), the writer packs them into Redis scripts and protobuf and sends them. On a
machine with a spare core the hot path keeps only the making; on a saturated one the CPU
is the same, spent elsewhere. ``[modules.observability] writer = "thread"`` keeps it all
in the worker, as the other process types always do.

The pipe carries JSON lines (worker -> writer on its standard input)::

    ["hello", {"otlp": null | {"resource": {...}, "logs": bool}}]
    ["h", max_age_s, n]               + n bytes: history lines (history/store.py's line(),
                                        UTF-8, joined by \x1e)
    ["l", max_count, max_age_s, n]    + n bytes: log lines (logs/store.py's line()), also
                                        exported as OTel log records with "otlp"
    ["s", [note, ...]]                finished runs' spans (encode.RunNote)
    ["f", n, timeout_s]               flush: the writer answers ``n`` on its standard
                                        output once all before it is out

(The lines follow their frame's JSON head raw: escaping them into JSON and back cost
more than anything else the pipe does.)

The writer keeps what Redis cannot take yet in bounded buffers (as a worker would: see
:mod:`.batch`) and ends when its standard input does: when the worker exits, or dies.
Then it writes what it holds (waiting at most :data:`EXIT_WAIT_S`) and exits, so a worker
killed with SIGKILL loses nothing it had handed over. It runs in a session of its own
and ignores SIGINT and SIGTERM (a terminal's Ctrl-C or a supervisor's stop reaches a
whole process group or cgroup): the worker drains through it, and its exit ends the
writer. A writer that dies is started again by the
next batch; what it held is lost (at most one batch a part).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any

from ...settings import Settings
from ...store import Keys, connect_store
from .batch import Batcher, Unavailable
from .history.store import HistoryStore
from .logs.store import LogStore
from .traces.encode import Encoder, ErrorNote, RunNote
from .traces.otlp import Endpoint, Exporter, env_int

log = logging.getLogger("iii.observability")

EXIT_WAIT_S = 10.0
"""How long a writer whose worker is gone goes on writing what it holds (Redis away)."""
COMMAND = ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
           "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
           "from iii_broker.modules.observability.writer import main; main()")
"""The writer's Python command (``python -c COMMAND``)."""
LAUNCH = ["/bin/sh", "-c", 'trap "" INT TERM; exec "$0" -c "$1"', sys.executable, COMMAND]
"""How it is started: through a shell that ignores SIGINT and SIGTERM first, so that the
writer ignores them from its first instant (Python's own start takes tens of ms)."""
RESTART_AFTER_S = 1.0
"""How soon a writer that died may be started again."""
SCRIPT_RECORDS = 100
"""Records a script call of the writer stores at most: a batch of 500 history records
keeps Redis busy for ~15 ms, and every call of the cluster waits behind it."""


_PARENTS: list[Any] = []
"""In a forked child: the parent's writer processes, whose pipes it closed."""


class WriterDown(Unavailable):
    """The writer process is not running (and could not be started just now): the
    batchers keep their records and try again, as in a Redis outage."""


class ProcessWriter:
    """The worker's end: starts the writer and sends it frames (from any thread)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.otlp: dict[str, Any] | None = None
        """What the writer needs to export OTLP (set by the traces part), else None."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._asked = 0
        self._answered = 0
        self._next_start = 0.0
        self._closed = False
        self.restarts = 0
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        """In a forked child (a handler's ``multiprocessing``, say): the writer is the
        parent's. Its pipe is let go of here (two processes writing one pipe would mix
        their frames, and an open copy would keep the writer from seeing its worker
        exit); the child starts a writer of its own if it ever hands one anything."""
        proc, self._proc = self._proc, None
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._asked = self._answered = 0
        if proc is None:
            return
        _PARENTS.append(proc)  # never collected here: its files would close (flush) again
        for pipe in (proc.stdin, proc.stdout):
            try:
                if pipe is not None:
                    os.close(pipe.fileno())
            except (OSError, ValueError):
                pass

    def start(self) -> None:
        """Start the writer now (else the first batch does): it is ready, and any trouble
        starting it is in the log, before the first run ends."""
        try:
            with self._lock:
                self._running()
        except WriterDown:
            pass  # said already; the next batch tries again

    # -- frames -----------------------------------------------------------------------

    def history(self, max_age_s: int, lines: list[str]) -> None:
        """Hand history lines over; raises :class:`WriterDown` (an outage to the caller)."""
        self._send_joined(["h", max_age_s], lines)

    def logs(self, max_count: int, max_age_s: int, lines: list[str]) -> None:
        self._send_joined(["l", max_count, max_age_s], lines)

    def _send_joined(self, head: list[Any], lines: list[str]) -> None:
        self._write(joined_frame(head, lines))

    def spans(self, body: bytes) -> None:
        """An ``s`` frame, made by the traces part (:func:`.traces.runs.spans_frame`)."""
        self._write(body)

    def _send(self, frame: list[Any]) -> None:
        self._write((json.dumps(frame, separators=(",", ":")) + "\n").encode())

    def _write(self, data: bytes) -> None:
        with self._lock:
            proc = self._running()
            try:
                assert proc.stdin is not None
                proc.stdin.write(data)
                proc.stdin.flush()
            except (OSError, ValueError) as exc:
                self._lost(proc, exc)
                raise WriterDown(f"the telemetry writer (pid {proc.pid}) is gone") from exc

    def _running(self) -> subprocess.Popen[bytes]:
        """The writer process, started when there is none (lock held)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            return proc
        if self._closed:
            raise WriterDown("the telemetry writer was closed")
        if proc is not None:
            self._lost(proc, None)
        now = time.monotonic()
        if now < self._next_start:
            raise WriterDown("the telemetry writer is restarting")
        self._next_start = now + RESTART_AFTER_S
        env = {**os.environ, **self.settings.child_env()}
        try:
            # a session of its own: a terminal's Ctrl-C and a supervisor's group signals
            # reach the worker, which drains through its writer; those that reach it
            # anyway (a cgroup's SIGTERM) are ignored from before Python starts: the shell
            # ignores them, and an ignored signal stays ignored across exec
            proc = subprocess.Popen(LAUNCH, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    env=env, start_new_session=True)
        except OSError as exc:
            log.warning("cannot start the telemetry writer (%s); records wait", exc)
            raise WriterDown(str(exc)) from exc
        assert proc.stdin is not None
        hello = ["hello", {"otlp": self.otlp}]
        proc.stdin.write((json.dumps(hello) + "\n").encode())
        self._proc = proc
        threading.Thread(target=self._answers, args=(proc,), name="iii-writer-answers",
                         daemon=True).start()
        return proc

    def _lost(self, proc: subprocess.Popen[bytes], exc: BaseException | None) -> None:
        if self._proc is proc:
            self._proc = None
            self.restarts += 1
            log.warning("the telemetry writer (pid %d) exited (%s); another starts with the "
                        "next batch (what it held is lost)", proc.pid,
                        exc or f"exit code {proc.poll()}")
        with self._cond:  # nobody waits for an answer it will never give
            self._answered = self._asked
            self._cond.notify_all()

    def _answers(self, proc: subprocess.Popen[bytes]) -> None:
        """Read the writer's answers to flushes."""
        assert proc.stdout is not None
        for raw in proc.stdout:
            try:
                n = int(raw)
            except ValueError:
                continue
            with self._cond:
                self._answered = max(self._answered, n)
                self._cond.notify_all()

    # -- life -------------------------------------------------------------------------

    def flush(self, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) until the writer wrote all handed over so far."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                return True
        with self._cond:
            self._asked += 1
            n = self._asked
        try:
            self._send(["f", n, max(0.0, timeout_s - 0.1)])
        except WriterDown:
            return False
        with self._cond:
            return self._cond.wait_for(lambda: self._answered >= n, timeout_s)

    def close(self, timeout_s: float = 2.0) -> None:
        """Flush, then end the writer's input: it writes what is left and exits by itself
        (this process does not wait for it)."""
        self.flush(timeout_s)
        with self._lock:
            self._closed = True
            proc, self._proc = self._proc, None
        if proc is not None and proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass


def joined_frame(head: list[Any], lines: list[str]) -> bytes:
    """An ``h`` or ``l`` frame: its JSON head, whose last item is the length in bytes of
    the lines that follow it as they are, joined by ``\\x1e`` (no JSON escaping)."""
    joined = "\x1e".join(lines).encode()
    return (json.dumps([*head, len(joined)]) + "\n").encode() + joined


# -- the writer process ----------------------------------------------------------------


class Writer:
    """The writer process's side: frames in, Redis and OTLP out."""

    def __init__(self, settings: Settings, hello: dict[str, Any]) -> None:
        store = connect_store(settings)
        keys = Keys(settings.namespace)
        self.history_store = HistoryStore(store, keys)
        self.log_store = LogStore(store, keys)
        # short scripts: Redis serves the worker's own calls between them
        self.history: Batcher[tuple[int, bytes]] = Batcher(
            "history", self._history, settings, batch=SCRIPT_RECORDS // 4)
        self.logs: Batcher[tuple[int, int, bytes]] = Batcher(
            "logs", self._logs, settings, batch=SCRIPT_RECORDS // 4)
        self.exporters: list[Any] = []
        self.span_exporter: Any = None
        self.log_exporter: Any = None
        otlp = hello.get("otlp")
        if otlp:
            self._start_otlp(otlp)

    def _start_otlp(self, otlp: dict[str, Any]) -> None:
        encoder = Encoder(otlp.get("resource") or {})
        self.span_exporter = Exporter(
            Endpoint("traces"), encoder.spans_request,
            max_queue=env_int("OTEL_BSP_MAX_QUEUE_SIZE", 2048),
            batch=env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512),
            schedule_delay_ms=env_int("OTEL_BSP_SCHEDULE_DELAY", 5000))
        self.exporters.append(self.span_exporter)
        if otlp.get("logs"):
            def encode_logs(records: list[dict[str, Any]]) -> bytes:
                body, malformed = encoder.logs_request(records)
                self.log_exporter.dropped += malformed
                return body
            self.log_exporter = Exporter(
                Endpoint("logs"), encode_logs,
                max_queue=env_int("OTEL_BLRP_MAX_QUEUE_SIZE", 2048),
                batch=env_int("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", 512),
                schedule_delay_ms=env_int("OTEL_BLRP_SCHEDULE_DELAY", 1000))
            self.exporters.append(self.log_exporter)

    def _history(self, items: list[tuple[int, bytes]]) -> None:
        self.history_store.write_joined(items[-1][0], b"\x1e".join(line for _, line in items))

    def _logs(self, items: list[tuple[int, int, bytes]]) -> None:
        self.log_store.write_joined(items[-1][0], items[-1][1],
                                    b"\x1e".join(line for _, _, line in items))

    def handle(self, frame: list[Any], answer: IO[bytes], joined: bytes = b"") -> None:
        """One frame (``joined``: the lines that followed an ``h`` or ``l`` frame's head)."""
        kind = frame[0]
        if kind == "h":
            max_age = int(frame[1])
            add = self.history.add
            for line in joined.split(b"\x1e"):
                add((max_age, line))
        elif kind == "l":
            max_count, max_age = int(frame[1]), int(frame[2])
            add_log = self.logs.add
            lines = joined.split(b"\x1e")
            for line in lines:
                add_log((max_count, max_age, line))
            if self.log_exporter is not None:
                put, loads = self.log_exporter.put, json.loads
                for line in lines:
                    try:
                        put(loads(line.rpartition(b"\x1f")[2]))
                    except ValueError:
                        self.log_exporter.dropped += 1
        elif kind == "s":
            if self.span_exporter is not None:
                for row in frame[1]:
                    if row[-2] is not None:
                        row[-2] = ErrorNote(*row[-2])
                    self.span_exporter.put(RunNote(*row))
        elif kind == "f":
            self.flush(float(frame[2]))
            answer.write(f"{frame[1]}\n".encode())
            answer.flush()
        else:
            raise ValueError(f"no such frame: {kind!r}")

    def flush(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for part in (self.history, self.logs, *self.exporters):
            part.flush(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        deadline = time.monotonic() + EXIT_WAIT_S
        self.flush(EXIT_WAIT_S)
        for exporter in self.exporters:
            exporter.shutdown(max(0.0, deadline - time.monotonic()))


def main() -> None:
    """The writer process: frames from standard input until it ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker's exit ends us, not a signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # (COMMAND did already; a test may not)
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s telemetry-writer: %(message)s")
    # the worker says when Redis goes and comes back: the same news twice is noise
    logging.getLogger("iii.outage").setLevel(logging.ERROR)
    frames, answer = sys.stdin.buffer, sys.stdout.buffer
    first = frames.readline()
    if not first:
        return
    try:
        hello = json.loads(first)
        config = hello[1] if hello[0] == "hello" and isinstance(hello[1], dict) else {}
    except (ValueError, LookupError, TypeError):
        log.error("the first frame is not a hello: spans are not exported")
        config = {}
    writer = Writer(settings, config)
    while raw := frames.readline():
        try:
            frame = json.loads(raw)
        except ValueError as exc:
            log.error("a frame that is not JSON was dropped (%s)", exc)
            continue
        if not isinstance(frame, list) or not frame:
            log.error("a frame that is not a list was dropped: %.100r", frame)
            continue
        joined = b""
        if frame[0] in ("h", "l") and isinstance(frame[-1], int) and frame[-1] >= 0:
            joined = frames.read(frame[-1])
        try:
            writer.handle(frame, answer, joined)
        except Exception as exc:  # noqa: BLE001 - one bad frame never ends the writer
            log.error("dropped a %.20r frame (%s: %s)", frame[0], type(exc).__name__, exc)
    writer.close()
