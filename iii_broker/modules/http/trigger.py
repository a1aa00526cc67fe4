"""The ``http`` trigger type: its config schema and the checks a binding must pass."""

from __future__ import annotations

from typing import Any

from ...function import is_reserved
from ...httpapi import MANAGEMENT_PREFIX, is_management_path
from ..base import CONDITION, Field, TriggerType, function_ids
from .paths import path_problem

HTTP = "http"

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def _method(value: str) -> str | None:
    return None if value in HTTP_METHODS else f"must be one of {', '.join(HTTP_METHODS)}"


def _api_path(value: str) -> str | None:
    if not value.strip():
        return "must not be empty"
    if is_management_path(value):
        return f"is {value!r}: /{MANAGEMENT_PREFIX}/ is reserved for the management API"
    return path_problem(value)


def _exposable(function_id: str, _config: dict[str, Any]) -> str | None:
    if is_reserved(function_id):
        return (f"function {function_id!r} is a reserved built-in: an http trigger may not "
                "expose it")
    return None


HTTP_TRIGGER = TriggerType(HTTP, {
    "api_path": Field(str, required=True, check=_api_path),
    "http_method": Field(str, required=True, check=_method, normalize=str.upper),
    "condition_function_id": CONDITION,
    "middleware_function_ids": Field(list, check=function_ids),
}, "an HTTP route served by the web process", check_binding=_exposable)
