"""Cron triggers, fired by the ``beat`` process (Celery beat with a RedBeat scheduler).

=================  ===========================================================================
``fields``         parsing and checking an expression's fields, errors naming field and value
``expression``     cron expressions: 5, 6 (seconds first) and 7 (year) fields, IANA zones, DST
``codec``          the JSON of RedBeat's store (entries written without importing Celery)
``schedule``       the Celery/RedBeat schedule class and entry class (beat only)
``options``        the beat's settings
``entries``        the RedBeat entry of each trigger, kept in step with the registry
``slots``          which slot fires now, which are misfires
``scheduler``      the RedBeat scheduler: a lock that fails over in seconds, one fire per slot
``fire``           a fire's payload, condition, overlap rule, call and recorded outcome
``beat``           ``iii-broker beat``
``cli``            ``iii-broker cron list`` and ``cron run``
=================  ===========================================================================

    [modules.cron]
    lock_timeout_s = 10          # a standby beat takes over this long after the leader died
    misfire_threshold_ms = 2000  # a slot later than this is a misfire (skipped)
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from ...errors import ConfigError, TriggerConfigError
from ...settings import Settings
from ..base import CONDITION, Field, Module, TriggerType, nonempty
from ..hosts import EngineHost
from . import cli
from .entries import CRON, Entries, Job
from .expression import problem
from .options import BeatOptions

MISFIRE_POLICIES = ("skip", "catch_up_once")
OVERLAP_POLICIES = ("allow", "skip")
MIN_LOCK_TIMEOUT_S = 2


def _expression(value: str) -> str | None:
    found = problem(value)
    return None if found is None else f"is invalid: {found}"


def _timezone(value: Any) -> str | None:
    found = problem("@daily", value)  # any valid expression: only the zone is in question
    return None if found is None else f"is invalid: {found}"


def _positive(value: Any) -> str | None:
    return None if value > 0 else f"is {value}; use a positive number"


def _lock_timeout(value: Any) -> str | None:
    if value < MIN_LOCK_TIMEOUT_S:
        return (f"is {value}; use at least {MIN_LOCK_TIMEOUT_S} s (the leader renews the lock "
                "every tick, and a tick of many due schedules takes a moment)")
    return None


def _check_binding(function_id: str, config: dict[str, Any]) -> str | None:
    found = problem(config["expression"], config.get("timezone"))
    if found:
        return f"cron trigger of {function_id!r}: {found}"
    if config.get("misfire_grace_s") is not None and config.get("misfire") != "catch_up_once":
        return (f"cron trigger of {function_id!r}: misfire_grace_s applies only with "
                "misfire 'catch_up_once'")
    if config.get("overlap") == "skip" and config.get("queue"):
        return (f"cron trigger of {function_id!r}: overlap 'skip' cannot be combined with a "
                "queue (the beat does not see when a queued run ends); drop one of them")
    return None


CRON_TRIGGER = TriggerType(CRON, {
    "expression": Field(str, required=True, check=_expression),
    "timezone": Field(str, check=_timezone),
    "condition_function_id": CONDITION,
    "queue": Field(str, check=nonempty),
    "misfire": Field(str, choices=MISFIRE_POLICIES),
    "misfire_grace_s": Field((int, float), check=_positive),
    "overlap": Field(str, choices=OVERLAP_POLICIES),
    "timeout_ms": Field(int, check=_positive),
}, "fires on a schedule (6 fields with seconds, 7 with a year, or classic 5-field crontab)",
    check_binding=_check_binding)


class CronModule(Module):
    name = "cron"
    trigger_types: ClassVar[tuple[TriggerType, ...]] = (CRON_TRIGGER,)
    options: ClassVar[dict[str, Field]] = {
        "enabled": Field(bool, default=True),
        "lock_timeout_s": Field((int, float), default=10, check=_lock_timeout),
        "misfire_threshold_ms": Field(int, default=2000, check=_positive),
    }

    def beat_options(self) -> BeatOptions:
        return BeatOptions(lock_timeout_s=float(self.config.get("lock_timeout_s", 10)),
                           misfire_threshold_ms=int(self.config.get("misfire_threshold_ms", 2000)))

    # -- engine ---------------------------------------------------------------------

    @contextmanager
    def registering(self, engine: EngineHost, triggers: list[dict[str, Any]]) -> Iterator[None]:
        """A cron trigger naming a queue needs that queue configured."""
        queue_module = engine.module("queue")
        configured = {"default", *((queue_module.config.get("queues") or {})
                                   if queue_module is not None else {})}
        for t in triggers:
            queue = t["config"].get("queue") if t["type"] == CRON else None
            if queue is None:
                continue
            if queue_module is None:
                raise TriggerConfigError(
                    f"cron trigger of {t['function_id']!r} names queue {queue!r}, but the queue "
                    "module is disabled", function_id=t["function_id"])
            if queue not in configured:
                raise TriggerConfigError(
                    f"cron trigger of {t['function_id']!r} names queue {queue!r}, which is not "
                    f"configured; configured queues: {', '.join(sorted(configured))}",
                    function_id=t["function_id"])
        yield

    def triggers_registered(self, engine: EngineHost, triggers: list[dict[str, Any]]) -> None:
        """Create or update the RedBeat entry of each cron trigger being registered (the beat
        also reconciles within a second, and disables or removes entries)."""
        jobs = [(Job.of(t), True) for t in triggers if t["type"] == CRON]
        if jobs:
            Entries(engine.registry.r, engine.registry.keys).sync(jobs)

    # -- processes and CLI -------------------------------------------------------------

    def processes(self) -> dict[str, list[str]]:
        return {"beat": ["beat"]}

    def cli_commands(self, sub: argparse._SubParsersAction[Any]
                     ) -> dict[str, Callable[[Settings, argparse.Namespace], int]]:
        sub.add_parser("beat", help="run a cron scheduler (Celery beat with RedBeat); run "
                       "several: one leads, the others stand by")
        cli.add_parsers(sub)
        return {"beat": _beat, "cron": cli.run}


def configured(settings: Settings) -> CronModule | None:
    """The cron module as the settings file configures it; None when it is disabled."""
    module = CronModule.configured(settings)
    assert module is None or isinstance(module, CronModule)
    return module


def _beat(settings: Settings, args: argparse.Namespace) -> int:
    module = configured(settings)
    if module is None:
        raise ConfigError("the cron module is disabled ([modules.cron] enabled = false): "
                          "beat has nothing to schedule")
    # The scheduler (Celery, RedBeat) is loaded only in a beat process: every other process
    # that imports iii_broker would pay ~150 ms for it.
    beat = importlib.import_module(f"{__name__}.beat")
    return int(beat.run_beat(settings, module.beat_options()))


__all__ = ["CRON", "CRON_TRIGGER", "CronModule"]
