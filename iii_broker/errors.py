"""Every error iii-broker raises derives from :class:`IIIError`.

Invocation errors carry iii's error ``code`` (see iii-reference §2) together with
``function_id``, ``invocation_id`` and, for handler failures, ``stacktrace``.
"""

from __future__ import annotations

from typing import Any


class IIIError(Exception):
    """Root of every iii-broker error; ``code`` is iii's error code."""

    code = "error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        function_id: str | None = None,
        invocation_id: str | None = None,
        stacktrace: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.function_id = function_id
        self.invocation_id = invocation_id
        self.stacktrace = stacktrace

    def to_dict(self) -> dict[str, Any]:
        """The error as the JSON object carried in replies."""
        data: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.function_id is not None:
            data["function_id"] = self.function_id
        if self.invocation_id is not None:
            data["invocation_id"] = self.invocation_id
        if self.stacktrace is not None:
            data["stacktrace"] = self.stacktrace
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IIIError:
        """Rebuild the matching subclass from a reply's error object."""
        code = str(data.get("code", "error"))
        kind = _BY_CODE.get(code, IIIError)
        return kind(
            str(data.get("message", "")),
            code=code,
            function_id=data.get("function_id"),
            invocation_id=data.get("invocation_id"),
            stacktrace=data.get("stacktrace"),
        )

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvocationFailed(IIIError):
    """The handler raised; ``stacktrace`` holds its traceback."""

    code = "invocation_failed"


class InvocationStopped(IIIError):
    """The worker running the call died before answering."""

    code = "invocation_stopped"


class RemoteError(IIIError):
    """An error a worker beyond this process answered (an iii SDK worker behind the
    gateway), passed to the caller with its own code, message and stacktrace."""


class FunctionNotFound(IIIError):
    """No live worker has registered the function."""

    code = "function_not_found"


class InvocationTimeout(IIIError):
    """No answer arrived within ``timeout_ms``."""

    code = "TIMEOUT"


class EnqueueError(IIIError):
    """The named queue does not exist or the broker refused the message."""

    code = "enqueue_error"


class Forbidden(IIIError):
    """The caller may not invoke that function."""

    code = "FORBIDDEN"


class InvalidFunctionId(IIIError):
    """A function id is empty, malformed, reserved, or registered twice."""

    code = "invalid_function_id"


class PayloadError(IIIError):
    """A payload or result cannot be carried as JSON."""

    code = "invalid_payload"


class PayloadLimitExceeded(PayloadError):
    """A payload or result is larger or deeper than III_PAYLOAD_MAX_BYTES / _DEPTH allow."""


class InvalidArgument(IIIError):
    """An argument of a call is out of range or of the wrong type (e.g. ``timeout_ms``)."""

    code = "invalid_argument"


class NotFound(IIIError):
    """A record a built-in was asked for does not exist (never made, or trimmed)."""

    code = "not_found"


class TriggerConfigError(IIIError):
    """A trigger has an unknown type or a config its module rejects."""

    code = "invalid_trigger"


class ConfigError(IIIError):
    """Settings or the engine settings file are wrong."""

    code = "config_error"


class AppNotFound(IIIError):
    """``-A`` names a module or attribute that cannot be loaded."""

    code = "app_not_found"


class BrokerUnavailable(IIIError):
    """The broker or the Redis store cannot be reached."""

    code = "broker_unavailable"

    def __init__(self, message: str, *, server: str | None = None, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.server = server
        """The URL of the server that did not answer, where known (never sent in replies)."""


_BY_CODE: dict[str, type[IIIError]] = {
    cls.code: cls
    for cls in (
        InvocationFailed,
        InvocationStopped,
        FunctionNotFound,
        InvocationTimeout,
        EnqueueError,
        Forbidden,
        InvalidFunctionId,
        PayloadError,
        InvalidArgument,
        NotFound,
        TriggerConfigError,
    )
}
