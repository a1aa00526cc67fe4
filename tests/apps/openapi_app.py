"""A worker app whose http functions declare schemas, for ``GET /_iii/openapi.json``.

Every handler checks its input and answers 400 (never fails) on anything it cannot use,
so a fuzzer finding a 5xx here has found a bug in the web process.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from pydantic import BaseModel

from iii_broker import App
from tests.apps import http_route

app = App("openapi-app")

USER = {"type": "object", "required": ["id", "name"], "additionalProperties": False,
        "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                       "age": {"type": "integer", "minimum": 0}}}
NEW_USER = {"type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 50},
                           "age": {"type": "integer", "minimum": 0, "maximum": 150}}}


def http(function_id: str, path: str, method: str = "GET", **schemas: Any):
    return http_route(app, function_id, path, method, **schemas)


def bad_request(message: str) -> dict[str, Any]:
    return {"status_code": 400, "body": {"error": {"code": "BAD_REQUEST", "message": message}}}


@http("users::create", "/users", "POST", request_schema=NEW_USER, response_schema=USER)
def create_user(payload):
    """Create a user."""
    body = payload.get("body")
    if not isinstance(body, dict) or set(body) - {"name", "age"}:
        return bad_request("expected an object with name and optional age")
    name, age = body.get("name"), body.get("age", 0)
    if not isinstance(name, str) or not 1 <= len(name) <= 50:
        return bad_request("name must be a string of 1 to 50 characters")
    if isinstance(age, bool) or not isinstance(age, int) or not 0 <= age <= 150:
        return bad_request("age must be an integer from 0 to 150")
    return {"status_code": 200, "body": {"id": "u1", "name": name, "age": age}}


@http("users::get", "/users/:id", response_schema=USER)
def get_user(payload):
    """Fetch a user by id."""
    user_id = payload["path_params"]["id"]
    if user_id == "missing":
        return {"status_code": 404, "body": {"error": {"code": "NOT_FOUND", "message": "no user"}}}
    return {"status_code": 200, "body": {"id": user_id, "name": "Ada"}}


class Tag(BaseModel):
    label: str


class Post(BaseModel):
    title: str
    tags: list[Tag] = []


class Comment(TypedDict):
    text: str
    author: NotRequired[str | None]


@http("posts::create", "/users/:user_id/posts", "POST")  # other name for the same parameter
def create_post(payload: Post):
    """Create a post (its request schema comes from the pydantic annotation)."""
    raw: Any = payload  # the annotation documents the body; the worker passes the payload dict
    try:
        post = Post.model_validate(raw.get("body"))
    except ValueError:
        return bad_request("not a post")
    return {"status_code": 200, "body": {"title": post.title, "tag_count": len(post.tags)}}


@http("comments::create", "/comments", "PUT")
def create_comment(payload: Comment):
    """Add a comment (its request schema comes from the TypedDict annotation)."""
    body: Any = payload.get("body")
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        return bad_request("expected an object with a text")
    return {"status_code": 200, "body": {"text": body["text"]}}


@http("users::remove", "/users/:user_id", "DELETE")
def remove_user(payload):
    return {"status_code": 200, "body": None}
