"""aiortc clients against a real gateway and Redis; the real worker (stubbed models) or the test answers frames."""

import asyncio
import json
import sys
import time

import aiohttp
import numpy as np
import pytest
import redis.asyncio as aioredis
from clips import make_clip, validation_faces
from gateway_helpers import (
    REPO,
    ClipTrack,
    WireWorker,
    box_band,
    colored_fraction,
    connect,
    face,
    run,
    serving,
    until,
)
from stand_ins import StubbedWorker

from emostream.config import Settings
from ingest.tracks import StreamTracks
from ingest.wire import WIRE_VERSION, Result


def settings_for(redis_server, **changes) -> Settings:
    return Settings(redis_url=redis_server.url, key_prefix="test", **changes)


def noise_clip(count: int = 5, size: tuple[int, int] = (320, 240)) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 255, (size[1], size[0], 3), np.uint8) for _ in range(count)]


def test_frames_go_out_on_the_wire_and_results_come_back_drawn(redis_server):
    frames, truth = make_clip(validation_faces(("happy",), per_class=2), 20)
    box = truth[0][0].box
    settings = settings_for(redis_server, frame_width=320, result_max_age=30.0)

    async def scenario():
        redis = aioredis.Redis.from_url(redis_server.url)
        worker = WireWorker(redis, settings.keys)
        await worker.join()
        async with serving(settings) as served:
            started = time.time()
            client = await connect(served.url, ClipTrack(frames, fps=10))
            received = []
            while len(received) < 5:
                received += await worker.read()
                assert time.time() - started < 60, "frames did not reach the frames stream"
            await until(lambda: client.frames, 60, "the returned video")
            before = client.frames[-1]
            result = await worker.answer(received[-1][1], [face(box, "happy")])
            await until(lambda: client.results, 60, "the result on the data channel")
            count = client.frames_seen
            await until(lambda: client.frames_seen > count + 2, 60, "video frames after the result")
            after = client.frames[-1]
            metrics = metric_values(served.hub.metrics.render().decode())
            await client.close()
            await redis.aclose()
            return served.hub, client, received, result, before, after, started, metrics

    hub, client, received, result, before, after, started, metrics = run(scenario())
    fields = [raw for raw, _ in received]
    decoded = [frame for _, frame in received]
    assert {f.stream for f in decoded} == {client.stream}
    assert {f.reply for f in decoded} == {settings.keys.results(hub.id)}
    seqs = [f.seq for f in decoded]
    assert seqs == sorted(set(seqs)) and seqs[0] == 0, "seq increases from 0"
    assert all(started <= f.ts <= time.time() for f in decoded), "ts is the capture time"
    assert {(raw["w"], raw["h"], raw["enc"], raw["scale"]) for raw in fields} == {(b"320", b"240", b"jpeg", b"2.0")}
    assert all(f.image.shape == (240, 320) for f in decoded)
    tracked = StreamTracks().update(Result.from_json(result.to_json())).to_json()
    assert tracked["faces"][0]["track"] == 1 and tracked["faces"][0]["smoothed"]["label"] == "happy"
    assert client.results == [tracked], "the result JSON arrives on the data channel, its face tracked"
    scale = after.shape[1] / 640
    assert colored_fraction(box_band(before, box, scale)) < 0.05, "no box before the result"
    assert colored_fraction(box_band(after, box, scale)) > 0.5, "the box is drawn around the face"
    assert metrics["emostream_frames_received_total"] >= metrics["emostream_frames_sampled_total"] >= len(received)
    assert metrics["emostream_frame_to_label_seconds_count"] == 1.0
    assert 0 < metrics["emostream_frame_to_label_seconds_sum"] < 120, "capture to result, in seconds"
    assert metrics["emostream_active_streams"] == 1.0
    assert metrics['emostream_gateway_results_total{outcome="delivered"}'] == 1.0


def metric_values(exposition: str) -> dict[str, float]:
    """``name{labels}`` -> value of every sample in a Prometheus text exposition."""
    lines = (line.rsplit(" ", 1) for line in exposition.splitlines() if line and not line.startswith("#"))
    return {name: float(value) for name, value in lines}


def test_streams_never_cross_and_unknown_results_are_counted(redis_server):
    settings = settings_for(redis_server)

    async def scenario():
        redis = aioredis.Redis.from_url(redis_server.url)
        async with serving(settings) as served:
            clients = [await connect(served.url, ClipTrack(noise_clip(), fps=10), keep_frames=1) for _ in range(2)]
            labels = {clients[0].stream: "happy", clients[1].stream: "sad"}
            with StubbedWorker(redis_server.url, settings, lambda gray, key: [face((10, 10, 50, 50), labels[key[0]])]):
                await until(lambda: all(len(c.results) >= 3 for c in clients), 60, "results of both streams")
            reply = settings.keys.results(served.hub.id)
            await redis.xadd(reply, Result("gw-gone-1", 0, time.time(), "m").encode())
            await redis.xadd(reply, {"v": "1", "json": "{broken"})
            await redis.xadd(reply, {"v": str(WIRE_VERSION), "json": "[]"})  # JSON, but not a result
            face_of_3 = {"box": [1, 2, 3], "label": "happy", "score": 1.0, "scores": {}}
            bad_box = {"stream": clients[0].stream, "seq": 99, "ts": time.time(), "model_version": "m"}
            await redis.xadd(reply, {"v": str(WIRE_VERSION), "json": json.dumps(bad_box | {"faces": [face_of_3]})})
            await redis.xadd(reply, Result("gw-gone-2", 0, time.time(), "m").encode())  # read after the bad ones
            await until(lambda: 'outcome="unknown_stream"} 2.0' in served.hub.metrics.render().decode(), 30, "drops")
            metrics = served.hub.metrics.render().decode()
            for client in clients:
                await client.close()
            await until(lambda: not served.hub.sessions, 30, "sessions closed")
            length = await redis.xlen(reply)
        exists = await redis.exists(reply)
        await redis.aclose()
        return clients, labels, metrics, length, exists

    clients, labels, metrics, length, exists = run(scenario())
    for client in clients:
        assert {r["stream"] for r in client.results} == {client.stream}
        assert {r["faces"][0]["label"] for r in client.results} == {labels[client.stream]}
    assert 'emostream_gateway_results_total{outcome="unknown_stream"} 2.0' in metrics
    assert 'emostream_gateway_results_total{outcome="malformed"} 3.0' in metrics, "named and dropped; reading goes on"
    assert length == 0, "read results are deleted from the reply stream"
    assert exists == 0, "the reply stream is deleted when the gateway stops"


def test_cameras_that_draw_their_own_labels_get_tracked_results_and_no_video(redis_server):
    frames, truth = make_clip(validation_faces(("happy",), per_class=1), 20)
    box = truth[0][0].box
    settings = settings_for(redis_server)

    async def scenario():
        async with serving(settings) as served:
            asked = await connect(served.url, ClipTrack(frames, fps=10), return_video=False)
            send_only = await connect(served.url, ClipTrack(frames, fps=10), direction="sendonly")
            returned = await connect(served.url, ClipTrack(frames, fps=10))
            clients = (asked, send_only, returned)
            with StubbedWorker(redis_server.url, settings, [face(box, "happy")]):
                await until(lambda: all(len(c.results) >= 5 for c in clients), 60, "results of every camera")
                await until(lambda: returned.frames_seen > 5, 60, "video of the camera that asked for it")
            described = {s.stream: s.describe()["return_video"] for s in served.hub.sessions.values()}
            for client in clients:
                await client.close()
        return clients, described

    (asked, send_only, returned), described = run(scenario())
    assert (asked.return_video, send_only.return_video, returned.return_video) == (False, False, True)
    assert described == {asked.stream: False, send_only.stream: False, returned.stream: True}
    assert asked.frames_seen == send_only.frames_seen == 0, "no video is encoded back"
    for client in (asked, send_only):
        faces = [r["faces"][0] for r in client.results]
        assert {f["track"] for f in faces} == {1} and {f["smoothed"]["label"] for f in faces} == {"happy"}


async def _bad_return_video(url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http:
        body = {"sdp": "v=0", "type": "offer", "return_video": "no"}
        async with http.post(f"{url}/api/offer", json=body) as response:
            return response.status, await response.json()


def test_a_return_video_that_is_not_a_boolean_is_refused(redis_server):
    async def scenario():
        async with serving(settings_for(redis_server)) as served:
            return await _bad_return_video(served.url)

    status, body = run(scenario())
    assert status == 400 and "return_video" in body["error"]


def test_closed_deleted_and_vanished_clients_are_cleaned_up(redis_server):
    settings = settings_for(redis_server, stream_idle_timeout=2.0)

    async def scenario():
        async with serving(settings) as served, aiohttp.ClientSession() as http:
            sessions = served.hub.sessions
            closing = await connect(served.url, ClipTrack(noise_clip(), fps=10), keep_frames=1)
            deleted = await connect(served.url, ClipTrack(noise_clip(), fps=10), keep_frames=1)
            vanishing = await asyncio.create_subprocess_exec(
                sys.executable, f"{REPO}/tests/gateway_helpers.py", served.url, stdout=asyncio.subprocess.PIPE
            )
            try:
                vanished = (await asyncio.wait_for(vanishing.stdout.readline(), 60)).decode().strip()
                streams = [closing.stream, deleted.stream, vanished]
                await until(lambda: all(sessions[s].sampler.stats.sent for s in streams), 60, "frames of all three")
                pcs = {s: sessions[s].pc for s in streams}
                await closing.close()
                async with http.delete(f"{served.url}/api/streams/{deleted.stream}") as response:
                    assert response.status == 200
                vanishing.kill()
                await until(lambda: not sessions, 60, "every session closed")
            finally:
                if vanishing.returncode is None:
                    vanishing.kill()
                await vanishing.wait()
                await deleted.close()
            return {s: pc.connectionState for s, pc in pcs.items()}, served.hub.metrics.render().decode()

    states, metrics = run(scenario())
    assert set(states.values()) == {"closed"}, "every peer connection is closed"
    assert "emostream_active_streams 0.0" in metrics


def test_offers_beyond_max_streams_get_503(redis_server):
    async def scenario():
        async with serving(settings_for(redis_server, max_streams=1)) as served:
            first = await connect(served.url, ClipTrack(noise_clip(), fps=5), keep_frames=1)
            with pytest.raises(AssertionError, match=r"refused with 503.*at most 1 streams"):
                await connect(served.url, ClipTrack(noise_clip(), fps=5), keep_frames=1)
            open_streams = list(served.hub.sessions)
            await first.close()
            return first, open_streams

    first, open_streams = run(scenario())
    assert open_streams == [first.stream]
