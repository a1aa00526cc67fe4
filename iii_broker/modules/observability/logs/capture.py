"""Capturing what handlers log: one ``logging.Handler`` on the root logger of a worker (or
engine) process keeps the records emitted while a run's Context is current.

On the handler's thread a record costs a context lookup, a level check, building a dict
and a deque append (two when the tracer exports: its queue of log records); a
:class:`~..batch.Batcher` thread stores the records in Redis.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .... import context as _context
from ....function import is_reserved
from ....observe import Observer
from ..batch import Batcher
from .record import PYTHON_LEVELS, build, build_direct
from .store import LogStore, line

if TYPE_CHECKING:
    from ..host import TelemetryHost

log = logging.getLogger("iii.observability")

CAPTURING = ("worker", "engine")
"""The process types whose handlers' logs are captured (the ones that run functions)."""
OWN_LOGGER = "iii.observability"
"""Never captured: telemetry must not feed on its own warnings."""
FN_LOGGER = "iii.fn"
"""The parent of every ``ctx.logger`` (``iii.fn.<function id>``)."""


class CaptureHandler(logging.Handler):
    """Hands each record logged inside a run to :meth:`Logs.take` (never raises, never
    takes a lock: records outside a run cost one context-variable lookup)."""

    def __init__(self, logs: Logs) -> None:
        super().__init__(logging.NOTSET)
        self.logs = logs

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        ctx = _context._peek()
        if ctx is None:
            return False
        try:
            self.logs.take(record, ctx)
        except Exception:  # noqa: BLE001 - a log line never fails a call
            return False
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)


class DirectSink:
    """Takes the ``ctx.logger`` records under ``below`` (the process's own level, which the
    capture lowered ``iii.fn`` past): no handler but the store's would see them."""

    def __init__(self, logs: Logs, below: int) -> None:
        self.logs = logs
        self.below = below

    def take(self, logger: logging.Logger, level: int, msg: Any, args: tuple[Any, ...],
             extra: Any, frame: Any) -> None:
        self.logs.take_direct(logger, level, msg, args, extra, frame)


class Logs:
    """The log part of this process's telemetry."""

    def __init__(self, t: TelemetryHost) -> None:
        self.t = t
        self.store: LogStore | None = None
        self.batcher: Batcher[dict[str, Any]] | None = None
        self.handler: CaptureHandler | None = None

    def start(self) -> None:
        if self.t.kind not in CAPTURING:
            return
        self.store = LogStore(self.t.store, self.t.keys)
        self.batcher = Batcher("logs", self._write, self.t.settings,
                               to_redis=self.t.writer is None)
        root = logging.getLogger()
        for old in [h for h in root.handlers if isinstance(h, CaptureHandler)]:
            root.removeHandler(old)  # one capture per process
        self.handler = CaptureHandler(self)
        root.addHandler(self.handler)
        # ctx.logger records at the configured level must reach the handler, whatever
        # level the process logs at itself (III_LOG_LEVEL, INFO by default)
        want = PYTHON_LEVELS[self.t.options.level]
        fn = logging.getLogger(FN_LOGGER)
        fn_before = fn.getEffectiveLevel()
        if fn_before > want:
            # ... without them reaching the process's own output: its handlers keep its level
            # (a record below a handler's level never takes that handler's lock)
            own = root.getEffectiveLevel()
            for other in root.handlers:
                if other is not self.handler and other.level == logging.NOTSET:
                    other.setLevel(own)
            fn.setLevel(want)
            # records under the process's level reach no handler but ours: straight here
            _context.set_log_sink(DirectSink(self, fn_before))

    # -- the handler's thread ----------------------------------------------------------

    def take_direct(self, logger: logging.Logger, level: int, msg: Any, args: tuple[Any, ...],
                    extra: Any, frame: Any) -> None:
        """A ``ctx.logger`` record only the store takes (``context.set_log_sink``)."""
        ctx = _context._peek()
        options = self.t.options
        if (ctx is None or not options.logs or level < PYTHON_LEVELS.get(options.level, 0)
                or self.batcher is None or is_reserved(ctx.function_id)):
            return
        try:
            rec = build_direct(logger, level, msg, args, extra, frame, ctx,
                               options.service_name)
        except Exception:  # noqa: BLE001 - a log line never fails a call
            return
        self.batcher.add(rec)
        emit = getattr(self.t.tracing, "emit_log", None)
        if emit is not None:
            emit(rec)

    def take(self, record: logging.LogRecord, ctx: _context.Context) -> None:
        """Note ``record``, logged inside the run of ``ctx``, when the settings keep it."""
        options = self.t.options
        if (not options.logs or record.levelno < PYTHON_LEVELS.get(options.level, 0)
                or record.name.startswith(OWN_LOGGER) or self.batcher is None
                or is_reserved(ctx.function_id)):  # built-ins' lines stay the engine's own
            return
        rec = build(record, ctx, options.service_name)
        self.batcher.add(rec)
        emit = getattr(self.t.tracing, "emit_log", None)
        if emit is not None:
            emit(rec)  # a bounded queue's append: the exporter's thread encodes and sends

    # -- the batchers' threads ---------------------------------------------------------

    def _write(self, records: list[dict[str, Any]]) -> None:
        assert self.store is not None
        options = self.t.options
        lines = [one for one in map(line, records) if one is not None]
        if len(lines) < len(records):
            log.warning("the log store left out %d record(s) whose function id or trace id "
                        "holds a control character (\\x1e or \\x1f)", len(records) - len(lines))
        if not lines:
            return
        if self.t.writer is not None:
            self.t.writer.logs(options.logs_max_count, options.logs_max_age_s, lines)
        else:
            self.store.write_lines(options.logs_max_count, options.logs_max_age_s, lines)

    # -- life --------------------------------------------------------------------------

    def observer(self) -> Observer | None:
        """An observer whose ``flush`` stores what is buffered (a worker draining)."""
        return LogFlusher(self) if self.batcher is not None else None

    def flush(self, timeout_s: float) -> None:
        if self.batcher is not None:
            self.batcher.flush(timeout_s)

    def close(self) -> None:
        """Store what is buffered and stop capturing (the process exits, or its telemetry
        is replaced: another namespace's)."""
        self.flush(2.0)
        if self.handler is not None:
            logging.getLogger().removeHandler(self.handler)
        sink = _context.log_sink()
        if isinstance(sink, DirectSink) and sink.logs is self:
            _context.set_log_sink(None)
        if self.batcher is not None:
            self.batcher.close(0.0)


class LogFlusher(Observer):
    """Sees no run (records come through the logging handler); flushes on drain. Its
    ``close`` leaves the process-wide capture alone (other workers of the process use it)."""

    def __init__(self, logs: Logs) -> None:
        self.logs = logs

    def flush(self, timeout_s: float) -> None:
        self.logs.flush(timeout_s)
