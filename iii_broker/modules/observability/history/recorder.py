"""Recording runs off the hot path: the observer only notes a run in a dict as it starts and
hands it to a :class:`~..batch.Batcher` as it ends; the batcher's thread builds the records
and writes them in one round trip per batch. A run still going after
:data:`RUNNING_AFTER_S` gets a ``running`` record, so a worker killed mid-run leaves
evidence the engine can mark ``interrupted``."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from ....observe import Observer, Run
from ..batch import Batcher
from ..options import observed
from .record import RUNNING, record_json
from .store import HistoryStore, line

if TYPE_CHECKING:
    from ..host import TelemetryHost

log = logging.getLogger("iii.observability")

RUNNING_AFTER_S = 1.0
"""A run still going after this long gets a ``running`` record (shorter ones never do)."""
SCAN_S = 0.5
"""How often the runs in progress are looked at for that."""

Note = tuple[Run, bool]
"""A run to record, and whether it is the "still running" note (else its outcome)."""


class History:
    """The history part of a process's telemetry (workers and engines)."""

    def __init__(self, t: TelemetryHost) -> None:
        self.t = t
        self.store = HistoryStore(t.store, t.keys)
        self.batcher: Batcher[Note] = Batcher("history", self._write, t.settings,
                                                  to_redis=t.writer is None)
        self.running: dict[Run, None] = {}
        """The runs in progress of this process (a dict: inserts and pops are atomic)."""
        self._observer = HistoryObserver(self)
        self._scanner: threading.Thread | None = None
        self._scanner_lock = threading.Lock()
        self._stop = threading.Event()

    def start(self) -> None:
        pass  # the scanner starts with the first run (engines that run none never need it)

    def observer(self) -> Observer | None:
        return self._observer

    def flush(self, timeout_s: float) -> None:
        self.batcher.flush(timeout_s)

    def close(self) -> None:
        self.batcher.close(2.0)
        self._stop.set()

    # -- the observer's side ----------------------------------------------------------

    def began(self, run: Run) -> None:
        self.running[run] = None
        if self._scanner is None:
            self._start_scanner()

    def ended(self, run: Run) -> None:
        self.running.pop(run, None)
        self.batcher.add((run, False))

    def _start_scanner(self) -> None:
        with self._scanner_lock:
            if self._scanner is None:
                self._scanner = threading.Thread(target=self._scan, name="iii-history-running",
                                                 daemon=True)
                self._scanner.start()

    def _scan(self) -> None:
        """Give runs going for longer than RUNNING_AFTER_S their ``running`` record."""
        while not self._stop.wait(SCAN_S):
            now = time.perf_counter()
            for run in tuple(self.running.copy()):
                if now - run.started >= RUNNING_AFTER_S and "history:noted" not in run.notes:
                    run.notes["history:noted"] = True
                    self.batcher.add((run, True))

    # -- the batcher's thread -----------------------------------------------------------

    def _write(self, notes: list[Note]) -> None:
        options = self.t.options
        lines = []
        left_out = 0
        for run, still in notes:
            if still and run.status != RUNNING:
                continue  # it ended meanwhile: its outcome follows in the buffer
            status = RUNNING if still else run.status
            try:
                one = line(run.invocation_id, run.attempt, status, run.started_ms,
                           run.worker_id, run.function_id,
                           record_json(run, options.history_max_value_bytes, status))
            except Exception as exc:  # noqa: BLE001 - one odd run never holds up the others
                log.warning("the history left out run %s of %s (%s: %s)", run.invocation_id,
                            run.function_id, type(exc).__name__, exc)
                continue
            if one is None:
                left_out += 1
            else:
                lines.append(one)
        if left_out:
            log.warning("the history left out %d run(s) whose invocation id holds a control "
                        "character (\\x1e or \\x1f)", left_out)
        if not lines:
            return
        if self.t.writer is not None:
            self.t.writer.history(options.history_max_age_s, lines)
        else:
            self.store.write_lines(options.history_max_age_s, lines)


class HistoryObserver(Observer):
    """Takes note of every run (built-ins of the engine aside); never touches Redis."""

    def __init__(self, history: History) -> None:
        self.history = history

    def start(self, run: Run) -> None:
        if self.history.t.options.history and observed(run.function_id):
            self.history.began(run)
            run.notes["history:on"] = True

    def finish(self, run: Run) -> None:
        if run.notes.get("history:on"):
            self.history.ended(run)

    def flush(self, timeout_s: float) -> None:
        self.history.flush(timeout_s)

    def close(self) -> None:
        pass  # the process's recorder outlives one worker (tests run several in a process)
