"""Registering functions and triggers on an App, and refusing payloads that are not JSON.

Everything here is checked in the calling process, before any broker or Redis is
touched, so these tests need neither.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from iii_broker import (
    App,
    InvalidFunctionId,
    PayloadError,
    Settings,
    TriggerConfigError,
    Void,
)
from iii_broker.function import check_function_id
from iii_broker.modules import all_trigger_types

# Nothing listens on port 1: a call that got as far as the broker would fail with
# BrokerUnavailable, so a PayloadError proves the payload was refused first.
UNREACHABLE = "redis://127.0.0.1:1/0"


@pytest.fixture
def app():
    a = App("test-app", settings=Settings(broker_url=UNREACHABLE, redis_url=UNREACHABLE,
                                          namespace="unreachable"))
    yield a
    a.close()


def handler(payload):
    return payload


# -- function ids -------------------------------------------------------------------


@pytest.mark.parametrize("function_id", ["", " ", "   ", "\t\n"])
def test_an_empty_or_blank_function_id_is_refused(app, function_id):
    with pytest.raises(InvalidFunctionId, match="is empty") as info:
        app.register_function(function_id, handler)
    assert repr(function_id) in info.value.message
    assert app.functions == {}


@pytest.mark.parametrize("function_id", [
    "has space", "orders:validate", "a:::b", "::leading", "trailing::", "a::::b",
    "slash/path", "ünïcode::x", "tab\tid", "new\nline",
])
def test_a_malformed_function_id_is_refused_naming_it(app, function_id):
    with pytest.raises(InvalidFunctionId, match="is malformed") as info:
        app.register_function(function_id, handler)
    assert repr(function_id) in info.value.message
    assert info.value.function_id == function_id
    assert info.value.code == "invalid_function_id"
    assert app.functions == {}


@pytest.mark.parametrize("function_id", [
    "engine::workers::list", "engine::mine", "iii::anything", "state::get", "stream::set",
    "publish",
])
def test_reserved_function_ids_are_refused_in_user_code(app, function_id):
    with pytest.raises(InvalidFunctionId, match="is reserved") as info:
        app.register_function(function_id, handler)
    assert repr(function_id) in info.value.message
    assert info.value.function_id == function_id
    assert app.functions == {}


def test_the_decorator_refuses_a_reserved_id_at_import_time(app):
    with pytest.raises(InvalidFunctionId, match="'state::mine' is reserved"):
        @app.function("state::mine")
        def mine(payload):
            return None


@pytest.mark.parametrize("function_id", [
    "engineering::build", "publish::daily", "publisher::x", "state_of::x", "stream_tools::x",
    "my.app::v1-beta::do_it", "a::b", "Enginex::y",
])
def test_ids_that_only_resemble_reserved_ones_are_accepted(app, function_id):
    fdef = app.register_function(function_id, handler)
    assert fdef.function_id == function_id
    assert app.functions[function_id] is fdef


@pytest.mark.parametrize("function_id", ["a", "publisher", "state", "orders", "x" * 200])
def test_an_id_without_a_service_is_refused_saying_ids_are_service_name(app, function_id):
    with pytest.raises(InvalidFunctionId, match="has no '::': ids are 'service::name'") as info:
        app.register_function(function_id, handler)
    assert repr(function_id) in info.value.message
    assert info.value.function_id == function_id
    assert app.functions == {}


@pytest.mark.parametrize(("function_id", "reserved"), [
    ("Engine::x", "'engine::'"), ("ENGINE::x", "'engine::'"), ("Iii::x", "'iii::'"),
    ("IIi::queue::redrive", "'iii::'"), ("State::x", "'state::'"), ("Stream::x", "'stream::'"),
    ("Publish", "'publish'"), ("PUBLISH", "'publish'"),
])
def test_a_reserved_prefix_in_another_case_is_refused_as_reserved(app, function_id, reserved):
    with pytest.raises(InvalidFunctionId, match="in another case") as info:
        app.register_function(function_id, handler)
    assert "uses the reserved" in info.value.message and reserved in info.value.message
    assert repr(function_id) in info.value.message
    assert app.functions == {}


@pytest.mark.parametrize("function_id", ["Engine::x", "nocolons", "Publish"])
def test_a_caller_gets_invalid_function_id_for_an_id_that_cannot_exist(app, function_id):
    # Refused before the (unreachable) broker is touched: not BrokerUnavailable.
    with pytest.raises(InvalidFunctionId) as info:
        app.trigger(function_id, {})
    assert info.value.code == "invalid_function_id"
    assert repr(function_id) in info.value.message


def test_builtins_keep_their_ids_without_a_service():
    assert check_function_id("publish", builtin=True) == "publish"
    assert check_function_id("engine::workers::list", builtin=True) == "engine::workers::list"
    with pytest.raises(InvalidFunctionId, match="in another case"):
        check_function_id("Engine::workers::list", builtin=True)


def test_a_function_id_that_is_not_a_string_is_refused(app):
    for bad in (None, 7, b"bytes::id"):
        with pytest.raises(InvalidFunctionId, match="must be a string"):
            app.register_function(bad, handler)  # type: ignore[arg-type]


def test_an_overlong_function_id_is_refused(app):
    with pytest.raises(InvalidFunctionId, match="over 200 characters"):
        app.register_function("x::" + "x" * 198, handler)
    app.register_function("x::" + "x" * 197, handler)


def test_a_handler_that_is_not_callable_is_refused_naming_the_id(app):
    with pytest.raises(TypeError, match="'math::add' is not callable"):
        app.register_function("math::add", {"not": "callable"})  # type: ignore[arg-type]


def test_one_id_registered_with_two_handlers_is_refused_naming_both(app):
    def first_add(payload):
        return 1

    def second_add(payload):
        return 2

    app.register_function("math::add", first_add)
    with pytest.raises(InvalidFunctionId) as info:
        app.register_function("math::add", second_add)
    message = info.value.message
    assert "'math::add' is already registered" in message
    assert "test_app" in message  # the module of the existing handler
    assert "first_add" in message and "second_add" not in message
    assert info.value.function_id == "math::add"
    assert app.functions["math::add"].handler is first_add


def test_the_same_handler_registered_twice_is_accepted_once(app):
    first = app.register_function("math::add", handler)
    again = app.register_function("math::add", handler)
    assert again is first
    assert list(app.functions) == ["math::add"]


def test_the_decorator_returns_the_handler_and_records_its_description(app):
    @app.function("math::mul")
    def mul(payload):
        """Multiply two numbers.

        More text that is not part of the summary.
        """
        return payload["a"] * payload["b"]

    assert mul({"a": 2, "b": 3}) == 6
    assert app.functions["math::mul"].handler is mul
    assert app.functions["math::mul"].info() == {
        "function_id": "math::mul", "description": "Multiply two numbers.", "metadata": {}}


# -- triggers -----------------------------------------------------------------------


def test_an_unknown_trigger_type_is_refused_listing_the_known_types(app):
    with pytest.raises(TriggerConfigError) as info:
        app.register_trigger("htp", "math::add", {"api_path": "/add", "http_method": "POST"})
    message = info.value.message
    assert "unknown trigger type 'htp'" in message and "'math::add'" in message
    for known in all_trigger_types():
        assert known in message
    assert {"http", "cron", "durable:subscriber", "subscribe", "state", "stream"} <= set(
        all_trigger_types())
    assert app.triggers == []


@pytest.mark.parametrize(("type_", "config", "problem"), [
    ("http", {"http_method": "POST"}, "missing required key 'api_path'"),
    ("http", {"api_path": "", "http_method": "POST"}, "'api_path' must not be empty"),
    ("http", {"api_path": "/add", "http_method": "FETCH"},
     "'http_method' must be one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"),
    ("http", {"api_path": "/add", "http_method": 3}, "'http_method' must be str, not int"),
    ("http", {"api_path": "/add", "http_method": "POST", "colour": "red"},
     "unknown key(s) colour; allowed: api_path, http_method"),
    ("http", {"api_path": "/add", "http_method": "POST", "middleware_function_ids": ["ok", 3]},
     "'middleware_function_ids' must be a list of function ids"),
    ("cron", {"expression": "* * * *"},
     "'expression' is invalid: '* * * *' has 4 fields; use 6 (sec min hour dom month dow)"),
    ("cron", {"expression": "* * * * * * * *"}, "'expression' is invalid: '* * * * * * * *' has 8 fields"),
    ("cron", {"expression": "0 0 25 * * *"},
     "'expression' is invalid: '0 0 25 * * *': field 'hour' value 25 is out of range 0-23"),
    ("cron", {}, "missing required key 'expression'"),
    ("cron", {"expression": "0 * * * * *", "timezone": "Mars/Olympus"},
     "'timezone' is invalid: 'Mars/Olympus' is not an IANA time zone name"),
    ("durable:subscriber", {"topic": "orders", "queue_config": {"type": "fifo"}},
     "needs message_group_field when type is fifo"),
    ("durable:subscriber", {"topic": "orders", "queue_config": {"max_retries": -1}},
     "'max_retries' must be >= 0"),
    ("durable:subscriber", {"topic": "orders", "queue_config": {"retries": 3}},
     "unknown key(s) retries"),
    ("subscribe", {"topic": "   "}, "'topic' must not be empty"),
    ("log", {"level": "loud"}, "'level' is 'loud'; choose one of trace, debug, info, warn, error"),
])
def test_a_bad_trigger_config_is_refused_saying_what_is_wrong(app, type_, config, problem):
    with pytest.raises(TriggerConfigError) as info:
        app.register_trigger(type_, "math::add", config)
    message = info.value.message
    assert problem in message
    assert f"{type_} trigger config" in message
    assert "'math::add'" in message and info.value.function_id == "math::add"
    assert "invalid_trigger: " not in message  # no error code repeated inside the text
    assert app.triggers == []


@pytest.mark.parametrize(("type_", "config"), [
    ("http", {"api_path": "/add", "http_method": "POST"}),
    ("cron", {"expression": "*/5 * * * *"}),  # classic crontab
    ("cron", {"expression": "0 */5 * * * *", "timezone": "Europe/Paris"}),
    ("cron", {"expression": "0 0 12 * * MON 2030"}),
    ("durable:subscriber", {"topic": "orders",
                            "queue_config": {"type": "fifo", "message_group_field": "customer"}}),
    ("subscribe", {"topic": "orders"}),
    ("state", {"scope": "carts"}),
    ("stream:join", {}),
])
def test_a_valid_trigger_is_recorded_once_however_often_it_is_registered(app, type_, config):
    first = app.register_trigger(type_, "math::add", config)
    again = app.register_trigger(type_, "math::add", dict(config))
    assert again.id == first.id
    assert [t.id for t in app.triggers] == [first.id]
    assert first.to_dict()["type"] == type_ and first.function_id == "math::add"


def test_a_trigger_config_that_is_not_an_object_is_refused(app):
    with pytest.raises(TriggerConfigError, match="config and metadata must be objects"):
        app.register_trigger("http", "math::add", "/add")  # type: ignore[arg-type]


def test_a_trigger_for_a_malformed_function_id_is_refused(app):
    with pytest.raises(InvalidFunctionId, match="'math add' is malformed"):
        app.register_trigger("http", "math add", {"api_path": "/add", "http_method": "POST"})


# -- payloads -----------------------------------------------------------------------


@pytest.mark.parametrize(("payload", "path"), [
    ({"s": {1, 2}}, r"\.s is a set"),
    ({"b": b"bytes"}, r"\.b is a bytes"),
    ({"n": float("nan")}, r"\.n is nan"),
    ({"i": float("inf")}, r"\.i is inf"),
    ({"i": float("-inf")}, r"\.i is -inf"),
    ({(1, 2): "tuple key"}, r" has a key of type tuple"),
    ({"deep": [1, {"x": {3}}]}, r"\.deep\[1\]\.x is a set"),
    ({"inner": {frozenset(): 1}}, r"\.inner has a key of type frozenset"),
    ({"obj": object()}, r"\.obj is a object"),
    ([1, 2, float("nan")], r"\[2\] is nan"),
])
def test_a_payload_that_is_not_json_is_refused_before_anything_is_published(app, payload, path):
    with pytest.raises(PayloadError, match="not JSON-serializable") as info:
        app.trigger("math::add", payload)
    assert re.search(r"\$" + path, info.value.message), info.value.message
    assert info.value.code == "invalid_payload"
    assert "'math::add'" in info.value.message


def test_a_bad_payload_is_refused_for_fire_and_forget_calls_too(app):
    with pytest.raises(PayloadError, match=r"\.s is a set"):
        app.trigger("math::add", {"s": {1}}, action=Void)


def test_a_bad_payload_is_refused_by_async_calls_too(app):
    with pytest.raises(PayloadError, match=r"\.n is nan"):
        asyncio.run(app.atrigger("math::add", {"n": float("nan")}))


def test_metadata_that_is_not_json_is_refused_naming_its_path(app):
    with pytest.raises(PayloadError, match=r"metadata for 'math::add' .*\$\.when is a set"):
        app.trigger("math::add", {"a": 1}, metadata={"when": {1}})


def test_a_circular_payload_is_a_payload_error_not_a_crash(app):
    loop: dict = {"a": 1}
    loop["self"] = loop
    with pytest.raises(PayloadError, match="circular reference") as info:
        app.trigger("math::add", loop)
    assert "$.self refers back to itself" in info.value.message


def test_a_payload_nested_too_deeply_is_a_payload_error_not_a_crash(app):
    deep: list = []
    cur = deep
    for _ in range(5000):
        cur.append([])
        cur = cur[0]
    with pytest.raises(PayloadError, match="nested deeper than the limit of 64 levels"):
        app.trigger("math::add", deep)


def test_a_json_payload_does_go_on_to_the_broker(app):
    """The counterpart of the tests above: a good payload gets past the checks and
    fails only because nothing answers on port 1."""
    from iii_broker import BrokerUnavailable
    with pytest.raises(BrokerUnavailable, match="127.0.0.1:1"):
        app.trigger("math::add", {"a": 1, "b": [1.5, None, True, "x"]}, timeout_ms=500)


@pytest.mark.parametrize("function_id", ["engine::workers::list", "iii::durable::publish",
                                         "state::get", "stream::set", "publish"])
def test_an_http_trigger_on_a_reserved_built_in_is_refused(app, function_id):
    with pytest.raises(TriggerConfigError, match="reserved built-in") as info:
        app.register_trigger("http", function_id, {"api_path": "/x", "http_method": "GET"})
    assert info.value.function_id == function_id
    assert app.triggers == []
