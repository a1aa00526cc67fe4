"""A worker app for the HTTP poison tests: every call records what it received in Redis
(``NS:test:calls``), so a test can tell that a refused request never reached a function."""

import functools
import json

import redis

from iii_broker import App
from tests.apps import http_route

app = App("http-poison")

NEW_USER = {"type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {"name": {"type": "string", "minLength": 1},
                           "age": {"type": "integer", "minimum": 0},
                           "tags": {"type": "array", "items": {"type": "string"}}}}


def route(function_id: str, path: str, method: str = "POST", **schemas):
    return http_route(app, function_id, path, method, **schemas)


@functools.cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(app.settings.redis_url)


def record(payload) -> None:
    entry = json.dumps({"function": payload["path"], "body": payload["body"]})
    _redis().rpush(f"{app.settings.namespace}:test:calls", entry)


@route("poison::echo", "/echo")
def echo(payload):
    """Answers what it got: the body's type and length (as JSON text when not a string)."""
    record(payload)
    body = payload["body"]
    size = len(body) if isinstance(body, str) else len(json.dumps(body))
    return {"status_code": 200, "body": {"type": type(body).__name__, "length": size}}


@route("poison::users", "/users", request_schema=NEW_USER)
def create_user(payload):
    record(payload)
    return {"status_code": 201, "body": payload["body"]}


@route("poison::ping", "/ping", "GET")
def ping(payload):
    return {"status_code": 200, "body": "pong"}
