"""The fault tools themselves: a killed Redis is really gone, a restart keeps or loses its
data as asked, and a cut proxy really refuses."""

from __future__ import annotations

import socket

import pytest
import redis


def test_own_redis_restarts_with_or_without_its_data(fault_redis):
    r = redis.Redis.from_url(fault_redis.url)
    r.set("k", "v")
    fault_redis.kill()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(fault_redis.url, socket_connect_timeout=0.5).ping()
    fault_redis.start()
    assert redis.Redis.from_url(fault_redis.url).get("k") == b"v"
    fault_redis.restart(empty=True)
    assert redis.Redis.from_url(fault_redis.url).get("k") is None


def test_cut_proxy_refuses_until_restored(rabbit_proxy):
    socket.create_connection(("127.0.0.1", rabbit_proxy.port), timeout=1).close()
    rabbit_proxy.cut()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", rabbit_proxy.port), timeout=1).close()
    rabbit_proxy.restore()
    socket.create_connection(("127.0.0.1", rabbit_proxy.port), timeout=1).close()
