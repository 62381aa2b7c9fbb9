"""The gateway's reply stream: results written by workers, handed to the session of their stream."""

import asyncio
import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis

from emostream.metrics import Metrics
from ingest.wire import Result, WireError, read_entries

log = logging.getLogger(__name__)

BLOCK_MS = 1000
READ_COUNT = 256
RETRY_S = 1.0
"""Pause before reading again after a Redis error."""


class ResultReader:
    """``XREAD BLOCK`` loop over one reply stream; read entries are deleted so the stream stays short.

    ``deliver(result)`` returns False when no open session has the result's stream. Every result
    read is timed from its frame's capture (``ts``, on this gateway's ``clock``) to now.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        key: str,
        deliver: Callable[[Result], bool],
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.key = key
        self.deliver = deliver
        self.metrics = metrics
        self.clock = clock
        self._last_id: bytes | str = "0-0"

    async def run(self) -> None:
        """Read until cancelled; Redis errors are logged and retried, never raised."""
        failures = 0
        while True:
            try:
                await self.read_once()
                failures = 0
            except aioredis.RedisError as err:
                failures += 1
                if failures == 1 or failures % 60 == 0:
                    log.warning("reading %s failed (%d in a row): %s", self.key, failures, err)
                await asyncio.sleep(RETRY_S)

    async def read_once(self, block_ms: int = BLOCK_MS) -> int:
        """Dispatch the entries that arrive within ``block_ms``; returns how many were read."""
        reply = await self.redis.xread({self.key: self._last_id}, count=READ_COUNT, block=block_ms)
        ids = []
        for entry_id, fields in read_entries(reply):
            ids.append(entry_id)
            self._dispatch(entry_id, fields)
        if ids:
            self._last_id = ids[-1]
            await self.redis.xdel(self.key, *ids)
        return len(ids)

    def _dispatch(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            result = Result.decode(fields)
        except WireError as err:
            self.metrics.gateway_results.labels(outcome="malformed").inc()
            log.warning("dropping malformed result %s: %s", entry_id.decode(), err)
            return
        self.metrics.frame_to_label.observe(max(0.0, self.clock() - result.ts))
        try:
            delivered = self.deliver(result)
        except Exception:  # one result's bug must not end the reading of every stream's
            self.metrics.gateway_results.labels(outcome="undeliverable").inc()
            log.exception("delivering result %s of stream %s failed", entry_id.decode(), result.stream)
            return
        if not delivered:
            self.metrics.gateway_results.labels(outcome="unknown_stream").inc()
