"""One camera: its peer connection from offer to close.

The browser offers one video track and a ``results`` data channel. The camera track goes
through a :class:`~aiortc.contrib.media.MediaRelay` to the
:class:`~gateway.sampler.TrackSampler` (frames stream; it sees every frame and keeps the
newest) and, unless the browser draws the labels itself (``return_video`` false), to the
:class:`~gateway.labelled_track.LabelledTrack` sent back (unbuffered: always the newest
frame). Results arrive through :meth:`Session.deliver`, which gives their faces tracks and
smoothed labels (:class:`~ingest.tracks.StreamTracks`, results in arrival order). The session
closes when the peer connection fails or closes, the camera track ends or stays silent, the
browser asks (``DELETE``), or the gateway stops.
"""

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from aiortc import MediaStreamTrack, RTCConfiguration, RTCDataChannel, RTCIceServer, RTCPeerConnection
from aiortc import RTCSessionDescription as Description
from aiortc.contrib.media import MediaRelay

from emostream.config import Settings
from emostream.metrics import Metrics
from gateway.labelled_track import LabelledTrack
from gateway.limits import CorrectionLimit, TokenBucket
from gateway.sampler import TrackSampler
from ingest.tracks import StreamTracks
from ingest.wire import Result

log = logging.getLogger(__name__)

RESULTS_CHANNEL = "results"
MAX_BUFFERED = 64 * 1024
"""Bytes queued on the results channel past which results are dropped (and counted) for that browser.

A result is a few hundred bytes: this is seconds of results, so a browser that stops reading
costs a bounded amount of memory and gets fresh results, not old ones, when it reads again."""
RESULTS_BURST = 2
"""Results a stream may get at once, in multiples of ``max_inflight_per_stream`` (a batch answers them together)."""
INCOMING_RATE, INCOMING_BURST = 5.0, 20
"""Messages a second (and at once) a browser may send on the results channel; the page sends none.
A browser sending more has its stream closed."""


class OfferError(ValueError):
    """An offer the gateway cannot answer."""


def ice_configuration(settings: Settings) -> RTCConfiguration:
    """``settings.ice_servers`` as aiortc configuration; none means host candidates only (no default STUN)."""
    return RTCConfiguration(iceServers=[RTCIceServer(**server) for server in settings.ice_server_list()])


class Session:
    """A camera stream: call :meth:`accept` once, :meth:`deliver` per result, :meth:`close` any number of times."""

    def __init__(
        self,
        stream: str,
        reply: str,
        settings: Settings,
        redis: aioredis.Redis,
        metrics: Metrics,
        on_closed: Callable[["Session"], None],
        client: str = "",
        return_video: bool = True,
    ) -> None:
        self.stream = stream
        self.key = secrets.token_urlsafe(24)
        """Proves a camera user owns this stream (closing it, feedback on it): given only in the offer's answer."""
        self.client = client
        """The address the offer came from (streams per client are limited)."""
        self.reply = reply
        self.return_video = return_video
        """Labelled video goes back to the browser; without it the browser draws the results."""
        self.tracks = StreamTracks()
        self.settings = settings
        self.redis = redis
        self.metrics = metrics
        self.on_closed = on_closed
        self.started = time.time()
        self.answered: float | None = None
        self.pc = RTCPeerConnection(ice_configuration(settings))
        self.relay = MediaRelay()
        self.sampler: TrackSampler | None = None
        self.labelled: LabelledTrack | None = None
        self.channel: RTCDataChannel | None = None
        self.results_sent = 0
        self.results_dropped = 0
        self.results_limit = TokenBucket(settings.sample_fps, RESULTS_BURST * settings.max_inflight_per_stream)
        """Results go to the browser no faster than frames are sampled."""
        self.corrections = CorrectionLimit()
        """Label corrections (``POST /api/feedback``) of this stream's faces."""
        self.incoming_limit = TokenBucket(INCOMING_RATE, INCOMING_BURST)
        self.closed = False
        self._task: asyncio.Task | None = None
        self._closing: asyncio.Future | None = None

    async def accept(self, offer: Description) -> Description:
        """Answer ``offer`` and start sampling; raises :class:`OfferError` (the session is then closed)."""
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_state)
        try:
            await self.pc.setRemoteDescription(offer)
            if self.sampler is None:
                raise OfferError("the offer has no video track")
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except Exception as err:
            await self.close()
            raise OfferError(f"offer rejected: {err}") from err
        except asyncio.CancelledError:  # the offer timed out
            await self.close()
            raise
        self._task = asyncio.create_task(self._sample(self.sampler), name=f"sample {self.stream}")
        self.answered = time.time()  # its first frame is awaited from now
        return self.pc.localDescription

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "video" or self.sampler is not None:
            return
        self.sampler = TrackSampler(
            self.relay.subscribe(track, buffered=True),
            self.stream,
            self.reply,
            self.settings,
            self.redis,
            self.metrics,
        )
        if self.return_video:
            self.labelled = LabelledTrack(self.relay.subscribe(track, buffered=False), self.settings.result_max_age)
            self.pc.addTrack(self.labelled)

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        self._on_message(channel)  # opening a channel counts against the browser's allowance, as a message does
        if channel.label == RESULTS_CHANNEL and self.channel is None:
            self.channel = channel
            channel.on("message", self._on_message)
        else:  # the one results channel is all this gateway speaks
            channel.close()

    def _on_message(self, message: object) -> None:
        if not self.incoming_limit.take() and not self.closed:
            log.warning("stream %s: the browser floods the results channel, closing", self.stream)
            self._closing = asyncio.ensure_future(self.close())

    async def _on_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            await self.close()

    async def _sample(self, sampler: TrackSampler) -> None:
        try:
            await sampler.run()
        except TimeoutError:
            log.info("stream %s: no video for %.0fs, closing", self.stream, self.settings.stream_idle_timeout)
        except Exception:
            log.exception("stream %s: sampling failed, closing", self.stream)
        await self.close()

    def deliver(self, result: Result) -> None:
        """Track its faces, show it on the returned video and send it on the results channel (or count
        it dropped)."""
        self.tracks.update(result)
        if self.sampler:
            self.sampler.answered(result.seq)
        if self.sampler and self.labelled and result.seq in self.sampler.widths:
            self.labelled.show(result, self.sampler.widths[result.seq])
        channel = self.channel
        if channel is None or channel.readyState != "open" or channel.bufferedAmount > MAX_BUFFERED:
            self.results_dropped += 1
            self.metrics.gateway_results.labels(outcome="undeliverable").inc()
            return
        if not self.results_limit.take():
            self.results_dropped += 1
            self.metrics.gateway_results.labels(outcome="rate_limited").inc()
            return
        channel.send(json.dumps(result.to_json(), separators=(",", ":")))
        self.results_sent += 1
        self.metrics.gateway_results.labels(outcome="delivered").inc()

    def describe(self) -> dict:
        stats = self.sampler.stats if self.sampler else None
        return {
            "stream": self.stream,
            "state": self.pc.connectionState,
            "return_video": self.return_video,
            "started": self.started,
            "frames_received": stats.received if stats else 0,
            "frames_superseded": stats.superseded if stats else 0,
            "frames_sent": stats.sent if stats else 0,
            "frames_backpressured": stats.backpressured if stats else 0,
            "frames_in_flight": len(self.sampler.inflight) if self.sampler else 0,
            "frames_failed": stats.failed if stats else 0,
            "results_sent": self.results_sent,
            "results_dropped": self.results_dropped,
        }

    async def close(self) -> None:
        """Stop sampling, close the peer connection and leave the gateway; later calls do nothing."""
        if self.closed:
            return
        self.closed = True
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        await self.pc.close()
        self.on_closed(self)
        log.info("stream %s closed: %s", self.stream, self.describe())
