"""HTTP triggers (served by the web process): ``http`` with api_path and http_method."""

from __future__ import annotations

from typing import ClassVar

from .base import CONDITION, Field, Module, TriggerType, function_ids, port

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def _method(value: str) -> str | None:
    return None if value in HTTP_METHODS else f"must be one of {', '.join(HTTP_METHODS)}"


def _api_path(value: str) -> str | None:
    if not value.strip():
        return "must not be empty"
    if value.strip("/").split("/")[0] == "_iii":
        return f"is {value!r}: /_iii/ is reserved for the management API"
    return None


class HttpModule(Module):
    name = "http"
    trigger_types: ClassVar[tuple[TriggerType, ...]] = (
        TriggerType("http", {
            "api_path": Field(str, required=True, check=_api_path),
            "http_method": Field(str, required=True, check=_method, normalize=str.upper),
            "condition_function_id": CONDITION,
            "middleware_function_ids": Field(list, check=function_ids),
        }, "an HTTP route served by the web process"),
    )
    options: ClassVar[dict[str, Field]] = {
        "enabled": Field(bool, default=True),
        "port": Field(int, check=port, default=3111),
        "host": Field(str, default="127.0.0.1"),
    }
