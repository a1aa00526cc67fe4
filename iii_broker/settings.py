"""Process settings, read once from ``III_*`` environment variables.

One spelling per setting; an ``III_*`` variable that is not listed here is an
error, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import enum
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .errors import ConfigError, InvalidFunctionId
from .function import check_function_id

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# The deepest III_PAYLOAD_MAX_DEPTH may be: well below Python's recursion limit (1000), so
# that json and everything that walks a payload never hits it.
MAX_PAYLOAD_DEPTH = 500
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to reach the broker and the store."""

    broker_url: str = DEFAULT_REDIS_URL
    """Kombu URL carrying invocations: ``redis://`` or ``amqp://``."""
    redis_url: str = DEFAULT_REDIS_URL
    """Redis holding the registry (and later state); defaults to the broker URL if it is Redis."""
    namespace: str = "iii"
    """Prefix of every Redis key, exchange and queue, so several deployments share one server."""
    heartbeat_interval_s: float = 1.0
    """How often workers beat; a worker is dead after three missed beats."""
    default_timeout_ms: int = 30_000
    """Timeout of a sync ``trigger`` that gives none."""
    config_path: str | None = None
    """Engine settings file (TOML); ``iii.toml`` in the working directory when it exists."""
    log_level: str = "INFO"
    """Log level of iii-broker's own processes."""
    http_host: str = "127.0.0.1"
    """Interface the web process (``iii-broker web``) listens on for HTTP triggers."""
    http_port: int = 3111
    """Port of the web process."""
    stream_host: str = "127.0.0.1"
    """Interface the stream process (``iii-broker stream``) listens on for WebSockets."""
    stream_port: int = 3112
    """Port of the stream process."""
    gateway_host: str = "127.0.0.1"
    """Interface the gateway (``iii-broker gateway``) listens on for iii SDK workers."""
    gateway_port: int = 49134
    """Port of the gateway (iii's worker port)."""
    gateway_token: str | None = field(default=None, repr=False)
    """Bearer token SDK workers must present to the gateway; unset: ``III_API_TOKEN``'s."""
    metrics_port: int = 0
    """A port of this process's own serving its Prometheus figures (0: none; the web
    process's ``/_iii/metrics`` serves the whole cluster's). iii uses 9464."""
    payload_max_bytes: int = 8_388_608
    """Largest payload or result a call may carry once encoded as JSON, in bytes (8 MiB)."""
    payload_max_depth: int = 64
    """Deepest nesting of arrays and objects a payload or result may have."""
    http_body_limit: int = 1_048_576
    """Largest request body an HTTP trigger accepts, in bytes (larger: 413)."""
    http_timeout_ms: int = 30_000
    """How long the web process waits for an HTTP trigger's function (then 504)."""
    http_header_timeout_s: float = 10.0
    """How long a client may take to send a request's line and headers (then 408)."""
    http_body_timeout_s: float = 30.0
    """How long a client may take to send a request's body once its headers are in (then 408)."""
    http_middleware: str = ""
    """Comma-separated function ids run as middleware before every HTTP trigger, in order."""
    http_cors_origins: str = ""
    """Comma-separated origins (``https://app.example``) or ``*`` allowed by CORS; empty: off."""
    api_token: str | None = field(default=None, repr=False)
    """Bearer token the management API (``/_iii/``) requires; unset: loopback clients only."""
    explicit: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    """Which settings came from the environment rather than defaults."""

    @property
    def heartbeat_ttl_s(self) -> float:
        """A worker whose last beat is older than this is dead."""
        return self.heartbeat_interval_s * 3

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``III_*`` variables; raises :class:`ConfigError` on bad ones."""
        env = os.environ if environ is None else environ
        known = {f"III_{f.name.upper()}": f for f in fields(cls) if f.name != "explicit"}
        known_prefixes = _OTHER_COMPONENT_VARS
        unknown = sorted(
            k for k in env
            if k.startswith("III_") and k not in known and not k.startswith(known_prefixes)
        )
        if unknown:
            raise ConfigError(
                f"unknown setting {', '.join(unknown)}; known settings are "
                f"{', '.join(sorted(known))}"
            )
        values: dict[str, object] = {}
        for var, f in known.items():
            if var not in env or env[var] == "":
                continue
            raw = env[var]
            try:
                if f.type in ("float",):
                    values[f.name] = float(raw)
                elif f.type in ("int",):
                    values[f.name] = int(raw)
                else:
                    values[f.name] = raw
            except ValueError:
                raise ConfigError(f"{var}={raw!r} is not a valid {f.type}") from None
        if "broker_url" in values and "redis_url" not in values:
            if is_redis_url(str(values["broker_url"])):
                values["redis_url"] = values["broker_url"]
        settings = cls(**values, explicit=frozenset(values))  # type: ignore[arg-type]
        settings.validate()
        return settings

    @property
    def broker_kind(self) -> BrokerKind:
        """Which transport carries invocations, decided once from ``III_BROKER_URL``."""
        return BrokerKind.of(self.broker_url)

    @property
    def uses_amqp(self) -> bool:
        """True when the broker is RabbitMQ (``amqp://``): jobs of standard queues live there."""
        return self.broker_kind is BrokerKind.AMQP

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first setting that cannot work."""
        scheme = urlsplit(self.broker_url).scheme
        if scheme not in ("redis", "rediss", "amqp", "amqps", "pyamqp"):
            raise ConfigError(
                f"III_BROKER_URL={mask_url(self.broker_url)!r}: use a redis:// or amqp:// URL"
            )
        if not is_redis_url(self.redis_url):
            raise ConfigError(f"III_REDIS_URL={mask_url(self.redis_url)!r}: use a redis:// URL")
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", self.namespace):
            raise ConfigError(f"III_NAMESPACE={self.namespace!r}: use letters, digits, - and _")
        if not (math.isfinite(self.heartbeat_interval_s) and self.heartbeat_interval_s > 0):
            raise ConfigError(f"III_HEARTBEAT_INTERVAL_S={self.heartbeat_interval_s!r}: "
                              "must be a positive number of seconds")
        if self.default_timeout_ms <= 0:
            raise ConfigError("III_DEFAULT_TIMEOUT_MS must be positive")
        if self.log_level.upper() not in LOG_LEVELS:
            raise ConfigError(f"III_LOG_LEVEL={self.log_level!r}: use one of {', '.join(LOG_LEVELS)}")
        if not self.http_host.strip():
            raise ConfigError("III_HTTP_HOST must not be empty")
        if not 1 <= self.http_port <= 65535:
            raise ConfigError(f"III_HTTP_PORT={self.http_port!r}: use a TCP port from 1 to 65535")
        if not self.stream_host.strip():
            raise ConfigError("III_STREAM_HOST must not be empty")
        if not 1 <= self.stream_port <= 65535:
            raise ConfigError(f"III_STREAM_PORT={self.stream_port!r}: use a TCP port from 1 to 65535")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"III_METRICS_PORT={self.metrics_port!r}: use a TCP port from 1 to "
                              "65535 (0: none)")
        if not self.gateway_host.strip():
            raise ConfigError("III_GATEWAY_HOST must not be empty")
        if not 1 <= self.gateway_port <= 65535:
            raise ConfigError(f"III_GATEWAY_PORT={self.gateway_port!r}: use a TCP port from 1 "
                              "to 65535")
        if self.gateway_token is not None and (not self.gateway_token
                                               or any(c.isspace() for c in self.gateway_token)):
            raise ConfigError("III_GATEWAY_TOKEN must be a non-empty token without whitespace")
        if self.payload_max_bytes <= 0:
            raise ConfigError("III_PAYLOAD_MAX_BYTES must be a positive number of bytes")
        if not 1 <= self.payload_max_depth <= MAX_PAYLOAD_DEPTH:
            raise ConfigError(f"III_PAYLOAD_MAX_DEPTH={self.payload_max_depth!r}: use 1 to "
                              f"{MAX_PAYLOAD_DEPTH} (deeper JSON would hit Python's recursion "
                              "limit when it is decoded)")
        if self.http_body_limit <= 0:
            raise ConfigError("III_HTTP_BODY_LIMIT must be a positive number of bytes")
        if self.http_timeout_ms <= 0:
            raise ConfigError("III_HTTP_TIMEOUT_MS must be positive")
        for name in ("http_header_timeout_s", "http_body_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"III_{name.upper()}={value!r}: must be a positive number "
                                  "of seconds")
        if self.api_token is not None and (not self.api_token
                                           or any(c.isspace() for c in self.api_token)):
            raise ConfigError("III_API_TOKEN must be a non-empty token without whitespace")
        for function_id in self.http_middleware_ids:
            try:
                check_function_id(function_id, builtin=False)
            except InvalidFunctionId as exc:
                raise ConfigError(f"III_HTTP_MIDDLEWARE: {exc.message}") from None
        for origin in self.http_cors_origin_list:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ConfigError(f"III_HTTP_CORS_ORIGINS: {origin!r} is not an origin; use "
                                  "scheme://host[:port] (no path) or *")

    @property
    def http_middleware_ids(self) -> tuple[str, ...]:
        """``III_HTTP_MIDDLEWARE`` as a tuple of function ids."""
        return _split(self.http_middleware)

    @property
    def http_cors_origin_list(self) -> tuple[str, ...]:
        """``III_HTTP_CORS_ORIGINS`` as a tuple; empty when CORS is off."""
        return _split(self.http_cors_origins)

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with some settings replaced (used by tests and the CLI)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def child_env(self) -> dict[str, str]:
        """The ``III_*`` variables that reproduce these settings in a child process."""
        env = {
            "III_BROKER_URL": self.broker_url,
            "III_REDIS_URL": self.redis_url,
            "III_NAMESPACE": self.namespace,
            "III_HEARTBEAT_INTERVAL_S": str(self.heartbeat_interval_s),
            "III_DEFAULT_TIMEOUT_MS": str(self.default_timeout_ms),
            "III_LOG_LEVEL": self.log_level,
            "III_PAYLOAD_MAX_BYTES": str(self.payload_max_bytes),
            "III_PAYLOAD_MAX_DEPTH": str(self.payload_max_depth),
            "III_HTTP_HOST": self.http_host,
            "III_HTTP_PORT": str(self.http_port),
            "III_HTTP_BODY_LIMIT": str(self.http_body_limit),
            "III_HTTP_TIMEOUT_MS": str(self.http_timeout_ms),
            "III_HTTP_HEADER_TIMEOUT_S": str(self.http_header_timeout_s),
            "III_HTTP_BODY_TIMEOUT_S": str(self.http_body_timeout_s),
            "III_HTTP_MIDDLEWARE": self.http_middleware,
            "III_HTTP_CORS_ORIGINS": self.http_cors_origins,
            "III_STREAM_HOST": self.stream_host,
            "III_STREAM_PORT": str(self.stream_port),
            "III_GATEWAY_HOST": self.gateway_host,
            "III_GATEWAY_PORT": str(self.gateway_port),
        }
        if self.metrics_port:
            env["III_METRICS_PORT"] = str(self.metrics_port)
        if self.config_path:
            env["III_CONFIG_PATH"] = self.config_path
        if self.api_token is not None:
            env["III_API_TOKEN"] = self.api_token
        if self.gateway_token is not None:
            env["III_GATEWAY_TOKEN"] = self.gateway_token
        return env


# III_TEST_* belong to the test suite. III_URL, III_TOKEN and III_WORKER_NAME are read by
# iii's own SDKs (a worker of theirs started from a shell that runs ours). III_HTTP_* are
# settings above, so a typo there fails.
_OTHER_COMPONENT_VARS = ("III_TEST_", "III_URL", "III_TOKEN", "III_WORKER_NAME")


_ORIGIN = re.compile(r"[a-z][a-z0-9+.\-]*://[^/\s,]+", re.IGNORECASE)


class BrokerKind(enum.Enum):
    """The broker behind ``III_BROKER_URL``; the transport seam branches on this alone."""

    REDIS = "redis"
    """``redis://``: iii-broker's tuned Kombu Redis transport (same wire format)."""
    REDIS_TLS = "rediss"
    """``rediss://``: Kombu's own Redis transport, over TLS."""
    AMQP = "amqp"
    """``amqp://`` (also ``amqps://``, ``pyamqp://``): RabbitMQ through py-amqp."""

    @property
    def is_redis(self) -> bool:
        return self is not BrokerKind.AMQP

    @classmethod
    def of(cls, url: str) -> BrokerKind:
        scheme = urlsplit(url).scheme
        if scheme == "redis":
            return cls.REDIS
        if scheme == "rediss":
            return cls.REDIS_TLS
        return cls.AMQP


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def is_redis_url(url: str) -> bool:
    """True for ``redis://``, ``rediss://`` and ``unix://`` URLs."""
    return urlsplit(url).scheme in ("redis", "rediss", "unix")


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``, safe to print."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(k.lower() == "password" for k, _ in query):  # redis://host/0?password=...
        masked = [(k, "***" if k.lower() == "password" else v) for k, v in query]
        parts = parts._replace(query=urlencode(masked, safe="*"))
    return urlunsplit(parts)
