"""The outage log and backoff every reconnecting loop shares."""

from __future__ import annotations

import logging
import threading

import redis
from amqp.exceptions import ConnectionForced

from iii_broker import Settings
from iii_broker.errors import BrokerUnavailable
from iii_broker.outage import (
    BACKOFF_CAP_S,
    Backoff,
    Outage,
    broker_outage,
    outage_for,
    outage_of,
    store_outage,
)


def test_an_outage_is_logged_once_however_many_threads_retry_and_once_when_it_ends(caplog):
    outage = Outage("Redis at redis://127.0.0.1:1/0")
    caplog.set_level(logging.INFO, logger="iii.outage")
    threads = [threading.Thread(target=lambda: [outage.failed(redis.ConnectionError("refused"))
                                                for _ in range(50)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outage.down
    assert outage.recovered() is not None
    assert outage.recovered() is None  # already back: nothing more to say
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("lost the connection to Redis at") and "refused" in lines[0]
    assert " is back after " in lines[1]


class _Clock:
    """A monotonic clock the test moves (the outage log's rules are about seconds)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_a_stale_connection_failing_just_after_the_server_came_back_logs_nothing(
        caplog, monkeypatch):
    clock = _Clock()
    monkeypatch.setattr("iii_broker.outage.time", clock)
    outage = Outage("Redis at redis://127.0.0.1:1/0")
    caplog.set_level(logging.INFO, logger="iii.outage")
    outage.failed(redis.ConnectionError("refused"))
    clock.now += 30
    outage.recovered()
    clock.now += 0.8  # a connection idle through the outage fails on first use
    outage.failed(redis.ConnectionError("Connection closed by server."))
    clock.now += 0.1
    outage.recovered()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines  # the outage's "lost" and "back", nothing for the aftershock
    assert " is back after 30.0s" in lines[1]


def test_a_server_lost_again_just_after_it_came_back_is_logged_once_it_stays_down(
        caplog, monkeypatch):
    clock = _Clock()
    monkeypatch.setattr("iii_broker.outage.time", clock)
    outage = Outage("Redis at redis://127.0.0.1:1/0")
    caplog.set_level(logging.INFO, logger="iii.outage")
    outage.failed(redis.ConnectionError("refused"))
    clock.now += 5
    outage.recovered()
    clock.now += 0.5
    outage.failed(redis.ConnectionError("refused"))
    assert len(caplog.records) == 2  # not yet: it may be a stale connection
    clock.now += 2.5
    outage.failed(redis.ConnectionError("refused"))
    outage.failed(redis.ConnectionError("refused"))
    clock.now += 10
    outage.recovered()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4, lines
    assert lines[2].startswith("lost the connection to") and " is back after 12.5s" in lines[3]


def test_one_server_is_one_outage_per_process_whoever_asks():
    url = "redis://:secret@127.0.0.1:1/0"
    assert outage_of(url) is outage_of(url)
    assert "secret" not in outage_of(url).name


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_success():
    backoff = Backoff()
    delays = [backoff.next() for _ in range(10)]
    assert delays[0] < delays[1] < delays[2] and max(delays) == BACKOFF_CAP_S
    backoff.reset()
    assert backoff.next() == delays[0]


def test_each_failure_is_put_down_to_the_server_that_did_not_answer():
    settings = Settings(broker_url="amqp://guest:guest@127.0.0.1:5/", redis_url="redis://127.0.0.1:6/0")
    broker, store = broker_outage(settings), store_outage(settings)
    assert broker is not store
    # A broker outage reported by a loop that mostly talks to Redis (the engine's duties)
    # used to be logged as Redis lost and back, over and over.
    assert outage_for(settings, BrokerUnavailable("x", server=settings.broker_url)) is broker
    assert outage_for(settings, BrokerUnavailable("x", server=settings.redis_url)) is store
    assert outage_for(settings, redis.ConnectionError("refused")) is store
    assert outage_for(settings, ConnectionForced("heartbeats missed")) is broker
