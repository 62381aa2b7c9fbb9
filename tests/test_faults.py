"""Faults under load, with real processes: a worker killed with SIGKILL, Redis restarted; and a
gateway's Redis connection gone silent.

Several aiortc clients stream real faces through a gateway process to worker processes; the
checks are that no stream stalls, that no frame is answered twice, and that what was lost is
reclaimed or counted.
"""

import asyncio
import os
import signal
import threading
import time
from collections import Counter

import numpy as np
import pytest
import redis
from clips import make_clip, validation_faces
from factories import brightness, brightness_store
from gateway_helpers import ClipTrack, GatewayProcess, connect, run, until
from silent_proxy import SilentProxy

from emostream import redis_client as clients
from emostream.config import Settings
from emostream.metrics import Metrics
from emostream.redis_server import RedisServer
from emostream.stack import EmbeddedStack
from gateway.results import ResultReader
from ingest.wire import Frame, Result
from workers.classify import LiveModel
from workers.haar import HaarDetector
from workers.worker import Worker

STREAMS = 3
READY_S = 240.0


@pytest.fixture(scope="module")
def face_frames():
    frames, _ = make_clip(validation_faces(("happy", "surprise"), per_class=3), frames=30, hold=5)
    return frames


def _no_duplicates(clients) -> None:
    for client in clients:
        seqs = Counter(r["seq"] for r in client.results)
        assert {s: n for s, n in seqs.items() if n > 1} == {}, f"{client.stream}: frames answered twice"
        assert {r["stream"] for r in client.results} == {client.stream}


async def _streaming(url: str, frames, count: int):
    return [await connect(url, ClipTrack(frames, fps=10), keep_frames=2) for _ in range(count)]


async def _progress(clients, more: int, what: str) -> None:
    marks = [len(c.results) for c in clients]
    await until(lambda: all(len(c.results) >= m + more for c, m in zip(clients, marks, strict=True)), READY_S, what)


@pytest.mark.slow
def test_a_worker_killed_mid_stream_loses_no_stream(tmp_path, face_frames):
    with RedisServer() as server:
        settings = Settings(redis_url=server.url, model_store_root=tmp_path / "store")
        with (
            EmbeddedStack(settings, workers=2) as stack,
            GatewayProcess(server.url, EMOSTREAM_MODEL_STORE=str(settings.model_store_root)) as gateway,
        ):
            client = redis.Redis.from_url(server.url)
            victim = stack.children["worker-0"]
            victim_name = next(b["name"] for b in stack.live_workers(client) if b["name"].endswith(f"-{victim.pid}"))

            async def scenario():
                clients = await _streaming(gateway.url, face_frames, STREAMS)
                try:
                    await _progress(clients, 10, "results from every stream")
                    os.kill(victim.pid, signal.SIGKILL)
                    await _progress(clients, 20, "results after the kill, on every stream")
                    await until(
                        lambda: (
                            not any(
                                c["name"].decode() == victim_name and c["pending"]
                                for c in client.xinfo_consumers(settings.keys.frames, settings.keys.group)
                            )
                        ),
                        60,
                        "the dead worker's pending frames reclaimed",
                    )
                    _no_duplicates(clients)
                finally:
                    for c in clients:
                        await c.close()

            run(scenario(), timeout=READY_S * 2)
            victim.wait(5)
            client.close()


@pytest.mark.slow
def test_redis_restart_under_load_recovers_by_itself(tmp_path, face_frames):
    with RedisServer() as server:
        settings = Settings(redis_url=server.url, model_store_root=tmp_path / "store")
        with (
            EmbeddedStack(settings, workers=1),
            GatewayProcess(server.url, EMOSTREAM_MODEL_STORE=str(settings.model_store_root)) as gateway,
        ):

            async def scenario():
                clients = await _streaming(gateway.url, face_frames, 2)
                try:
                    await _progress(clients, 5, "results before the outage")
                    server.stop()
                    seen_before = [c.frames_seen for c in clients]
                    await until(  # 2 s of the 10 fps camera's video while Redis is down
                        lambda: all(c.frames_seen >= seen + 20 for c, seen in zip(clients, seen_before, strict=True)),
                        30,
                        "the returned video to keep flowing while Redis is down",
                    )
                    server.start()
                    await _progress(clients, 10, "results after Redis came back")
                    _no_duplicates(clients)
                finally:
                    for c in clients:
                        await c.close()

            run(scenario(), timeout=READY_S * 2)


def test_a_gateway_whose_redis_connection_goes_silent_reconnects(redis_server, redis_client):
    """The connection's far end vanishes without closing it (a dead host, a NAT that forgot it): the
    result reader's blocked XREAD must give up and read on a new connection, not wait for ever."""
    key = Settings().keys.results("gw-silent")
    delivered: list[Result] = []

    async def scenario() -> None:
        async with SilentProxy(redis_server.port) as proxy:
            client = clients.connect_async(f"redis://127.0.0.1:{proxy.port}/0")
            reader = ResultReader(client, key, lambda r: delivered.append(r) or True, Metrics())
            task = asyncio.create_task(reader.run())
            try:
                await until(lambda: proxy.connections, 10, "the reader connected")
                proxy.silence()
                result = Result("cam", 1, time.time(), "v1", [], "w", {}, [64, 48])
                redis_client.xadd(key, result.encode())
                await until(lambda: delivered, clients.TIMEOUT_S * 3, "the result read on a new connection")
            finally:
                task.cancel()
                await client.aclose()

    run(scenario())
    assert [r.seq for r in delivered] == [1]


def test_a_worker_whose_redis_connection_goes_silent_reconnects(redis_server, redis_client, tmp_path):
    """As the gateway's: a worker blocked reading on a connection gone silent gives up and reads on a new one."""
    settings = Settings(redis_url=redis_server.url, model_store_root=tmp_path / "store", max_frame_age=30.0)
    brightness_store(settings.model_store_root)
    reply = settings.keys.results("s")

    async def scenario() -> None:
        async with SilentProxy(redis_server.port) as proxy:
            client = clients.connect(f"redis://127.0.0.1:{proxy.port}/0")
            worker = Worker(settings, client, HaarDetector(320), LiveModel(settings.model_store()))
            thread = threading.Thread(target=worker.run, daemon=True)
            thread.start()
            try:
                await until(lambda: proxy.connections, 10, "the worker connected")
                await asyncio.sleep(0.5)  # blocked in its read
                proxy.silence()
                face = np.full((96, 96), brightness(4), np.uint8)
                for seq in range(int(clients.TIMEOUT_S * 4)):  # the first may go to the silent connection
                    redis_client.xadd(settings.keys.frames, Frame("s", seq, time.time(), face, reply).encode())
                    if redis_client.xlen(reply):
                        break
                    await asyncio.sleep(1)
                await until(lambda: redis_client.xlen(reply), 5, "a frame answered on a new connection")
            finally:
                worker.stop()
                await asyncio.to_thread(thread.join, 15)

    run(scenario())
    seqs = [Result.decode(fields).seq for _, fields in redis_client.xrange(reply)]
    assert seqs and len(seqs) == len(set(seqs)), "answered, each at most once"
