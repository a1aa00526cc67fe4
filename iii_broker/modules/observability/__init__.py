"""The observability module (iii's OtelModule): traces, logs, invocation history, metrics.

- :mod:`.traces`: an OpenTelemetry span per invocation, continuing the caller's trace from
  the message's ``traceparent``; the web process's requests (opentelemetry-instrumentation-
  flask) and beat's cron fires are spans too. Exported over OTLP when the standard OTEL_*
  variables ask for it, to the console on request, nowhere by default.
- :mod:`.logs`: what handlers log (``ctx.logger`` and plain ``logging``) is stored in Redis
  with its trace and span ids, listed by ``engine::logs::list`` and ``iii-broker logs``, and
  fires ``log`` triggers.
- :mod:`.history`: every invocation's record (``engine::invocations::list``/``get``,
  ``iii-broker invocations``), runs whose worker died shown ``interrupted``.
- :mod:`.metrics`: counts each process adds to Redis about once a second; the web process
  serves the cluster's sums as Prometheus text at ``/_iii/metrics``.

Nothing here may block or fail a call: every write goes through a bounded buffer and a
thread of its own (:mod:`.batch`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from ...settings import Settings
from ..base import CONDITION, Builtin, Duty, Field, Module, TriggerType
from . import history, logs, metrics, traces
from .options import LOG_LEVELS, MODULE, OPTIONS, ObservabilityOptions
from .telemetry import telemetry

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from flask import Flask

    from ...observe import Observer
    from ..hosts import EngineHost, WebHost, WorkerHost

LOG = "log"


class ObservabilityModule(Module):
    name = MODULE
    trigger_types: ClassVar[tuple[TriggerType, ...]] = (
        TriggerType(LOG, {
            "level": Field(str, choices=LOG_LEVELS),
            "condition_function_id": CONDITION,
        }, "fires for each log record at or above a level"),
    )
    options: ClassVar[dict[str, Field]] = OPTIONS

    def settings(self, settings: Settings | None = None) -> ObservabilityOptions:
        return ObservabilityOptions.of(self.config, settings)

    @property
    def on(self) -> bool:
        return bool(self.config.get("enabled", True))

    # -- every process ------------------------------------------------------------------

    def process_started(self, kind: str, settings: Settings) -> None:
        if self.on:
            telemetry(kind, settings, self.settings(settings))

    def observers(self, worker: WorkerHost) -> list[Observer]:
        if not self.on:
            return []
        return telemetry(getattr(worker, "kind", "worker"), worker.settings,
                         self.settings(worker.settings)).observers()

    # -- engine ---------------------------------------------------------------------------

    def seed(self, engine: EngineHost) -> None:
        engine.registry.r.set(engine.registry.keys.observability, self.settings().to_json())

    def builtins(self, engine: EngineHost) -> list[Builtin]:
        return logs.builtins(engine, self.settings()) + history.builtins(engine, self.settings())

    def duties(self, engine: EngineHost) -> list[Duty]:
        options = self.settings(engine.settings)
        return (logs.duties(engine, options) + history.duties(engine, options)
                + metrics.duties(engine, options))

    def triggers_registered(self, engine: EngineHost, triggers: list[dict[str, Any]]) -> None:
        logs.triggers_registered(engine, triggers)

    # -- web ------------------------------------------------------------------------------

    def web_setup(self, app: Flask, web: WebHost) -> None:
        if not self.on:
            return
        t = telemetry("web", web.settings, self.settings(web.settings))
        traces.web_setup(app, web, t)
        metrics.web_setup(app, web, t)

    # -- CLI ------------------------------------------------------------------------------

    def cli_commands(self, sub: argparse._SubParsersAction[Any]
                     ) -> dict[str, Callable[[Settings, argparse.Namespace], int]]:
        return {**logs.cli_commands(sub), **history.cli_commands(sub)}


def process_started(kind: str, settings: Settings) -> None:
    """For a module's own process type (beat, stream), which has no list of modules: start
    this process's telemetry as the settings file configures the module."""
    module = ObservabilityModule.configured(settings)
    if module is not None:
        module.process_started(kind, settings)
