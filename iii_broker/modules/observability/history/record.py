"""One attempt of one invocation as the history stores it: a JSON object built from a
:class:`~iii_broker.observe.Run` on the history's own thread (never the handler's)."""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii as _q  # type: ignore[attr-defined]
from typing import Any

from ....errors import IIIError
from ....observe import Run

RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
INTERRUPTED = "interrupted"
STATUSES = (RUNNING, SUCCEEDED, FAILED, INTERRUPTED)
"""Every status a record may have; ``interrupted``: its worker died while it ran."""

_VALUE = json.JSONEncoder(default=str, separators=(",", ":"), ensure_ascii=False)
"""Encodes a payload or result to measure it (one encoder: ``json.dumps`` with options
builds a new one per call)."""
RECORD = json.JSONEncoder(default=str, separators=(",", ":"))
"""Encodes a record for Redis."""


def bounded(value: Any, max_bytes: int) -> tuple[Any, bool]:
    """``(value, False)`` when its JSON text fits in ``max_bytes`` (UTF-8), else the text cut
    to the bound and True. Values JSON cannot encode are stored as their ``str``."""
    text = _VALUE.encode(value)
    data = text.encode()
    if len(data) <= max_bytes:
        return value, False
    return data[:max_bytes].decode(errors="ignore"), True


def error_of(exc: BaseException | None) -> dict[str, str] | None:
    """``{code, message}``: an :class:`IIIError`'s own code, else ``invocation_failed``."""
    if exc is None:
        return None
    if isinstance(exc, IIIError):
        return {"code": exc.code, "message": exc.message}
    return {"code": "invocation_failed", "message": f"{type(exc).__name__}: {exc}"}


def record_of(run: Run, max_value_bytes: int, status: str | None = None) -> dict[str, Any]:
    """The record of ``run`` now (``status`` overrides the run's own: ``running``)."""
    status = status or run.status
    finished = status != RUNNING
    payload, payload_cut = bounded(run.payload, max_value_bytes)
    result, result_cut = bounded(run.result, max_value_bytes) if finished else (None, False)
    return {
        "invocation_id": run.invocation_id,
        "function_id": run.function_id,
        "attempt": run.attempt,
        "status": status,
        "trigger_type": run.trigger_type,
        "kind": run.kind,
        "queue": run.queue,
        "started_at": run.started_ms,
        "duration_ms": round(run.duration_s * 1000, 3) if finished else None,
        "error": error_of(run.error) if finished else None,
        "trace_id": run.span.trace_id,
        "span_id": run.span.span_id,
        "parent_span_id": run.parent_span_id,
        "worker_id": run.worker_id,
        "payload": payload,
        "payload_truncated": payload_cut,
        "result": result,
        "result_truncated": result_cut,
        "rerun_of": run.rerun_of,
    }


def _text(value: Any, max_bytes: int) -> tuple[str, bool]:
    """``value`` as JSON text, or (over ``max_bytes``) its text cut to the bound, as a JSON
    string; and whether it was cut."""
    text = _VALUE.encode(value)
    data = text.encode()
    if len(data) <= max_bytes:
        return text, False
    return _q(data[:max_bytes].decode(errors="ignore")), True


def _opt(value: str | None) -> str:
    return "null" if value is None else _q(value)


def record_json(run: Run, max_value_bytes: int, status: str | None = None) -> str:
    """:func:`record_of` as JSON text, written directly (the writer's hot loop: about a
    third of the cost of building the dict and encoding it)."""
    status = status or run.status
    finished = status != RUNNING
    payload, payload_cut = _text(run.payload, max_value_bytes)
    result, result_cut = _text(run.result, max_value_bytes) if finished else ("null", False)
    error = RECORD.encode(error_of(run.error)) if finished and run.error is not None else "null"
    duration = repr(round(run.duration_s * 1000, 3)) if finished else "null"
    span = run.span
    return (f'{{"invocation_id":{_q(run.invocation_id)},"function_id":{_q(run.function_id)},'
            f'"attempt":{int(run.attempt)},"status":{_q(status)},'
            f'"trigger_type":{_q(run.trigger_type)},"kind":{_q(run.kind)},'
            f'"queue":{_opt(run.queue)},"started_at":{int(run.started_ms)},'
            f'"duration_ms":{duration},"error":{error},"trace_id":{_q(span.trace_id)},'
            f'"span_id":{_q(span.span_id)},"parent_span_id":{_opt(run.parent_span_id)},'
            f'"worker_id":{_q(run.worker_id)},"payload":{payload},'
            f'"payload_truncated":{"true" if payload_cut else "false"},"result":{result},'
            f'"result_truncated":{"true" if result_cut else "false"},'
            f'"rerun_of":{_opt(run.rerun_of)}}}')
