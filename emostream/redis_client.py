"""Redis clients that give up on answers that never come: a dead node, or a NAT that forgot the connection.

The longest wait the gateway, workers and ``ingest`` ask of Redis is a 1 s blocking read, so an answer
later than :data:`TIMEOUT_S` means the connection was lost without a word: the call raises
``TimeoutError`` (handled as a lost connection) and the next one connects afresh. redis-py 8 waits
as long by default; 5 to 7, which ``redis>=5`` allows, waited for ever.
"""

from typing import Any

import redis
import redis.asyncio as aioredis

TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 5.0
OPTIONS: dict[str, Any] = dict(
    socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=TIMEOUT_S, socket_keepalive=True
)


def connect(url: str) -> redis.Redis:
    """A synchronous client of ``url`` with those timeouts, and TCP keepalive."""
    return redis.Redis.from_url(url, **OPTIONS)


def connect_async(url: str) -> aioredis.Redis:
    """An asyncio client of ``url`` (the gateway's) with the same."""
    return aioredis.Redis.from_url(url, **OPTIONS)
