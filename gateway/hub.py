"""A gateway's state: its id and reply stream, its open camera sessions, and the reader dispatching results."""

import asyncio
import contextlib
import logging
import math
import secrets
import time
import uuid

import redis.asyncio as aioredis
from aiortc import RTCSessionDescription

from emostream import loop_lag
from emostream.config import Settings
from emostream.metrics import Metrics
from gateway.limits import ClientRateLimiter
from gateway.results import ResultReader
from gateway.sampler import CONNECT_TIMEOUT
from gateway.session import Session
from ingest.wire import Result

log = logging.getLogger(__name__)

QUEUE_POLL_S = 1.0
"""How often the length of the frames stream is measured for ``emostream_queue_length``."""
DRAIN_S = 1.0
"""On stop, how long to wait for the answers to frames still in flight before deleting the reply stream."""
STOP_WAIT_S = 2.0
"""How long stopping waits for the background tasks once cancelled."""


class GatewayFull(RuntimeError):
    """``settings.max_streams`` sessions are open already."""


class ClientLimit(RuntimeError):
    """The client has ``settings.max_streams_per_client`` sessions open already; ``retry_after`` (seconds)
    when one of them has had no frame yet, so it closes by itself then unless its camera connects."""

    def __init__(self, message: str, retry_after: int | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Hub:
    """Start with :meth:`start`, open one :class:`Session` per camera offer, :meth:`stop` closes everything."""

    def __init__(self, settings: Settings, redis: aioredis.Redis, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.redis = redis
        self.id = f"gw-{uuid.uuid4().hex[:10]}"
        self.reply = settings.keys.results(self.id)
        """The reply stream every frame of this gateway names; workers answer there."""
        self.metrics = metrics or Metrics(process_collectors=False)
        self.sessions: dict[str, Session] = {}
        self.draining: dict[str, Session] = {}
        """Sessions closed by :meth:`stop` whose frames may still be answered."""
        self.offers = ClientRateLimiter(settings.offer_rate, settings.offer_burst)
        """Offers per client address (``POST /api/offer`` asks it first)."""
        self.reader = ResultReader(redis, self.reply, self.deliver, self.metrics)
        self._tasks: list[asyncio.Task] = []
        self._stopping = False

    async def start(self) -> None:
        self._stopping = False
        self._tasks = [
            asyncio.create_task(self.reader.run(), name=f"results {self.id}"),
            asyncio.create_task(self._measure_queue(), name=f"queue length {self.id}"),
            asyncio.create_task(loop_lag.watch(self.metrics.event_loop_lag), name=f"loop lag {self.id}"),
        ]
        log.info("gateway %s answering on %s", self.id, self.reply)

    async def _measure_queue(self) -> None:
        while not self._stopping:  # a cancel can be swallowed inside a Redis call: the flag ends the loop
            with contextlib.suppress(aioredis.RedisError, OSError):  # /readyz reports Redis; the gauge stays
                self.metrics.queue_length.set(await self.redis.xlen(self.settings.keys.frames))
            await asyncio.sleep(QUEUE_POLL_S)

    async def open(
        self, offer: RTCSessionDescription, client: str = "", return_video: bool = True
    ) -> tuple[Session, RTCSessionDescription]:
        """A new session answering ``offer`` from address ``client`` (with labelled video unless not ``return_video``).

        Raises :class:`GatewayFull`, :class:`ClientLimit` or :class:`~gateway.session.OfferError`.
        """
        if len(self.sessions) >= self.settings.max_streams:
            raise GatewayFull(f"this gateway serves at most {self.settings.max_streams} streams")
        limit = self.settings.max_streams_per_client
        mine = [s for s in self.sessions.values() if s.client == client]
        if len(mine) >= limit:
            now = time.time()
            waiting = [s.answered or now for s in mine if s.sampler is None or not s.sampler.stats.taken]
            retry = max(1, math.ceil(min(waiting) + CONNECT_TIMEOUT - now)) if waiting else None
            connecting = f" ({len(waiting)} not connected yet: try again in {retry} s)" if retry else ""
            raise ClientLimit(f"a client may have at most {limit} streams open{connecting}", retry)
        stream = f"{self.id}-{secrets.token_hex(8)}"  # unguessable: another client cannot name it
        session = Session(
            stream, self.reply, self.settings, self.redis, self.metrics, self._closed, client, return_video
        )
        self.sessions[session.stream] = session
        self.metrics.active_streams.set(len(self.sessions))
        answer = await session.accept(offer)
        log.info("stream %s opened (%d open)", session.stream, len(self.sessions))
        return session, answer

    def deliver(self, result: Result) -> bool:
        session = self.sessions.get(result.stream) or self.draining.get(result.stream)
        if session is None:
            return False
        session.deliver(result)
        return True

    def _closed(self, session: Session) -> None:
        self.sessions.pop(session.stream, None)
        self.metrics.active_streams.set(len(self.sessions))

    async def stop(self) -> None:
        """Close every session, wait (briefly) for the frames in flight, stop reading and delete the reply stream.

        An answer later than :data:`DRAIN_S` recreates the reply stream, which expires on its own.
        """
        self.draining = dict(self.sessions)
        await asyncio.gather(*(session.close() for session in list(self.sessions.values())))
        deadline = asyncio.get_running_loop().time() + DRAIN_S
        while asyncio.get_running_loop().time() < deadline and any(
            s.sampler and s.sampler.in_flight() for s in self.draining.values()
        ):
            await asyncio.sleep(0.05)
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.wait(self._tasks, timeout=STOP_WAIT_S)
        try:
            await self.redis.delete(self.reply)
        except aioredis.RedisError as err:
            log.warning("could not delete %s: %s", self.reply, err)
        log.info("gateway %s stopped", self.id)
