"""A function that declares a ``request_schema`` gets only bodies that match it: the web
process answers 400 INVALID_BODY with the failing path and rule before calling it. An
invalid schema is refused when the function registers."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from iii_broker import App
from iii_broker.modules.http.schemas import BodyViolation, SchemaCache
from tests.apps.http_poison import NEW_USER
from tests.conftest import Cluster
from tests.web.conftest import Web, recorded_calls, serving


def test_an_invalid_request_schema_is_refused_when_the_function_registers():
    app = App("t")
    with pytest.raises(ValueError, match=r"request_schema of 'users::create' is not a valid "
                                         r"JSON Schema: at \$.type, 'integr' is not valid"):
        app.register_function("users::create", lambda p: p, request_schema={"type": "integr"})
    with pytest.raises(ValueError, match=r"at \$.properties.age.minimum, 'zero' is not of type"):
        app.register_function("users::create", lambda p: p, request_schema={
            "type": "object", "properties": {"age": {"minimum": "zero"}}})
    assert "users::create" not in app.functions
    app.register_function("users::create", lambda p: p, request_schema=NEW_USER)


def test_a_schema_is_compiled_once_and_again_only_when_it_changes():
    cache = SchemaCache()
    first = cache.get("users::create", NEW_USER)
    assert first is not None and cache.get("users::create", dict(NEW_USER)) is first
    changed = cache.get("users::create", {**NEW_USER, "required": ["name", "age"]})
    assert changed is not None and changed is not first
    assert cache.get("users::create", None) is None
    assert cache.get("bad::schema", {"type": "integr"}) is None  # logged, not validated


@pytest.mark.parametrize(("body", "path", "rule"), [
    ({}, "$", "required"),
    ({"name": 3}, "$.name", "type"),
    ({"name": "a", "age": -1}, "$.age", "minimum"),
    ({"name": "a", "tags": ["x", 2]}, "$.tags[1]", "type"),
    ({"name": "a", "colour": "red"}, "$", "additionalProperties"),
    ("just text", "$", "type"),
    (None, "$", "type"),
])
def test_a_violation_names_the_path_and_the_rule(body, path, rule):
    schema = SchemaCache().get("users::create", NEW_USER)
    assert schema is not None
    with pytest.raises(BodyViolation) as info:
        schema.check(body)
    assert (info.value.path, info.value.rule) == (path, rule)
    assert f"at {path}, {rule}: " in str(info.value) and "'users::create'" in str(info.value)


# -- over HTTP -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Web]]:
    """An engine, a worker of tests.apps.http_poison (which records its calls) and a web."""
    with serving(redis_url, tmp_path_factory.mktemp("schema"), "tests.apps.http_poison",
                 "/ping") as running:
        yield running


calls = recorded_calls


def post(web: Web, path: str, body: object):
    return web.request("POST", path, body=json.dumps(body),
                       headers={"Content-Type": "application/json"})


def test_a_body_breaking_the_schema_is_400_with_path_and_rule_and_never_reaches_the_function(api):
    cluster, web = api
    before = len(calls(cluster))
    reply = post(web, "/users", {"name": "Ada", "age": -3})
    assert reply.status == 400, reply.body
    error = reply.json()["error"]
    assert error["code"] == "INVALID_BODY"
    assert (error["path"], error["rule"]) == ("$.age", "minimum")
    assert "-3 is less than the minimum of 0" in error["message"]
    missing = post(web, "/users", {"age": 3}).json()["error"]
    assert (missing["path"], missing["rule"]) == ("$", "required")
    text = web.request("POST", "/users", body="name=Ada", headers={"Content-Type": "text/plain"})
    assert text.status == 400 and text.json()["error"]["rule"] == "type"
    assert len(calls(cluster)) == before

    ok = post(web, "/users", {"name": "Ada", "age": 36})
    assert ok.status == 201 and ok.json() == {"name": "Ada", "age": 36}
    assert calls(cluster)[-1] == {"function": "/users", "body": {"name": "Ada", "age": 36}}


def test_the_openapi_document_lists_the_400_of_a_validated_route(api):
    doc = api[1].get("/_iii/openapi.json").json()
    bad = doc["paths"]["/users"]["post"]["responses"]["400"]
    assert bad["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/InvalidBody"}
    assert "path" in doc["components"]["schemas"]["InvalidBody"]["properties"]["error"]["properties"]
    echo = doc["paths"]["/echo"]["post"]["responses"]["400"]  # declares no schema
    assert echo["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
