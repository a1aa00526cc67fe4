"""Queue settings: parsing the engine settings file's tables, FIFO groups, backoff."""

from __future__ import annotations

import pytest

from iii_broker import EnqueueError
from iii_broker.errors import ConfigError
from iii_broker.modules.config import EngineConfig
from iii_broker.queues.config import QueueConfig


def _queues(tables):
    config = EngineConfig.from_dict({"modules": {"queue": {"queues": tables}}})
    return config.module("queue").queues()


def test_queue_tables_take_iii_defaults_and_default_always_exists():
    queues = _queues({"payment": {"max_retries": 5}})
    assert set(queues) == {"payment", "default"}
    payment = queues["payment"]
    assert (payment.max_retries, payment.concurrency, payment.type, payment.backoff_ms) == \
        (5, 10, "standard", 1000)
    assert queues["default"] == QueueConfig("default")


def test_backoff_doubles_with_each_retry():
    q = QueueConfig("q", backoff_ms=200)
    assert [q.backoff_for(n) for n in (1, 2, 3)] == [200, 400, 800]


@pytest.mark.parametrize("name", ["has space", "", "x" * 101, "a/b"])
def test_a_bad_queue_name_is_refused_naming_it(name):
    with pytest.raises(ConfigError, match="queue name"):
        _queues({name: {}})


def test_message_group_field_outside_fifo_is_refused():
    with pytest.raises(ConfigError, match="only applies to type"):
        _queues({"q": {"message_group_field": "g"}})


def test_fifo_groups_are_distinct_for_values_that_print_alike():
    q = QueueConfig("q", type="fifo", message_group_field="g")
    groups = [q.group_of({"g": v}) for v in (1, "1", True, "true", "", 0, False)]
    assert len(set(groups)) == len(groups)


@pytest.mark.parametrize("payload", [{}, {"g": None}, {"g": [1]}, {"g": {"a": 1}}, [1], "text"])
def test_a_fifo_payload_without_a_scalar_group_is_an_enqueue_error(payload):
    q = QueueConfig("q", type="fifo", message_group_field="g")
    with pytest.raises(EnqueueError, match="'g' field"):
        q.group_of(payload)
