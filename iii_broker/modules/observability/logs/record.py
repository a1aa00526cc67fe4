"""A handler's log record in iii's shape (an OpenTelemetry log record), and severities.

    {timestamp_unix_nano, severity_number, severity_text, body, attributes, trace_id,
     span_id, service_name, function_id, invocation_id, quiet}

Severity numbers are OpenTelemetry's: TRACE 1, DEBUG 5, INFO 9, WARN 13, ERROR 17, FATAL 21.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

from ....context import Context
from ....errors import InvalidArgument

TRACE = 5
"""Python has no TRACE level: records below DEBUG (``logger.log(5, ...)``) are TRACE."""

SEVERITIES = {"trace": 1, "debug": 5, "info": 9, "warn": 13, "error": 17, "fatal": 21}
"""OpenTelemetry's severity number of each level name."""
SEVERITY_TEXT = {1: "TRACE", 5: "DEBUG", 9: "INFO", 13: "WARN", 17: "ERROR", 21: "FATAL"}
PYTHON_LEVELS = {"trace": 1, "debug": logging.DEBUG, "info": logging.INFO,
                 "warn": logging.WARNING, "error": logging.ERROR}
"""The least Python level of a record stored at each ``level`` setting."""

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "taskName",
    # what ctx.logger adds: the record carries them at its top level already
    "function_id", "invocation_id", "trace_id"}


def severity_of(levelno: int) -> int:
    """The OpenTelemetry severity number of a Python level."""
    if levelno >= logging.CRITICAL:
        return 21
    if levelno >= logging.ERROR:
        return 17
    if levelno >= logging.WARNING:
        return 13
    if levelno >= logging.INFO:
        return 9
    if levelno >= logging.DEBUG:
        return 5
    return 1


def parse_severity(value: Any, what: str = "severity_min") -> int:
    """A severity number from a number (1..24) or a level name (``trace``, ``debug``,
    ``info``, ``warn``/``warning``, ``error``, ``fatal``); raises :class:`InvalidArgument`."""
    if isinstance(value, bool):
        value = None  # neither a number nor a name
    if isinstance(value, int):
        if 1 <= value <= 24:
            return value
        raise InvalidArgument(f"{what} is {value}; use a severity number from 1 to 24 or a "
                              f"level name ({', '.join(SEVERITIES)})")
    if isinstance(value, str):
        name = value.strip().lower()
        name = {"warning": "warn", "critical": "fatal"}.get(name, name)
        if name in SEVERITIES:
            return SEVERITIES[name]
        if name.isdigit():
            return parse_severity(int(name), what)
    raise InvalidArgument(f"{what} is {value!r}; use a level name ({', '.join(SEVERITIES)}) "
                          "or a severity number from 1 to 24")


def build(record: logging.LogRecord, ctx: Context, service_name: str) -> dict[str, Any]:
    """The stored record of ``record``, emitted inside the run of ``ctx``."""
    try:
        body = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string still leaves a record
        body = str(record.msg)
    severity = severity_of(record.levelno)
    attributes: dict[str, Any] = {"logger.name": record.name, "code.filepath": record.pathname,
                                  "code.function": record.funcName, "code.lineno": record.lineno}
    for key, value in record.__dict__.items():
        if key not in _STANDARD and not key.startswith("_"):
            attributes[key] = value if isinstance(value, str | int | float | bool | None) \
                else repr(value)
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        attributes["exception.type"] = type(exc).__qualname__
        attributes["exception.message"] = str(exc)
        attributes["exception.stacktrace"] = record.exc_text or "".join(
            traceback.format_exception(*record.exc_info)).rstrip()
    if record.stack_info:
        attributes["code.stacktrace"] = record.stack_info
    return _shaped(int(record.created * 1e9), severity, body, attributes, ctx, service_name)


def build_direct(logger: logging.Logger, level: int, msg: Any, args: tuple[Any, ...],
                 extra: Any, frame: Any, ctx: Context, service_name: str) -> dict[str, Any]:
    """:func:`build` for a run logger's record that skipped the logging machinery (no
    exception, no stack: those take the standard way)."""
    if args and len(args) == 1 and isinstance(args[0], dict) and args[0]:
        args = args[0]  # type: ignore[assignment]  # LogRecord's mapping case
    try:
        body = str(msg) % args if args else str(msg)
    except Exception:  # noqa: BLE001 - a bad format string still leaves a record
        body = str(msg)
    severity = severity_of(level)
    code = frame.f_code
    attributes: dict[str, Any] = {"logger.name": logger.name, "code.filepath": code.co_filename,
                                  "code.function": code.co_name, "code.lineno": frame.f_lineno}
    if extra:
        for key, value in extra.items():
            if key not in _STANDARD and not key.startswith("_"):
                attributes[key] = value if isinstance(value, str | int | float | bool | None) \
                    else repr(value)
    return _shaped(time.time_ns(), severity, body, attributes, ctx, service_name)


def _shaped(at_ns: int, severity: int, body: str, attributes: dict[str, Any], ctx: Context,
            service_name: str) -> dict[str, Any]:
    """The stored record: iii's shape, and where it came from."""
    return {
        "timestamp_unix_nano": at_ns,
        "severity_number": severity,
        "severity_text": SEVERITY_TEXT[severity],
        "body": body,
        "attributes": attributes,
        "trace_id": ctx.span.trace_id,
        "span_id": ctx.span.span_id,
        "service_name": service_name,
        "function_id": ctx.function_id,
        "invocation_id": ctx.invocation_id,
        "quiet": bool(ctx.quiet),
    }
