"""The building blocks of a module: trigger types with checked config schemas, and the
hooks a module may implement (see docs/architecture.md, "Modules").

Which process calls which hook:

========================  =======================  ===========================================
hook                      where                    for
========================  =======================  ===========================================
``trigger_types``         every process            schemas, checked by ``App.register_trigger``
                                                   and again by the engine
``options``               engine, web, CLI         the module's ``[modules.NAME]`` table
``context_extras``        worker, engine           what a running function finds on ``ctx``
``process_started``       every process, once      process-wide setup (telemetry)
``observers``             worker, engine           sees every invocation start and finish
``builtins``              every engine             functions the engine serves
``engine_started``        every engine, once       e.g. writing settings to Redis
``duties``                engine; ``elected``      periodic work; elected duties run only in
                          ones in the leader only  the engine holding ``NS:lock:sweeper``
``registering``           engine, per              checks (and locks) around recording
                          registration             triggers; raises TriggerConfigError
``triggers_registered``   engine, per              bookkeeping once triggers are recorded
                          registration
``worker_services``       every ``iii-worker``     threads a worker runs beside its consumer
``web_address``           ``iii-broker web``       where the web process listens
``web_setup``             every web process        views, blueprints and hooks on the Flask app
``cli_commands``          ``iii-broker``           subcommands
``processes``             ``iii-broker up``        process types of the module's own (``beat``)
========================  =======================  ===========================================
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ..errors import ConfigError, EnqueueError, InvalidFunctionId, TriggerConfigError
from ..function import check_function_id
from ..schema import Field, check_fields
from .settings_file import module_table, read_settings_file

if TYPE_CHECKING:
    import argparse

    from flask import Flask

    from ..context import Context
    from ..observe import Observer
    from ..settings import Settings
    from .hosts import EngineHost, WebHost, WorkerHost


def nonempty(value: Any) -> str | None:
    return "must not be empty" if isinstance(value, str) and not value.strip() else None


def port(value: Any) -> str | None:
    return None if 1 <= value <= 65535 else f"is {value}; use a TCP port from 1 to 65535"


def function_ids(value: Any) -> str | None:
    if not all(isinstance(v, str) for v in value):
        return "must be a list of function ids"
    return next((problem for v in value if (problem := function_id(v))), None)


def function_id(value: Any) -> str | None:
    try:
        check_function_id(value, builtin=True)
    except InvalidFunctionId as exc:
        return f"is not a function id: {exc.message}"
    return None


CONDITION = Field(str, check=function_id)


def at_least(minimum: int) -> Callable[[Any], str | None]:
    return lambda v: f"must be >= {minimum}" if v < minimum else None


LIMITS = {
    "max_value_bytes": Field(int, default=1024 * 1024, check=at_least(64)),
    "max_path_depth": Field(int, default=32, check=at_least(1)),
    "max_key_length": Field(int, default=256, check=at_least(1)),
    "max_scope_length": Field(int, default=256, check=at_least(1)),
    "changes_maxlen": Field(int, default=100_000, check=at_least(100)),
}
"""Options of modules that store JSON values (state, stream): see
:class:`~iii_broker.documents.Limits`."""


@dataclass(frozen=True)
class TriggerType:
    """A trigger type (``http``, ``cron``, ...) and the schema of its config."""

    name: str
    schema: dict[str, Field]
    description: str = ""
    check_binding: Callable[[str, dict[str, Any]], str | None] | None = None
    """Checks a whole binding (function id and checked config); returns a problem or None."""

    def validate(self, config: Any, function_id: str | None = None) -> dict[str, Any]:
        """The checked config; raises :class:`TriggerConfigError` naming the problem."""
        checked = check_fields(f"{self.name} trigger config", config, self.schema)
        if function_id is not None and self.check_binding is not None:
            problem = self.check_binding(function_id, checked)
            if problem:
                raise TriggerConfigError(problem, function_id=function_id)
        return checked


@dataclass(frozen=True)
class Builtin:
    """A function the engine serves on a module's behalf."""

    function_id: str
    handler: Callable[[Any], Any]
    description: str


@dataclass(frozen=True)
class Duty:
    """Periodic work in the engine. ``run`` returns the seconds until it wants to run again
    (None: ``interval_s``). An ``elected`` duty runs only in the engine holding the sweeper
    lock, so it happens once in the cluster; the others run in every engine."""

    name: str
    run: Callable[[], float | None]
    interval_s: float
    elected: bool = True


class Service(Protocol):
    """Something a module runs inside a worker process, beside its consumer."""

    def start(self) -> None: ...

    def stop(self) -> None:
        """Take no more work; what runs may finish (see :meth:`drain`)."""

    def drain(self, hard: threading.Event) -> int:
        """Wait for running work to finish (until ``hard`` is set); returns how much is left."""


@dataclass
class Module:
    """A capability. Subclasses set ``name``, ``trigger_types`` and ``options``."""

    name: ClassVar[str] = ""
    trigger_types: ClassVar[tuple[TriggerType, ...]] = ()
    options: ClassVar[dict[str, Field]] = {}
    """Settings this module accepts in its ``[modules.NAME]`` table."""
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, table: dict[str, Any]) -> Module:
        """Build from its settings-file table; raises :class:`ConfigError`."""
        values = check_fields(f"[modules.{cls.name}]", table, cls.options, error=ConfigError)
        return cls(config=values)

    @classmethod
    def configured(cls, settings: Settings) -> Module | None:
        """This module as the settings file configures it, read without the other modules
        (for a process of its own); None when it is disabled. Raises :class:`ConfigError`
        naming the file."""
        data, path = read_settings_file(settings.config_path)
        where = path or "engine settings"
        try:
            module = cls.from_config(module_table(data, cls.name, where))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc.message}") from None
        return module if module.config.get("enabled", True) else None

    # -- every process --------------------------------------------------------------

    def context_extras(self, ctx: Context) -> dict[str, Any]:
        """What this module adds to a running function's Context (nothing by default)."""
        return {}

    def process_started(self, kind: str, settings: Settings) -> None:
        """Called once as a process starts serving: ``engine``, ``worker`` and ``web``. (A
        module's own process types, which load no module list, start the telemetry through
        the observability module's ``process_started`` function.)"""

    def observers(self, worker: WorkerHost) -> list[Observer]:
        """What sees every invocation this worker (or engine) runs start and finish."""
        return []

    # -- engine ---------------------------------------------------------------------

    def builtins(self, engine: EngineHost) -> list[Builtin]:
        """Functions every engine serves for this module."""
        return []

    def engine_started(self, engine: EngineHost) -> None:
        """Called once when an engine starts, before it serves calls."""

    def seed(self, engine: EngineHost) -> None:
        """Write what the cluster reads from Redis and only an engine writes (e.g. the queue
        settings). Called by every engine at start, before :meth:`engine_started`, and again
        whenever an engine finds Redis lost it (restarted empty): it must be idempotent."""

    def duties(self, engine: EngineHost) -> list[Duty]:
        """Periodic work of this module in the engine."""
        return []

    @contextmanager
    def registering(self, engine: EngineHost, triggers: list[dict[str, Any]]) -> Iterator[None]:
        """Wraps recording a registration's (checked) triggers: check them against the
        registry (raise :class:`TriggerConfigError`), holding any lock the check needs."""
        yield

    def triggers_registered(self, engine: EngineHost, triggers: list[dict[str, Any]]) -> None:
        """Called after a registration's triggers were recorded."""

    # -- worker ---------------------------------------------------------------------

    def worker_services(self, worker: WorkerHost) -> list[Service]:
        """Services an ``iii-worker`` runs for this module (not the engine's own worker)."""
        return []

    # -- web ------------------------------------------------------------------------

    def web_address(self, settings: Settings) -> tuple[str, int] | None:
        """Where the web process listens (host, port) when this module serves it; the first
        enabled module with an answer decides. Read before any ``web_setup`` runs."""
        return None

    def web_setup(self, app: Flask, web: WebHost) -> None:
        """Add this module's views and hooks to the web process's Flask app."""

    # -- CLI ------------------------------------------------------------------------

    def processes(self) -> dict[str, list[str]]:
        """Process types this module runs of its own (``{"beat": ["beat"]}``): the name and
        the ``iii-broker`` arguments that start one. ``iii-broker up`` starts one of each
        for every enabled module, after the engine, worker and web."""
        return {}

    def cli_commands(self, sub: argparse._SubParsersAction[Any]
                     ) -> dict[str, Callable[[Settings, argparse.Namespace], int]]:
        """Add subcommands to ``iii-broker``; returns a runner for each command name."""
        return {}


def required(payload: Any, key: str, what: str | None = None) -> str:
    """``payload[key]`` of a built-in's payload, a non-empty string; raises ValueError."""
    value = payload.get(key) if isinstance(payload, dict) else None
    if not isinstance(value, str) or not value:
        raise ValueError(f"payload needs {what or key!r} (a non-empty string)")
    return value


def topic_and_data(payload: Any) -> tuple[str, Any]:
    """``topic`` and ``data`` of a publish; raises ValueError or EnqueueError."""
    topic = required(payload, "topic")
    if "data" not in payload:
        raise EnqueueError(f"publish to {topic!r} needs 'data' (the message)")
    return topic, payload["data"]
