"""The gateway's bounds, with real aiortc clients, a real gateway and a real Redis: frames in flight per
stream (backpressure), offers per client (rate and streams), the results channel both ways, and SIGTERM."""

import asyncio
import signal
import time

import aiohttp
import numpy as np
import redis
import redis.asyncio as aioredis
from aiortc.rtcrtpreceiver import RemoteStreamTrack
from gateway_helpers import ClipTrack, GatewayProcess, WireWorker, connect, face, run, serving, until
from stand_ins import StubbedWorker
from test_gateway_http import call, settings_for, video_offer
from test_gateway_sampler import level_frame, sampler_for

from gateway.limits import ClientRateLimiter, TokenBucket


def camera(fps: float = 10.0) -> ClipTrack:
    rng = np.random.default_rng(0)
    return ClipTrack([rng.integers(0, 255, (120, 160, 3), np.uint8) for _ in range(5)], fps=fps)


def dropped(metrics: str, reason: str) -> float:
    line = f'emostream_frames_dropped_total{{reason="{reason}"}} '
    return float(next(row for row in metrics.splitlines() if row.startswith(line)).split()[-1])


def test_a_stream_keeps_at_most_its_bound_of_frames_unanswered_and_resumes_when_answered(redis_server):
    settings = settings_for(redis_server, max_inflight_per_stream=4, max_frame_age=600)

    async def scenario():
        async with serving(settings) as served, aiohttp.ClientSession() as http:
            queue = aioredis.Redis.from_url(redis_server.url)
            client = await connect(served.url, camera(), keep_frames=1)
            (session,) = served.hub.sessions.values()
            await until(lambda: session.sampler and session.sampler.stats.backpressured >= 10, 60, "skipped samples")
            queued = await queue.xlen(settings.keys.frames)
            _, _, metrics = await call(http, "GET", f"{served.url}/metrics")
            with StubbedWorker(redis_server.url, settings, [face((10, 10, 50, 50), "happy")]) as worker:
                await until(lambda: len(client.results) >= 10, 60, "results once a worker answers")
                await until(lambda: session.sampler.stats.sent >= 14, 60, "more frames queued")
            await client.close()
            await queue.aclose()
            return queued, session.sampler.stats, metrics, worker.answered

    queued, stats, metrics, answered = run(scenario())
    assert queued == 4, "no worker answers: the stream stops at its bound"
    assert dropped(metrics, "backpressure") >= 10, "the skipped samples are counted"
    assert stats.sent >= 14 and answered >= 10, "answers make room again"


def test_frames_never_answered_stop_counting_so_a_stream_does_not_stall(redis_server):
    async def scenario():
        track = RemoteStreamTrack(kind="video")
        sampler, queue, settings = sampler_for(
            track, redis_server.url, sample_fps=1000, max_inflight_per_stream=2, max_frame_age=0.05
        )
        task = asyncio.create_task(sampler.run())
        for index in range(1200):  # slots free ~1 s after each pair is queued: 6 sent after ~2 s
            track._queue.put_nowait(level_frame(index % 250))
            await asyncio.sleep(0.005)
            if sampler.stats.sent >= 6:
                break
        track._queue.put_nowait(None)
        await asyncio.wait_for(task, 30)
        queued = await queue.xlen(settings.keys.frames)
        await queue.aclose()
        return sampler.stats, queued

    stats, queued = run(scenario())
    assert stats.sent == queued >= 6, "frames lost (never answered) are forgotten once too old to be answered"
    assert stats.backpressured > 0


def test_offers_are_rate_limited_per_client_with_retry_after(redis_server):
    async def scenario():
        settings = settings_for(redis_server, offer_rate=6, offer_burst=2)
        async with serving(settings) as served, aiohttp.ClientSession() as http:
            answers = []
            for _ in range(3):
                async with http.post(f"{served.url}/api/offer", data=b"{not json") as response:
                    answers.append((response.status, response.headers.get("Retry-After"), await response.json()))
            return answers

    first, second, third = run(scenario())
    assert first[0] == second[0] == 400, "within the burst, offers are answered (these are malformed)"
    assert third[0] == 429 and "too many offers" in third[2]["error"]
    assert 1 <= int(third[1]) <= 10, "Retry-After says when a token is back (6 a minute: 10 s)"


def test_streams_per_client_are_limited(redis_server):
    """A client at its limit is refused for good while its streams are live (429 without Retry-After), and
    told when to retry while one of them was answered but never connected (a page that left mid-offer):
    that one closes by itself."""

    async def scenario():
        async with serving(settings_for(redis_server, max_streams_per_client=1)) as served:
            first = await connect(served.url, camera(), keep_frames=1)
            session = served.hub.sessions[first.stream]
            await until(lambda: session.sampler and session.sampler.stats.taken, 30, "its first frame sampled")
            try:
                await connect(served.url, camera(), keep_frames=1)
            except AssertionError as refused:
                second = str(refused)
            else:
                second = "accepted"
            open_streams = list(served.hub.sessions)
            await first.close()
            await until(lambda: not served.hub.sessions, 30, "the first stream closed")
            async with aiohttp.ClientSession() as http:
                offer = {"type": "offer", "sdp": await video_offer()}
                left = await call(http, "POST", f"{served.url}/api/offer", json=offer)  # and never connects
                async with http.post(f"{served.url}/api/offer", json=offer) as response:
                    after_orphan = response.status, response.headers.get("Retry-After"), await response.json()
            return second, open_streams, first.stream, left, after_orphan

    second, open_streams, first, left, after_orphan = run(scenario())
    assert second.startswith("offer refused with 429") and "at most 1 streams" in second
    assert "not connected yet" not in second, "its stream is live: no retry will help"
    assert open_streams == [first]
    assert left[0] == 200
    status, retry, body = after_orphan
    assert status == 429 and retry is not None and 1 <= int(retry) <= 30, after_orphan
    assert f"1 not connected yet: try again in {retry} s" in body["error"]


def test_results_reach_the_browser_no_faster_than_the_sampling_rate(redis_server):
    settings = settings_for(redis_server, sample_fps=2, max_inflight_per_stream=1)

    async def scenario():
        async with serving(settings) as served, aiohttp.ClientSession() as http:
            queue = aioredis.Redis.from_url(redis_server.url)
            worker = WireWorker(queue, settings.keys)
            await worker.join()
            client = await connect(served.url, camera(), keep_frames=1)
            await until(lambda: client.channel.readyState == "open", 30, "the results channel open")
            frames = []
            while not frames:
                frames = await worker.read(count=1)
            for _ in range(40):  # a faulty producer answering one frame over and over
                await worker.answer(frames[0][1], [])
            outcomes: dict[str, float] = {}
            deadline = time.monotonic() + 30
            while sum(outcomes.values()) < 40:
                assert time.monotonic() < deadline, f"the 40 results were not all counted: {outcomes}"
                _, _, metrics = await call(http, "GET", f"{served.url}/metrics")
                outcomes = {
                    row.split('"')[1]: float(row.split()[-1])
                    for row in metrics.splitlines()
                    if row.startswith("emostream_gateway_results_total{")
                }
                await asyncio.sleep(0.1)
            delivered = served.hub.sessions[client.stream].results_sent
            await until(lambda: len(client.results) == delivered, 30, "the delivered results at the client")
            await client.close()
            await queue.aclose()
            return outcomes, delivered

    outcomes, delivered = run(scenario())
    assert outcomes["rate_limited"] > 0, "a stream gets no more results than its sampling rate allows"
    assert outcomes["delivered"] == delivered and delivered + outcomes["rate_limited"] == 40, outcomes


def test_a_browser_flooding_the_results_channel_is_disconnected(redis_server):
    async def scenario():
        async with serving(settings_for(redis_server)) as served:
            client = await connect(served.url, camera(), keep_frames=1)
            await until(lambda: client.channel.readyState == "open", 30, "the results channel open")
            for index in range(200):
                client.channel.send(f"spam {index}")
            await until(lambda: not served.hub.sessions, 30, "the flooding stream closed")
            await client.close()

    run(scenario())


def test_other_data_channels_are_closed_and_opening_many_disconnects(redis_server):
    async def scenario():
        async with serving(settings_for(redis_server)) as served:
            client = await connect(served.url, camera(), keep_frames=1)
            await until(lambda: client.channel.readyState == "open", 30, "the results channel open")
            extra = client.pc.createDataChannel("results")  # a second one, uncounted before
            await until(lambda: extra.readyState == "closed", 30, "the second channel closed by the gateway")
            kept = bool(served.hub.sessions) and client.channel.readyState == "open"
            for index in range(200):
                client.pc.createDataChannel(f"spam {index}")
            await until(lambda: not served.hub.sessions, 30, "the stream opening channels closed")
            await client.close()
            return kept

    assert run(scenario()), "one channel too many is closed, not the stream"


def test_token_buckets_refill_and_the_client_table_stays_bounded():
    now = [0.0]
    bucket = TokenBucket(rate=2.0, capacity=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.wait() == 0.5
    now[0] = 0.5
    assert bucket.take() and not bucket.take()
    limiter = ClientRateLimiter(per_minute=60, burst=1, max_clients=100, clock=lambda: now[0])
    for address in range(1000):
        limiter.acquire(f"10.0.{address // 256}.{address % 256}")
    assert len(limiter.buckets) <= 100
    assert ClientRateLimiter(per_minute=0, burst=1).acquire("any") == 0.0, "0 means unlimited"


def test_sigterm_closes_every_stream_and_deletes_the_reply_stream(redis_server):
    settings = settings_for(redis_server)
    with GatewayProcess(redis_server.url, EMOSTREAM_KEY_PREFIX="test") as gateway:

        async def scenario():
            clients = [await connect(gateway.url, camera(), keep_frames=1) for _ in range(2)]
            with StubbedWorker(redis_server.url, settings, [face((10, 10, 50, 50), "happy")]):
                await until(lambda: all(len(c.results) >= 3 for c in clients), 60, "results on every stream")
            gateway.process.send_signal(signal.SIGTERM)
            await until(lambda: gateway.process.poll() is not None, 30, "the gateway to exit")
            await until(
                lambda: all(c.pc.connectionState in ("closed", "failed") for c in clients), 60, "clients disconnected"
            )
            for c in clients:
                await c.close()

        run(scenario())
        errors = gateway.process.stderr.read()
        code = gateway.stop()
    leftover = redis.Redis.from_url(redis_server.url).keys("test:results:*")
    assert code == 0, errors
    assert "Traceback" not in errors and "stopped" in errors
    assert leftover == [], "the reply stream is deleted"
