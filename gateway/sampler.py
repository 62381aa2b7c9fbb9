"""One camera's video onto the frames stream: newest frame only, at most ``sample_fps`` a second.

The track given to :class:`TrackSampler` is an unbuffered :class:`aiortc.contrib.media.MediaRelay`
proxy: the relay drains aiortc's unbounded receive queue as fast as frames are decoded and
the proxy holds only the newest one, so a slow sampler skips frames instead of falling behind.
"""

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame
from av.video.reformatter import VideoReformatter

from emostream.config import Settings
from gateway.metrics import Metrics
from ingest.sampling import Sampler
from ingest.wire import Encoding, Frame

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 30.0
"""Seconds the first frame may take (ICE, DTLS, first key frame) before the stream is given up."""
SIZES_KEPT = 256
"""Source widths remembered per sent frame, to scale its result's boxes onto the returned video."""


@dataclass
class SamplerStats:
    received: int = 0
    """Frames taken from the relay (frames the relay skipped are never seen)."""
    sent: int = 0
    failed: int = 0
    """Sampled frames that could not be queued (Redis unreachable or the frame unencodable)."""


def encode_frame(
    frame: VideoFrame, reformatter: VideoReformatter, settings: Settings, stream: str, seq: int, ts: float, reply: str
) -> dict[str, bytes | str]:
    """The wire fields of ``frame``: grayscale, at most ``settings.frame_width`` wide (CPU work: run in a thread).

    ``reformatter`` is the caller's own: a frame's built-in one is shared by every consumer of the relay.
    """
    width, height = frame.width, frame.height
    out_width = min(width, settings.frame_width)
    out_height = max(1, round(height * out_width / width))
    gray = reformatter.reformat(frame, width=out_width, height=out_height, format="gray", threads=1).to_ndarray()
    wire = Frame(stream, seq, ts, gray, reply, scale=width / out_width)
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
        self._reformatter = VideoReformatter()
        self._seq = 0

    async def run(self) -> None:
        """Returns when the track ends; raises :class:`TimeoutError` when no frame comes in time."""
        timeout = CONNECT_TIMEOUT
        while True:
            try:
                frame = await asyncio.wait_for(self.track.recv(), timeout)
            except MediaStreamError:
                return
            timeout = self.settings.stream_idle_timeout
            ts = self.clock()
            self.stats.received += 1
            self.metrics.frames.labels("received").inc()
            if self.rate.keep(ts):
                await self.send(frame, ts)

    async def send(self, frame: VideoFrame, ts: float) -> None:
        """Encode ``frame`` off the event loop and queue it; failures are counted, never raised."""
        seq = self._seq
        self._seq += 1
        try:
            fields = await asyncio.to_thread(
                encode_frame, frame, self._reformatter, self.settings, self.stream, seq, ts, self.reply
            )
            await self.redis.xadd(
                self.settings.keys.frames, fields, maxlen=self.settings.frames_maxlen, approximate=True
            )
        except (aioredis.RedisError, ValueError) as err:
            self.stats.failed += 1
            self.metrics.frames.labels("failed").inc()
            if self.stats.failed == 1 or self.stats.failed % 100 == 0:
                log.warning("stream %s: frame %d not queued (%d so far): %s", self.stream, seq, self.stats.failed, err)
            return
        self.stats.sent += 1
        self.metrics.frames.labels("sent").inc()
        self.widths[seq] = frame.width
        if len(self.widths) > SIZES_KEPT:
            self.widths.popitem(last=False)
