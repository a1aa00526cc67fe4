"""The few hot Redis commands, sent without redis-py's per-command machinery.

``redis.Redis.execute_command`` costs about as much Python as the round trip itself
(argument filtering, retry wrapper, a generic packer, response callbacks). The commands
every call makes (LPUSH of a message, BRPOP/BLMPOP of the next one) go through here on
a client's own connection (``single_connection_client=True``, used by one thread at a
time): packed once as RESP, read with the connection's parser. Errors are redis-py's
(``ConnectionError``, ``ResponseError``, ...), and a broken connection is reconnected by
the next command, as redis-py does.
"""

from __future__ import annotations

import socket
from typing import Any

import redis


def pack(*args: str | bytes | int | float) -> bytes:
    """One command in RESP (str as UTF-8, numbers as their text)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode("utf-8")
        elif isinstance(arg, bytes):
            data = arg
        else:
            data = repr(arg).encode("ascii")
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def call(client: redis.Redis, packed: bytes) -> Any:
    """Send ``packed`` on ``client``'s single connection and read the raw reply."""
    conn = client.connection
    if conn is None:  # not a single-connection client: the ordinary way
        raise TypeError("resp.call needs a client made with single_connection_client=True")
    try:
        conn.send_packed_command([packed], check_health=False)
        return conn.read_response()
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        conn.disconnect()
        raise


def seconds(timeout: float) -> str:
    """A blocking command's timeout: at least 1 ms (0 would block forever)."""
    return f"{max(timeout, 0.001):.3f}"


def client(url: str) -> redis.Redis:
    """A client on one connection of its own for :func:`call`.

    Its socket is blocking (no ``socket_timeout``): Python then reads and writes without a
    ``poll()`` before every call, one system call and one GIL hand-off fewer per command.
    Every blocking command sent through it carries a server-side timeout, and TCP
    keepalive probes (after 5 s idle, every 2 s, 3 tries) break a connection whose peer
    is gone, so nothing waits forever.
    """

    options = {}
    for name, value in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            options[getattr(socket, name)] = value
    return redis.Redis.from_url(url, single_connection_client=True, socket_connect_timeout=5,
                                socket_timeout=None, socket_keepalive=True,
                                socket_keepalive_options=options)
