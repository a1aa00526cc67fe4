"""The observability module's settings: the ``[modules.observability]`` table.

The engine reads the table and writes it to Redis (``NS:observability``, :meth:`seed`);
every other process (workers, web, beat, stream) reads it from there as it starts and
every few seconds after, so one settings file governs the whole cluster.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar

from ...settings import Settings
from ..base import Field, at_least, port

log = logging.getLogger("iii.observability")

MODULE = "observability"
"""The module's name (its ``[modules.observability]`` table)."""
LOG_LEVELS = ("trace", "debug", "info", "warn", "error")
UNOBSERVED_PREFIX = "engine::"
"""Runs of the management and discovery built-ins are neither recorded in the history nor
counted in the metrics: pollers (a console, ``iii-broker`` itself) would drown the rest."""


def observed(function_id: str) -> bool:
    """True when runs of ``function_id`` go into the history and the metrics."""
    return not function_id.startswith(UNOBSERVED_PREFIX)
EXPORTERS = ("auto", "otlp", "console", "none")
WRITERS = ("process", "thread")

OPTIONS: dict[str, Field] = {
    "enabled": Field(bool, default=True),
    "level": Field(str, default="info", choices=LOG_LEVELS),
    "logs": Field(bool, default=True),
    "logs_max_count": Field(int, default=100_000, check=at_least(100)),
    "logs_max_age_s": Field(int, default=7 * 86400, check=at_least(60)),
    "history": Field(bool, default=True),
    "history_max_count": Field(int, default=100_000, check=at_least(100)),
    "history_max_age_s": Field(int, default=7 * 86400, check=at_least(60)),
    "history_max_value_bytes": Field(int, default=4096, check=at_least(0)),
    "metrics": Field(bool, default=True),
    "metrics_port": Field(int, check=port),
    "exporter": Field(str, default="auto", choices=EXPORTERS),
    "service_name": Field(str, default="iii-broker"),
    "writer": Field(str, default="process", choices=WRITERS),
}


@dataclass(frozen=True)
class ObservabilityOptions:
    """What each part of the module does; see docs/observability.md."""

    enabled: bool = True
    level: str = "info"
    """The least severe record of a handler's loggers that is stored (and fires triggers)."""
    logs: bool = True
    logs_max_count: int = 100_000
    logs_max_age_s: int = 7 * 86400
    history: bool = True
    history_max_count: int = 100_000
    history_max_age_s: int = 7 * 86400
    history_max_value_bytes: int = 4096
    """Payloads and results larger than this (as JSON) are stored cut, marked ``truncated``."""
    metrics: bool = True
    metrics_port: int | None = None
    """A port of this process's own serving Prometheus text (``III_METRICS_PORT`` overrides)."""
    exporter: str = "auto"
    """Where spans and OTel log records go: ``auto`` follows the OTEL_* variables (OTLP
    when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_TRACES_EXPORTER`` says so), ``otlp``,
    ``console`` or ``none``."""
    service_name: str = "iii-broker"
    writer: str = "process"
    """Where a worker stores its telemetry and sends its OTLP: ``process``, a child
    process of its own (:mod:`.writer`), or ``thread``, its own threads."""

    SHARED: ClassVar[tuple[str, ...]] = ("enabled", "level", "logs", "logs_max_count",
                                         "logs_max_age_s", "history", "history_max_count",
                                         "history_max_age_s", "history_max_value_bytes",
                                         "metrics", "exporter", "service_name",
                                         "writer")
    """The settings written to Redis for the other processes (a port is each process's own)."""

    @classmethod
    def of(cls, config: dict[str, Any], settings: Settings | None = None) -> ObservabilityOptions:
        """From the module's checked config; ``III_METRICS_PORT`` (``settings``), when set,
        overrides ``metrics_port``."""
        names = {f.name for f in fields(cls)}
        options = cls(**{k: v for k, v in config.items() if k in names})
        if settings is not None and settings.metrics_port:
            options = replace(options, metrics_port=settings.metrics_port)
        return options

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps({k: data[k] for k in self.SHARED}, sort_keys=True)

    def with_shared(self, text: str | None) -> ObservabilityOptions:
        """These options with the cluster's shared ones (JSON from Redis) applied."""
        if not text:
            return self
        try:
            data = json.loads(text)
            config = {k: v for k, v in data.items() if k in self.SHARED}
            return replace(self, **config)
        except (ValueError, TypeError) as exc:
            log.warning("the observability settings in Redis are unreadable (%s): kept "
                        "those of this process", exc)
            return self
