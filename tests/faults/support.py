"""What the outage tests share: calls timed as callers see them, and the recovery report."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from iii_broker.errors import IIIError
from tests.helpers import Proc, wait_for

ENGINE_CONFIG = """
[modules.queue.queues.payment]
max_retries = 5
backoff_ms = 100
"""


@dataclass
class Answer:
    """What one call got, and how long it took."""

    result: Any = None
    code: str | None = None
    message: str = ""
    seconds: float = 0.0


def timed(fn: Any, *args: Any, **kwargs: Any) -> Answer:
    started = time.monotonic()
    try:
        result = fn(*args, **kwargs)
        return Answer(result=result, seconds=time.monotonic() - started)
    except IIIError as exc:
        return Answer(code=exc.code, message=exc.message, seconds=time.monotonic() - started)


def recovery_s(call: Any, timeout: float = 30) -> float:
    """Seconds until ``call()`` succeeds (it is retried until then)."""
    started = time.monotonic()
    wait_for(call, timeout=timeout, interval=0.05, what="the cluster to answer again")
    return time.monotonic() - started


def report(fault: str, callers_saw: str, lost: str, recover_s: float) -> None:
    """One row of the fault table (run with -s to see them)."""
    print(f"\nFAULT-TABLE | {fault} | {callers_saw} | {lost} | {recover_s:.2f} s")


def assert_rode_it_out(*procs: Proc, outages: int = 1) -> None:
    """Each process still runs and logged the outage once when it began (one line per server
    lost), with no traceback."""
    for proc in procs:
        out = proc.output()
        assert proc.popen.poll() is None, f"{proc.name} exited:\n{out}"
        assert out.count("lost the connection to") <= outages, out
        assert "Traceback" not in out, out
