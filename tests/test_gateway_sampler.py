"""The sampler against real aiortc tracks and a real Redis: newest frame only, sampling rate, wire fields."""

import asyncio

import cv2
import numpy as np
import pytest
import redis.asyncio as aioredis
from aiortc.contrib.media import MediaRelay
from aiortc.rtcrtpreceiver import RemoteStreamTrack
from av import VideoFrame
from av.video.reformatter import VideoReformatter
from gateway_helpers import run, until

from emostream.config import Settings
from emostream.metrics import Metrics
from emostream.redis_server import free_port
from gateway.sampler import TrackSampler, encode_frame
from ingest.wire import Frame


def level_frame(level: int, width: int = 64, height: int = 48) -> VideoFrame:
    """A flat grey frame in aiortc's decoder format; ``level`` identifies it."""
    image = np.full((height, width, 3), level, np.uint8)
    return VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")


def sampler_for(track, redis_url: str, clock=None, **settings) -> tuple[TrackSampler, aioredis.Redis, Settings]:
    """A sampler reading ``track`` through a buffered relay proxy, as a session wires it."""
    config = Settings(redis_url=redis_url, key_prefix="test", encoding="gray", **settings)
    redis = aioredis.Redis.from_url(redis_url)
    proxy = MediaRelay().subscribe(track, buffered=True)
    extra = {"clock": clock} if clock else {}
    metrics = Metrics(process_collectors=False)
    return TrackSampler(proxy, "cam", "test:results:gw", config, redis, metrics, **extra), redis, config


async def queued_frames(redis: aioredis.Redis, settings: Settings) -> list[Frame]:
    return [Frame.decode(fields) for _, fields in await redis.xrange(settings.keys.frames)]


def test_only_the_newest_frame_of_a_backlog_is_sent(redis_server):
    async def scenario():
        track = RemoteStreamTrack(kind="video")  # aiortc's receiving track, its unbounded queue filled
        for level in range(50):
            track._queue.put_nowait(level_frame(level * 5))
        sampler, redis, settings = sampler_for(track, redis_server.url, sample_fps=1000)
        task = asyncio.create_task(sampler.run())
        await until(lambda: sampler.stats.sent, 30, "the first frame sent")
        track._queue.put_nowait(None)  # the connection ends
        await asyncio.wait_for(task, 30)
        frames = await queued_frames(redis, settings)
        await redis.aclose()
        return sampler, frames

    sampler, frames = run(scenario())
    assert sampler.stats.received == 50 and len(frames) == 1, "the 49 older frames were skipped, not queued"
    assert abs(int(frames[0].image.mean()) - 49 * 5) <= 2, "the frame sent is the newest one"
    assert sampler.stats.superseded == 49 and sampler.stats.sent == 1
    exposed = sampler.metrics.render().decode()
    assert "emostream_frames_received_total 50.0" in exposed and "emostream_frames_sampled_total 1.0" in exposed
    assert 'emostream_frames_dropped_total{reason="superseded"} 49.0' in exposed


def test_frames_are_sampled_at_the_configured_rate(redis_server):
    now = [0.0]

    async def scenario():
        track = RemoteStreamTrack(kind="video")
        sampler, redis, settings = sampler_for(
            track, redis_server.url, clock=lambda: now[0], sample_fps=10, max_inflight_per_stream=100
        )
        task = asyncio.create_task(sampler.run())
        for index in range(60):  # a 30 fps camera, each frame taken before the next arrives
            now[0] = 1000.0 + index / 30
            track._queue.put_nowait(level_frame(index * 4))
            await until(lambda index=index: sampler.stats.taken == index + 1, 30, f"frame {index} taken")
        track._queue.put_nowait(None)
        await asyncio.wait_for(task, 30)
        frames = await queued_frames(redis, settings)
        await redis.aclose()
        return frames

    frames = run(scenario())
    sources = [round(frame.image.mean() / 4) for frame in frames]
    assert sources == list(range(0, 60, 3)), "every third frame of a 30 fps camera at 10 fps"
    assert [frame.seq for frame in frames] == list(range(len(frames)))
    assert [frame.ts for frame in frames] == [1000.0 + index / 30 for index in sources]
    assert {(frame.stream, frame.reply) for frame in frames} == {("cam", "test:results:gw")}


def test_a_silent_track_times_out(redis_server):
    async def scenario():
        track = RemoteStreamTrack(kind="video")
        track._queue.put_nowait(level_frame(10))
        sampler, redis, _ = sampler_for(track, redis_server.url, stream_idle_timeout=0.5)
        try:
            with pytest.raises(TimeoutError):
                await sampler.run()
        finally:
            await redis.aclose()
        return sampler

    assert run(scenario()).stats.sent == 1


def test_redis_failures_are_counted_not_raised():
    async def scenario():
        track = RemoteStreamTrack(kind="video")
        track._queue.put_nowait(level_frame(10))
        sampler, redis, _ = sampler_for(track, f"redis://127.0.0.1:{free_port()}/0", sample_fps=1000)
        task = asyncio.create_task(sampler.run())
        await until(lambda: sampler.stats.failed, 30, "the failure counted")
        track._queue.put_nowait(None)
        await asyncio.wait_for(task, 30)
        await redis.aclose()
        return sampler

    sampler = run(scenario())
    assert sampler.stats.failed == 1 and sampler.stats.sent == 0
    assert 'emostream_frames_dropped_total{reason="redis_unavailable"} 1.0' in sampler.metrics.render().decode()


@pytest.mark.parametrize("encoding", ["jpeg", "gray"])
def test_encode_frame_downscales_to_grey_with_its_scale(encoding):
    image = np.zeros((720, 1280, 3), np.uint8)
    image[:, 640:] = (40, 200, 250)  # a colour on the right half
    frame = VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
    settings = Settings(frame_width=640, encoding=encoding, jpeg_quality=95)
    fields = encode_frame(frame, VideoReformatter(), settings, "cam", 7, 123.5, "reply-key")
    decoded = Frame.decode(fields)
    assert (decoded.stream, decoded.seq, decoded.ts, decoded.reply) == ("cam", 7, 123.5, "reply-key")
    assert decoded.image.shape == (360, 640) and decoded.scale == 2.0 and fields["enc"] == encoding
    expected = cv2.cvtColor(np.uint8([[[40, 200, 250]]]), cv2.COLOR_BGR2GRAY)[0, 0]
    assert abs(int(np.median(decoded.image[:, 400:])) - int(expected)) <= 4
    assert int(np.median(decoded.image[:, :200])) <= 4


def test_small_frames_are_not_upscaled():
    frame = level_frame(100, 320, 240)
    fields = encode_frame(frame, VideoReformatter(), Settings(frame_width=640), "cam", 0, 1.0, "r")
    assert (fields["w"], fields["h"], fields["scale"]) == ("320", "240", "1.0")
