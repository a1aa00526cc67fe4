"""``state::*`` built-ins through a real engine: shapes, atomic nested updates, limits."""

from __future__ import annotations

import threading
import uuid

import pytest

from iii_broker.errors import InvalidArgument
from tests.conftest import Cluster


def scope() -> str:
    return f"s-{uuid.uuid4().hex[:8]}"


def test_set_get_delete_list_and_list_groups_have_iii_shapes(state_cluster: Cluster) -> None:
    c, s = state_cluster, scope()
    assert c.trigger("state::get", {"scope": s, "key": "a"}) is None
    assert c.trigger("state::set", {"scope": s, "key": "a", "value": {"n": 1}}) == \
        {"old_value": None, "new_value": {"n": 1}}
    assert c.trigger("state::set", {"scope": s, "key": "a", "value": [1, 2]}) == \
        {"old_value": {"n": 1}, "new_value": [1, 2]}
    c.trigger("state::set", {"scope": s, "key": "b", "value": "x"})
    assert c.trigger("state::get", {"scope": s, "key": "a"}) == [1, 2]
    assert sorted(map(str, c.trigger("state::list", {"scope": s}))) == ["[1, 2]", "x"]
    assert s in c.trigger("state::list_groups", {})["groups"]
    assert c.trigger("state::delete", {"scope": s, "key": "a"}) == [1, 2]
    assert c.trigger("state::delete", {"scope": s, "key": "a"}) is None
    c.trigger("state::delete", {"scope": s, "key": "b"})
    assert s not in c.trigger("state::list_groups", {})["groups"]


def test_values_come_back_exactly_as_stored(state_cluster: Cluster) -> None:
    c, s = state_cluster, scope()
    value = {"empty_list": [], "empty_obj": {}, "f": 0.1, "big": 2**60, "neg": -0.0,
             "nul": "\x00x", "\x00k": [None, True, False, "é", [[]]], "e": 1e300}
    c.trigger("state::set", {"scope": s, "key": "v", "value": value})
    # an update that touches one field leaves every other one exactly as it was
    out = c.trigger("state::update", {"scope": s, "key": "v",
                                      "ops": [{"type": "increment", "path": "f", "by": 0.2}]})
    assert out["new_value"]["f"] == 0.1 + 0.2
    assert {k: v for k, v in out["new_value"].items() if k != "f"} == \
        {k: v for k, v in value.items() if k != "f"}
    assert c.trigger("state::get", {"scope": s, "key": "v"}) == out["new_value"]


def test_twenty_threads_incrementing_one_counter_give_the_exact_total(state_cluster: Cluster) -> None:
    c, s = state_cluster, scope()
    errors: list[BaseException] = []

    def bump() -> None:
        try:
            for _ in range(25):
                c.trigger("state::update", {"scope": s, "key": "n",
                                            "ops": [{"type": "increment", "path": "hits"}]})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=bump) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert c.trigger("state::get", {"scope": s, "key": "n"}) == {"hits": 500}


def test_nested_ops_apply_in_order_in_one_step(state_cluster: Cluster) -> None:
    c, s = state_cluster, scope()
    c.trigger("state::set", {"scope": s, "key": "u", "value": {"profile": {"name": "a"}}})
    out = c.trigger("state::update", {"scope": s, "key": "u", "ops": [
        {"type": "merge", "path": "profile", "value": {"age": 3, "tags": []}},
        {"type": "append", "path": "profile.tags", "value": "x"},
        {"type": "append", "path": ["profile", "tags"], "value": {"y": 1}},
        {"type": "set", "path": "stats.visits", "value": 1},
        {"type": "increment", "path": "stats.visits", "by": 4},
        {"type": "decrement", "path": "stats.left", "by": 2},
        {"type": "set", "path": "profile.tags.1.y", "value": 2},
        {"type": "remove", "path": "profile.name"},
        {"type": "append", "path": "log", "value": "a"},
        {"type": "set", "path": "title", "value": "ab"},
        {"type": "append", "path": "title", "value": "cd"},
    ]})
    assert "errors" not in out
    assert out["old_value"] == {"profile": {"name": "a"}}
    assert out["new_value"] == {"profile": {"age": 3, "tags": ["x", {"y": 2}]},
                                "stats": {"visits": 5, "left": -2}, "log": ["a"], "title": "abcd"}


def test_a_failing_op_is_reported_and_the_others_still_apply(state_cluster: Cluster) -> None:
    c, s = state_cluster, scope()
    c.trigger("state::set", {"scope": s, "key": "k", "value": {"name": "x", "list": [1]}})
    out = c.trigger("state::update", {"scope": s, "key": "k", "ops": [
        {"type": "increment", "path": "name"},                      # 0 increment.not_number
        {"type": "append", "path": "name", "value": 3},             # 1 append.type_mismatch
        {"type": "merge", "path": "list", "value": {"a": 1}},       # 2 merge.type_mismatch
        {"type": "set", "path": "name.first", "value": 1},          # 3 set.path_conflict
        {"type": "teleport", "path": "x"},                          # 4 op.unknown
        {"type": "increment", "path": "n", "by": "1"},              # 5 increment.invalid_by
        {"type": "set", "path": "a"},                               # 6 set.missing_value
        {"type": "set", "path": {"a": 1}, "value": 1},              # 7 set.invalid_path
        {"type": "set", "path": "list.5", "value": 1},              # 8 set.path_conflict
        "nope",                                                     # 9 op.invalid
        {"type": "set", "path": ".".join(["d"] * 40), "value": 1},  # 10 set.path_too_deep
        {"type": "increment", "path": "ok", "by": 2},
        {"type": "increment", "path": "ok", "by": 2**60},           # 12 increment.out_of_range
        {"type": "set", "path": "f", "value": 1e308},
        {"type": "increment", "path": "f", "by": 1e308},            # 14 increment.overflow
        {"type": "append", "path": "t", "value": "\ud800"},        # 15 append.invalid_value
    ]})
    codes = {e["op_index"]: e["code"] for e in out["errors"]}
    assert codes == {0: "increment.not_number", 1: "append.type_mismatch",
                     2: "merge.type_mismatch", 3: "set.path_conflict", 4: "op.unknown",
                     5: "increment.invalid_by", 6: "set.missing_value", 7: "set.invalid_path",
                     8: "set.path_conflict", 9: "op.invalid", 10: "set.path_too_deep",
                     12: "increment.out_of_range", 14: "increment.overflow",
                     15: "append.invalid_value"}
    assert all(e["message"] for e in out["errors"])
    assert out["new_value"] == {"name": "x", "list": [1], "ok": 2, "f": 1e308}


@pytest.mark.parametrize(("payload", "words"), [
    ({"scope": "", "key": "k", "value": 1}, "scope must be a non-empty string"),
    ({"scope": "s", "key": 3, "value": 1}, "key must be a non-empty string"),
    ({"scope": "s" * 300, "key": "k", "value": 1}, "scope is 300 characters long; the limit is 256"),
    ({"scope": "s", "key": "k" * 300, "value": 1}, "key is 300 characters long; the limit is 256"),
    ({"scope": "s", "key": "k"}, "needs 'value'"),
    ({"scope": "s", "key": "k", "value": "x" * (1024 * 1024 + 1)}, "the limit is 1048576"),
])
def test_bad_input_is_refused_with_an_error_that_names_it(state_cluster: Cluster, payload: dict,
                                                          words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        state_cluster.trigger("state::set", payload)


def test_an_update_growing_past_the_size_limit_writes_nothing(state_cluster: Cluster) -> None:
    c, s = state_cluster, scope()
    c.trigger("state::set", {"scope": s, "key": "k", "value": "x" * (1024 * 1024 - 100)})
    with pytest.raises(InvalidArgument, match="max_value_bytes"):
        c.trigger("state::update", {"scope": s, "key": "k",
                                    "ops": [{"type": "append", "value": "y" * 200}]})
    assert len(c.trigger("state::get", {"scope": s, "key": "k"})) == 1024 * 1024 - 100
    with pytest.raises(InvalidArgument, match="ops must be a list"):
        c.trigger("state::update", {"scope": s, "key": "k", "ops": {"type": "set"}})
