"""The history's built-ins and what the CLI shares with them: checking a listing's
arguments, showing one invocation, running one again.

- ``engine::invocations::list {function_id?, status?, since?, until? (Unix ms), limit=50,
  offset=0}`` -> ``{invocations: [...], total}``, newest first
- ``engine::invocations::get {invocation_id}`` -> ``{invocation_id, function_id, attempts}``
- ``engine::invocations::rerun {invocation_id}`` -> ``{invocation_id, rerun_of}``
"""

from __future__ import annotations

from typing import Any

from ....client import Caller, Enqueue
from ....errors import FunctionNotFound, InvalidArgument, NotFound
from ....observe import rerunning
from ....transport import function_exchange, function_queue
from .record import STATUSES
from .store import HistoryStore

MAX_LIMIT = 1000
LIST_FIELDS = ("function_id", "status", "since", "until", "limit", "offset")


def _int(payload: dict[str, Any], name: str, default: int | None, least: int,
         most: int | None = None) -> int | None:
    value = payload.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < least \
            or (most is not None and value > most):
        bound = f"from {least} to {most}" if most is not None else f"at least {least}"
        raise InvalidArgument(f"{name!r} must be an integer {bound}, not {value!r}")
    return value


def list_arguments(payload: Any) -> dict[str, Any]:
    """The checked arguments of a listing (keyword arguments of
    :meth:`HistoryStore.page`); raises :class:`InvalidArgument` naming the problem."""
    payload = {} if payload is None else payload
    if not isinstance(payload, dict):
        raise InvalidArgument(f"the payload must be an object, not {type(payload).__name__}")
    unknown = sorted(set(payload) - set(LIST_FIELDS))
    if unknown:
        raise InvalidArgument(f"unknown field(s) {', '.join(map(repr, unknown))}; known: "
                              + ", ".join(LIST_FIELDS))
    function_id = payload.get("function_id")
    if function_id is not None and (not isinstance(function_id, str) or not function_id):
        raise InvalidArgument(f"'function_id' must be a non-empty string, not {function_id!r}")
    status = payload.get("status")
    if status is not None and status not in STATUSES:
        raise InvalidArgument(f"'status' must be one of {', '.join(STATUSES)}, not {status!r}")
    since = _int(payload, "since", None, 0)
    until = _int(payload, "until", None, 0)
    if since is not None and until is not None and until < since:
        raise InvalidArgument(f"'until' ({until}) is before 'since' ({since})")
    return {"function_id": function_id, "status": status, "since_ms": since, "until_ms": until,
            "limit": _int(payload, "limit", 50, 1, MAX_LIMIT),
            "offset": _int(payload, "offset", 0, 0)}


def invocation_id_of(payload: Any) -> str:
    value = payload.get("invocation_id") if isinstance(payload, dict) else None
    if not isinstance(value, str) or not value:
        raise InvalidArgument("payload needs 'invocation_id' (a non-empty string)")
    return value


def list_invocations(store: HistoryStore, payload: Any) -> dict[str, Any]:
    page = store.page(**list_arguments(payload))
    return {"invocations": page.invocations, "total": page.total}


def get_invocation(store: HistoryStore, invocation_id: str) -> dict[str, Any]:
    """Every attempt of an invocation; raises :class:`NotFound`."""
    attempts = store.attempts(invocation_id)
    if not attempts:
        raise NotFound(
            f"no invocation {invocation_id!r} in the history (never recorded, or older than "
            "the history keeps: history_max_count / history_max_age_s)",
            invocation_id=invocation_id)
    return {"invocation_id": invocation_id, "function_id": attempts[-1]["function_id"],
            "attempts": attempts}


def rerun(store: HistoryStore, caller: Caller, invocation_id: str) -> dict[str, Any]:
    """Run an invocation again with its original payload: a queued job goes back to its
    queue, anything else is a Void call. Returns ``{invocation_id, rerun_of}`` (the new
    run's id). Raises :class:`NotFound`, :class:`InvalidArgument` (its payload was
    stored truncated) or what calling raises (:class:`FunctionNotFound`...)."""
    last = get_invocation(store, invocation_id)["attempts"][-1]
    fid = last["function_id"]
    if last.get("payload_truncated"):
        raise InvalidArgument(
            f"invocation {invocation_id!r} cannot be run again: its payload was larger than "
            "history_max_value_bytes and only its beginning was kept",
            function_id=fid, invocation_id=invocation_id)
    payload = last.get("payload")
    with rerunning(invocation_id):
        if last.get("kind") == "job" and last.get("trigger_type") == "queue" and last.get("queue"):
            receipt = caller.call(fid, payload, action=Enqueue(queue=last["queue"]))
            new_id = receipt["messageReceiptId"]
        else:
            new_id = _fire(caller, fid, payload)
    return {"invocation_id": new_id, "rerun_of": invocation_id}


def _fire(caller: Caller, function_id: str, payload: Any) -> str:
    """A Void call of ``function_id``; its invocation id (``Caller.call`` keeps it)."""
    if not caller.store.sismember(caller.keys.functions, function_id):
        raise FunctionNotFound(f"function {function_id!r} is not registered by any live "
                               "worker", function_id=function_id)
    inv, body, headers = caller.prepare(function_id, payload, None, None, sync=False)
    caller.publisher.publish(body, exchange=function_exchange(caller.settings, function_id),
                             routing_key=function_id,
                             declare=function_queue(caller.settings, function_id),
                             headers=headers)
    return inv.invocation_id
