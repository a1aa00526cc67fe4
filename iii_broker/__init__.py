"""iii-broker: iii's engine, workers, functions and triggers on Kombu, Redis and Flask.

    from iii_broker import App
    app = App("shop")

    @app.function("math::add")
    def add(payload):
        return {"sum": payload["a"] + payload["b"]}
"""

from .app import App, Trigger
from .client import Enqueue, Void
from .context import Context, current_context
from .errors import (
    AppNotFound,
    BrokerUnavailable,
    ConfigError,
    EnqueueError,
    Forbidden,
    FunctionNotFound,
    IIIError,
    InvalidArgument,
    InvalidFunctionId,
    InvocationFailed,
    InvocationStopped,
    InvocationTimeout,
    NotFound,
    PayloadError,
    PayloadLimitExceeded,
    TriggerConfigError,
)
from .function import FunctionDef
from .settings import Settings

__all__ = [
    "App",
    "AppNotFound",
    "BrokerUnavailable",
    "ConfigError",
    "Context",
    "Enqueue",
    "EnqueueError",
    "Forbidden",
    "FunctionDef",
    "FunctionNotFound",
    "IIIError",
    "InvalidArgument",
    "InvalidFunctionId",
    "InvocationFailed",
    "InvocationStopped",
    "InvocationTimeout",
    "NotFound",
    "PayloadError",
    "PayloadLimitExceeded",
    "Settings",
    "Trigger",
    "TriggerConfigError",
    "Void",
    "current_context",
]
