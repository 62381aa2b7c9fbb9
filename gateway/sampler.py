"""One camera's video onto the frames stream: newest frame only, at most ``sample_fps`` a second.

A reader task takes every decoded frame of the track (a buffered
:class:`aiortc.contrib.media.MediaRelay` proxy, so none goes unseen) into a one-frame slot; the
sampling loop takes the slot's frame when it is free. A frame replaced in the slot before it
was taken (the sampler was still encoding or queueing the previous one) is *superseded*:
counted as dropped, never queued. So a slow sampler skips frames instead of falling behind.

Backpressure at the source: a stream keeps at most ``settings.max_inflight_per_stream`` frames
queued and unanswered; a sample due while that many are in flight is skipped and counted
(``backpressure``). So one stream cannot flood the shared frames stream, and when workers fall
behind every stream slows down alike. A frame older than the latency budget
(``settings.max_frame_age``) plus :data:`INFLIGHT_GRACE_S` no longer counts: workers drop such
frames unanswered (or it was lost with Redis), so a lost frame holds its slot only briefly and
never stalls its stream.
"""

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame
from av.video.reformatter import VideoReformatter

from emostream.config import Settings
from emostream.metrics import Metrics
from ingest.sampling import Sampler
from ingest.wire import Encoding, Frame, wire_size

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 30.0
"""Seconds the first frame may take (ICE, DTLS, first key frame) before the stream is given up."""
INFLIGHT_GRACE_S = 1.0
"""Time past the latency budget a queued frame may still be answered (a worker took it just in time)."""
SIZES_KEPT = 256
"""Source widths remembered per sent frame, to scale its result's boxes onto the returned video."""
FRAMES_KEPT = 50
"""Sent frames (as queued, encoded) kept per stream while feedback capture is on, to crop corrections from.

About 5 s of video at 10 fps; a 640x480 grayscale JPEG is ~30 KB, so ~1.5 MB per stream."""
FRAMES_HELD = 8
"""Frames per stream kept past :data:`FRAMES_KEPT` because the page asked (its user is picking a
correction of a face in them, however long that takes); the oldest is let go first."""


@dataclass
class SamplerStats:
    received: int = 0
    """Frames read from the track."""
    superseded: int = 0
    """Frames replaced by a newer one before the sampling loop took them."""
    taken: int = 0
    """Frames the sampling loop took (then kept or skipped by the sampling rate)."""
    sent: int = 0
    backpressured: int = 0
    """Samples skipped because the stream had ``max_inflight_per_stream`` frames unanswered."""
    failed: int = 0
    """Sampled frames that could not be queued (Redis unreachable or the frame unconvertible)."""


def to_wire(
    frame: VideoFrame, reformatter: VideoReformatter, settings: Settings, stream: str, seq: int, ts: float, reply: str
) -> Frame:
    """``frame`` as a wire frame: grayscale, at most ``settings.frame_width`` wide (CPU work: run in a thread).

    ``reformatter`` is the caller's own: a frame's built-in one is shared by every consumer of the relay.
    """
    width = frame.width
    out_width, out_height = wire_size(width, frame.height, settings.frame_width)
    gray = reformatter.reformat(frame, width=out_width, height=out_height, format="gray", threads=1).to_ndarray()
    return Frame(stream, seq, ts, gray, reply, scale=width / out_width)


def encode_frame(
    frame: VideoFrame, reformatter: VideoReformatter, settings: Settings, stream: str, seq: int, ts: float, reply: str
) -> dict[str, bytes | str]:
    """The wire fields of ``frame`` (see :func:`to_wire`)."""
    wire = to_wire(frame, reformatter, settings, stream, seq, ts, reply)
    return wire.encode(Encoding(settings.encoding), settings.jpeg_quality)


class TrackSampler:
    """Samples one video track onto ``settings.keys.frames`` until the track ends or goes silent."""

    def __init__(
        self,
        track: MediaStreamTrack,
        stream: str,
        reply: str,
        settings: Settings,
        redis: aioredis.Redis,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.track = track
        self.stream = stream
        self.reply = reply
        self.settings = settings
        self.redis = redis
        self.metrics = metrics
        self.clock = clock
        """Capture time of a frame taken now (seconds since the epoch)."""
        self.stats = SamplerStats()
        self.rate = Sampler(settings.sample_fps)
        self.widths: OrderedDict[int, int] = OrderedDict()
        """Source width of each recently sent frame, by seq."""
        self.recent: OrderedDict[int, dict[str, bytes | str]] = OrderedDict()
        """The wire fields of the last :data:`FRAMES_KEPT` sent frames, by seq (only while feedback is on)."""
        self.held: OrderedDict[int, dict[str, bytes | str]] = OrderedDict()
        """Frames :meth:`hold` keeps longer, by seq."""
        self.inflight: OrderedDict[int, float] = OrderedDict()
        """Frames queued and not yet answered: seq -> when queued (monotonic), oldest first."""
        self._reformatter = VideoReformatter()
        self._seq = 0
        self._slot: tuple[VideoFrame, float] | None = None
        self._arrived = asyncio.Event()
        self._ended = False

    async def run(self) -> None:
        """Returns when the track ends; raises :class:`TimeoutError` when no frame comes in time."""
        reader = asyncio.create_task(self._read(), name=f"read {self.stream}")
        try:
            timeout = CONNECT_TIMEOUT
            while True:
                if self._slot is None:
                    if self._ended:
                        return
                    await asyncio.wait_for(self._arrived.wait(), timeout)
                    self._arrived.clear()
                    continue
                (frame, ts), self._slot = self._slot, None
                timeout = self.settings.stream_idle_timeout
                self.stats.taken += 1
                if not self.rate.keep(ts):
                    continue
                if self.in_flight() >= self.settings.max_inflight_per_stream:
                    self.stats.backpressured += 1
                    self.metrics.frames_dropped.labels(reason="backpressure").inc()
                    continue
                await self.send(frame, ts)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            self.track.stop()  # a buffered relay proxy nobody reads would queue frames without bound

    def answered(self, seq: int) -> None:
        """The result of frame ``seq`` arrived: it is no longer in flight."""
        self.inflight.pop(seq, None)

    def in_flight(self) -> int:
        """Frames queued and unanswered, forgetting those too old to be answered any more."""
        expired = time.monotonic() - (self.settings.max_frame_age + INFLIGHT_GRACE_S)
        while self.inflight and next(iter(self.inflight.values())) < expired:
            self.inflight.popitem(last=False)
        return len(self.inflight)

    async def _read(self) -> None:
        """Put every frame of the track in the slot; a frame still there is superseded."""
        while True:
            try:
                frame = cast(VideoFrame, await self.track.recv())  # a video track's frames
            except MediaStreamError:
                break
            except Exception:
                log.exception("stream %s: reading the camera failed", self.stream)
                break
            self.stats.received += 1
            self.metrics.frames_received.inc()
            if self._slot is not None:
                self.stats.superseded += 1
                self.metrics.frames_dropped.labels(reason="superseded").inc()
            self._slot = (frame, self.clock())
            self._arrived.set()
        self._ended = True
        self._arrived.set()

    async def send(self, frame: VideoFrame, ts: float) -> None:
        """Convert ``frame`` off the event loop and queue it; failures are counted, never raised."""
        seq = self._seq
        self._seq += 1
        try:
            fields = await asyncio.to_thread(
                encode_frame, frame, self._reformatter, self.settings, self.stream, seq, ts, self.reply
            )
        except ValueError as err:
            self._failed(seq, "decode_error", err)
            return
        self.inflight[seq] = time.monotonic()  # before XADD: its answer may be read before XADD returns here
        # shielded: a stream closing mid-XADD still counts the frame it queued, so the counters add up
        await asyncio.shield(self._queue(seq, fields, frame.width))

    async def _queue(self, seq: int, fields: dict[str, bytes | str], width: int) -> None:
        try:
            await self.redis.xadd(
                self.settings.keys.frames,
                fields,  # type: ignore[arg-type]  # redis-py's dict[FieldT, EncodableT] is invariant: takes no narrower dict
                maxlen=self.settings.frames_maxlen,
                approximate=True,
            )
        except (aioredis.RedisError, OSError) as err:
            self.inflight.pop(seq, None)
            self._failed(seq, "redis_unavailable", err)
            return
        self.stats.sent += 1
        self.metrics.frames_sampled.inc()
        self.widths[seq] = width
        if len(self.widths) > SIZES_KEPT:
            self.widths.popitem(last=False)
        if self.settings.feedback:
            self.recent[seq] = fields
            if len(self.recent) > FRAMES_KEPT:
                self.recent.popitem(last=False)

    def kept(self, seq: int) -> dict[str, bytes | str] | None:
        """The wire fields of sent frame ``seq`` while it is kept (recent or held), else None."""
        return self.recent.get(seq) or self.held.get(seq)

    def kept_seqs(self) -> set[int]:
        return self.recent.keys() | self.held.keys()

    def hold(self, seq: int) -> bool:
        """Keep frame ``seq`` past :data:`FRAMES_KEPT` (among the last :data:`FRAMES_HELD` held); False if
        it is no longer kept."""
        fields = self.kept(seq)
        if fields is None:
            return False
        self.held[seq] = fields
        self.held.move_to_end(seq)
        if len(self.held) > FRAMES_HELD:
            self.held.popitem(last=False)
        return True

    def _failed(self, seq: int, reason: str, err: Exception) -> None:
        self.stats.failed += 1
        self.metrics.frames_dropped.labels(reason=reason).inc()
        if self.stats.failed == 1 or self.stats.failed % 100 == 0:
            log.warning("stream %s: frame %d not queued (%d so far): %s", self.stream, seq, self.stats.failed, err)
