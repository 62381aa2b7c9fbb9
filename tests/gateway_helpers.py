"""Real gateways, real aiortc clients, and the test as a worker reading chosen frames off a real Redis.

Run as a script (``python tests/gateway_helpers.py URL``), it is a camera client that connects,
prints its stream id and streams until killed: a client that can vanish mid-call.
"""

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from fractions import Fraction

import aiohttp
import numpy as np
import redis.asyncio as aioredis
from aiohttp import web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from emostream.config import Settings
from emostream.redis_server import free_port
from gateway.app import HUB, create_app
from gateway.hub import Hub
from ingest.keys import Keys
from ingest.wire import Face, Frame, Result

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(scenario, timeout: float = 120.0):
    """Run an async test scenario to completion within ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(scenario, timeout))


async def until(predicate: Callable[[], object], timeout: float, what: str, poll: float = 0.05):
    """Wait until ``predicate()`` is truthy and return it; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(poll)


@dataclass
class Served:
    url: str
    app: web.Application

    @property
    def hub(self) -> Hub:
        return self.app[HUB]


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Served]:
    """The gateway app on a free loopback port, in this event loop."""
    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Served(f"http://127.0.0.1:{port}", app)
    finally:
        await runner.cleanup()


class ClipTrack(MediaStreamTrack):
    """A camera playing ``frames`` (BGR arrays) in a loop at ``fps``."""

    kind = "video"

    def __init__(self, frames: list[np.ndarray], fps: float = 10.0) -> None:
        super().__init__()
        self.frames = frames
        self.fps = fps
        self.index = 0
        self._start: float | None = None

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        await asyncio.sleep(max(0.0, self._start + self.index / self.fps - time.monotonic()))
        frame = VideoFrame.from_ndarray(self.frames[self.index % len(self.frames)], format="bgr24")
        frame.pts, frame.time_base = self.index, Fraction(1, round(self.fps))
        self.index += 1
        return frame


@dataclass
class Client:
    """A browser stand-in: one camera track out, the labelled video and the results channel in."""

    pc: RTCPeerConnection
    stream: str
    results: list[dict] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    """The most recent returned video frames (BGR), newest last."""
    keep_frames: int = 30
    frames_seen: int = 0
    """Every returned video frame received so far (``frames`` keeps only the last ``keep_frames``)."""
    channel: RTCDataChannel | None = None
    """The results channel (the page never sends on it)."""
    return_video: bool = True
    """What the gateway answered: labelled video comes back."""

    async def close(self) -> None:
        await self.pc.close()


async def connect(
    url: str,
    track: MediaStreamTrack,
    keep_frames: int = 30,
    token: str = "",
    direction: str = "sendrecv",
    **options: object,
) -> Client:
    """Offer ``track`` (``direction`` as the camera's transceiver) to the gateway at ``url`` (with its
    access ``token``, if any, and ``options`` in the offer's body) and collect what comes back."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(track, direction=direction)
    channel = pc.createDataChannel("results")
    client = Client(pc, "", keep_frames=keep_frames, channel=channel)
    channel.on("message", lambda message: client.results.append(json.loads(message)))

    async def collect(remote: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await remote.recv()
            except MediaStreamError:
                return
            client.frames.append(frame.to_ndarray(format="bgr24"))
            client.frames_seen += 1
            del client.frames[: -client.keep_frames]

    tasks = []
    pc.on("track", lambda remote: tasks.append(asyncio.ensure_future(collect(remote))))
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        body = {"sdp": pc.localDescription.sdp, "type": "offer", **options}
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with http.post(f"{url}/api/offer", json=body, headers=headers) as response:
            answer = await response.json()
    if response.status != 200:
        await pc.close()
        raise AssertionError(f"offer refused with {response.status}: {answer}")
    client.stream, client.return_video = answer["stream"], answer["return_video"]
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
    return client


class WireWorker:
    """The worker's side of the protocol, done by the test: XREADGROUP frames, XADD results to ``reply``.

    For tests that decide which frame gets which answer, and when: the raw fields of what the gateway
    sent, one chosen frame answered late, one frame answered over and over. The real worker answers
    every frame it reads, once, as soon as it can; for a worker that answers every frame with given
    faces, use :class:`stand_ins.StubbedWorker`.
    """

    def __init__(self, redis: aioredis.Redis, keys: Keys, name: str = "test-worker") -> None:
        self.redis = redis
        self.keys = keys
        self.name = name

    async def join(self) -> None:
        try:
            await self.redis.xgroup_create(self.keys.frames, self.keys.group, id="0", mkstream=True)
        except aioredis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    async def read(self, count: int = 10, block_ms: int = 500) -> list[tuple[dict, Frame]]:
        """The raw fields and decoded frame of up to ``count`` entries, acknowledged."""
        reply = await self.redis.xreadgroup(
            self.keys.group, self.name, {self.keys.frames: ">"}, count=count, block=block_ms
        )
        entries = reply[0][1] if reply else []
        if entries:
            await self.redis.xack(self.keys.frames, self.keys.group, *[entry_id for entry_id, _ in entries])
        return [({k.decode(): v for k, v in fields.items()}, Frame.decode(fields)) for _, fields in entries]

    async def answer(self, frame: Frame, faces: list[Face]) -> Result:
        result = Result(frame.stream, frame.seq, frame.ts, "test-model", faces, self.name, {"queue_s": 0.0})
        await self.redis.xadd(frame.reply, result.encode())
        return result


def face(box: tuple[int, int, int, int], label: str) -> Face:
    """A face whose best class is ``label`` (with probability 0.9)."""
    from emostream.labels import EMOTIONS

    scores = np.full(len(EMOTIONS), 0.1 / (len(EMOTIONS) - 1))
    scores[EMOTIONS.index(label)] = 0.9
    return Face.from_scores(list(box), scores)


def colored_fraction(image: np.ndarray, min_saturation: int = 60) -> float:
    """Share of pixels with a clear colour (frames of the test clips are grey: overlay boxes are not)."""
    channels = image.astype(np.int16)
    return float(np.mean(channels.max(axis=-1) - channels.min(axis=-1) >= min_saturation))


def box_band(image: np.ndarray, box: tuple[int, int, int, int], scale: float, margin: int = 3) -> np.ndarray:
    """The pixels within ``margin`` of the top and bottom edges of ``box`` (scaled to ``image``)."""
    x, y, w, h = (round(v * scale) for v in box)
    top = image[max(0, y - margin) : y + margin + 1, x + margin : x + w - margin]
    bottom = image[max(0, y + h - margin) : y + h + margin + 1, x + margin : x + w - margin]
    return np.concatenate([top.reshape(-1, 3), bottom.reshape(-1, 3)])


class GatewayProcess:
    """``emostream gateway`` as a child process on ``port`` or a free one (``with`` stops it)."""

    def __init__(self, redis_url: str, port: int | None = None, **env: str) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "emostream.cli", "gateway", "--port", str(self.port)]
        self.process = subprocess.Popen(
            command, cwd=REPO, env={**os.environ, "REDIS_URL": redis_url, **env}, stderr=subprocess.PIPE, text=True
        )

    def wait_ready(self, timeout: float = 60.0) -> "GatewayProcess":
        import urllib.request

        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.process.stderr.read()}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("gateway not ready")
            time.sleep(0.2)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stderr.close()
        return self.process.returncode

    def __enter__(self) -> "GatewayProcess":
        return self.wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _vanishing_client(url: str) -> None:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (240, 320, 3), np.uint8) for _ in range(5)]
    client = await connect(url, ClipTrack(frames, fps=10), keep_frames=1)
    print(client.stream, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_vanishing_client(sys.argv[1]))
