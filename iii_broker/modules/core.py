"""The engine's own module, always enabled: discovery, engine-owned triggers, and the
``engine::functions-available`` trigger type (iii-reference §4).

Built-ins: ``engine::functions::list``, ``engine::workers::list``,
``engine::triggers::list``, ``engine::register_trigger {type, function_id, config,
metadata?}`` → ``{id}`` and ``engine::unregister_trigger {id}`` → ``{id, removed}``.
CLI: ``iii-broker functions | workers | triggers [add TYPE FUNCTION_ID CONFIG | remove ID]``,
and ``iii-broker deadletters [drop ID... | --all --yes]`` (``deadletter_cli.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable
from typing import Any, ClassVar

from ..client import Caller, Void
from ..console import fail, print_table
from ..errors import FunctionNotFound, IIIError, TriggerConfigError
from ..observe import triggered_by
from ..registry import ENGINE_OWNED
from ..settings import Settings, mask_url
from . import deadletter_cli, providers
from .base import Builtin, Duty, Field, Module, Service, TriggerType, required
from .hosts import EngineHost, WorkerHost

FUNCTIONS_AVAILABLE = "engine::functions-available"
WATCH_INTERVAL_S = 0.2


class CoreModule(Module):
    name = "engine"
    trigger_types: ClassVar[tuple[TriggerType, ...]] = (
        TriggerType(FUNCTIONS_AVAILABLE, {},
                    "fires with {functions} whenever the set of live functions changes"),
    )
    options: ClassVar[dict[str, Field]] = {"enabled": Field(bool, default=True)}

    # -- engine ---------------------------------------------------------------------

    def builtins(self, engine: EngineHost) -> list[Builtin]:
        registry = engine.registry
        return [
            Builtin("engine::functions::list", lambda _p: {"functions": registry.functions()},
                    "Live functions and the workers serving them"),
            Builtin("engine::workers::list", lambda _p: {"workers": registry.workers()},
                    "Registered workers with heartbeat and in-flight counts"),
            Builtin("engine::triggers::list", lambda _p: {"triggers": registry.triggers()},
                    "Triggers, active while their function has a live worker (and, unless the "
                    "engine owns them, a live worker declares them)"),
            Builtin("engine::register_trigger", lambda p: register_trigger(engine, p),
                    "Add a trigger no worker owns: {type, function_id, config, metadata?} -> {id}"),
            Builtin("engine::unregister_trigger", lambda p: unregister_trigger(engine, p),
                    "Remove an engine-owned trigger: {id} -> {id, removed} (idempotent)"),
        ]

    def duties(self, engine: EngineHost) -> list[Duty]:
        return [Duty("functions-available", lambda: announce_functions(engine), WATCH_INTERVAL_S),
                Duty("custom-triggers", lambda: providers.reconcile(engine),
                     providers.RECONCILE_S)]

    # -- worker ---------------------------------------------------------------------

    def worker_services(self, worker: WorkerHost) -> list[Service]:
        return [providers.TypeProvider(worker)]

    # -- CLI ------------------------------------------------------------------------

    def cli_commands(self, sub: argparse._SubParsersAction[Any]
                     ) -> dict[str, Callable[[Settings, argparse.Namespace], int]]:
        for name, what in (("functions", "live functions"), ("workers", "registered workers")):
            p = sub.add_parser(name, help=f"list {what}")
            p.add_argument("--json", action="store_true", help="print the raw JSON")
        p = sub.add_parser("triggers", help="list triggers and whether they are active; add or "
                           "remove engine-owned ones")
        p.add_argument("--json", action="store_true", help="print the raw JSON")
        actions = p.add_subparsers(dest="triggers_command", metavar="ACTION")
        q = actions.add_parser("add", help="add a trigger no worker owns; prints its id")
        q.add_argument("type")
        q.add_argument("function_id")
        q.add_argument("config", nargs="?", default="{}", help="JSON object (default {})")
        q = actions.add_parser("remove", help="remove an engine-owned trigger (idempotent)")
        q.add_argument("id")
        deadletter_cli.add_parser(sub)
        return {"functions": _listing, "workers": _listing, "triggers": _triggers,
                "deadletters": deadletter_cli.run}


def register_trigger(engine: EngineHost, payload: Any) -> dict[str, Any]:
    """``engine::register_trigger``: check and record a trigger that no worker owns."""
    if not isinstance(payload, dict):
        raise TriggerConfigError("engine::register_trigger needs {type, function_id, config}")
    (trigger_id,) = engine.add_triggers([payload])
    return {"id": trigger_id}


def unregister_trigger(engine: EngineHost, payload: Any) -> dict[str, Any]:
    """``engine::unregister_trigger``: remove an engine-owned trigger; unknown ids are fine."""
    trigger_id = required(payload, "id")
    entry = engine.registry.trigger(trigger_id)
    if entry is not None and entry.get("owner", "worker") != ENGINE_OWNED:
        raise TriggerConfigError(
            f"trigger {trigger_id} ({entry['type']} of {entry['function_id']!r}) is declared by "
            "app code: it goes when no live worker declares it; remove it from the app (or call "
            "its handle's unregister())", function_id=entry["function_id"])
    removed = entry is not None and engine.registry.remove_trigger(trigger_id)
    return {"id": trigger_id, "removed": removed}


def announce_functions(engine: EngineHost) -> None:
    """Elected: fire ``engine::functions-available`` triggers when the set of live functions
    differs from the one last announced (kept in Redis, so a new leader does not repeat it)."""
    registry = engine.registry
    live = sorted(registry.live_functions())
    digest = hashlib.sha1("\n".join(live).encode()).hexdigest()
    previous = registry.r.set(registry.keys.functions_seen, digest, get=True)
    if previous is None or previous == digest:
        return  # the first look only records the set
    listeners = [t for t in registry.triggers()
                 if t["type"] == FUNCTIONS_AVAILABLE and t["active"]]
    if not listeners:
        return
    payload = {"functions": registry.functions()}
    for t in {t["function_id"]: t for t in listeners}.values():
        try:
            with triggered_by(FUNCTIONS_AVAILABLE):
                engine.caller.call(t["function_id"], payload, action=Void)
        except IIIError:
            continue  # it just went away; it hears of it no more


# -- CLI --------------------------------------------------------------------------

def _call(settings: Settings, function_id: str, payload: Any) -> Any:
    caller = Caller(settings)
    try:
        return caller.call(function_id, payload, timeout_ms=10_000)
    except FunctionNotFound:
        if not function_id.startswith("engine::"):
            raise
        raise FunctionNotFound(
            f"no engine is running in namespace {settings.namespace!r} (Redis at "
            f"{mask_url(settings.redis_url)}); start one with: iii-broker engine") from None
    finally:
        caller.close()


def _listing(settings: Settings, args: argparse.Namespace) -> int:
    what = args.command
    data = _call(settings, f"engine::{what}::list", {})
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    rows: list[list[str]]
    if what == "functions":
        header = ["FUNCTION", "WORKERS", "DESCRIPTION"]
        rows = [[f["function_id"], str(len(f.get("workers", []))), f.get("description") or ""]
                for f in data["functions"]]
    elif what == "workers":
        header = ["WORKER", "APP", "KIND", "PID", "CONCURRENCY", "IN FLIGHT", "FUNCTIONS"]
        rows = [[w["id"], str(w.get("name")), str(w.get("kind")), str(w.get("pid")),
                 str(w.get("concurrency")), str(w.get("in_flight")),
                 ", ".join(w.get("functions") or [])] for w in data["workers"]]
    else:
        header = ["TRIGGER", "TYPE", "FUNCTION", "ACTIVE", "CONFIG"]  # --json adds owner
        rows = [[t["id"], t["type"], t["function_id"], "yes" if t["active"] else "no",
                 json.dumps(t["config"], sort_keys=True)] for t in data["triggers"]]
    print_table(header, rows)
    return 0


def _triggers(settings: Settings, args: argparse.Namespace) -> int:
    if args.triggers_command == "add":
        try:
            config = json.loads(args.config)
        except RecursionError:
            return fail("CONFIG is nested too deeply to be decoded as JSON", 2)
        except ValueError as exc:
            return fail(f"CONFIG is not valid JSON: {exc}", 2)
        if not isinstance(config, dict):
            return fail(f"CONFIG must be a JSON object, not {type(config).__name__}", 2)
        result = _call(settings, "engine::register_trigger",
                       {"type": args.type, "function_id": args.function_id, "config": config})
        print(result["id"])
        return 0
    if args.triggers_command == "remove":
        result = _call(settings, "engine::unregister_trigger", {"id": args.id})
        print(f"removed {args.id}" if result["removed"] else f"{args.id} was not registered")
        return 0
    return _listing(settings, args)
