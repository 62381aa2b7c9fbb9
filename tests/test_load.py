"""Load: 16 aiortc camera streams of real faces through a gateway process and a real worker process.

Prints the throughput, the frame-to-label latency seen by the clients, the drops by reason and how late
the gateway's and the clients' event loops ran (which side falls behind when the machine is short), and
checks that no stream starves (each one gets results) and that every frame the gateway queued is
accounted for: answered, or dropped and counted by a worker. No timing is asserted.
"""

import asyncio
import json
import time
import urllib.request

import numpy as np
import pytest
import redis
from clips import make_clip, validation_faces
from gateway_helpers import ClipTrack, GatewayProcess, connect, run, until
from scraped import late_ticks, parse, scrape, total

from emostream import loop_lag
from emostream.config import Settings
from emostream.metrics import Metrics
from emostream.redis_server import RedisServer
from emostream.stack import EmbeddedStack

STREAMS = 16
STREAMING_S = 30.0
WORKER_DROPS = ("stale", "malformed", "reclaimed_stale")


@pytest.mark.slow
def test_sixteen_streams_all_get_results_and_every_frame_is_accounted_for(tmp_path):
    faces = validation_faces(("happy", "surprise", "neutral", "sad"), per_class=2)
    frames, _ = make_clip(faces, 40, size=(320, 240), scale=2, hold=5)
    with RedisServer() as server:
        settings = Settings(redis_url=server.url, model_store_root=tmp_path / "store")
        env = {
            "EMOSTREAM_MODEL_STORE": str(settings.model_store_root),
            "EMOSTREAM_MAX_STREAMS_PER_CLIENT": str(STREAMS),  # every client of the test has the same address
            "EMOSTREAM_OFFER_BURST": str(STREAMS),
        }
        with EmbeddedStack(settings, workers=1), GatewayProcess(server.url, **env) as gateway:
            queue = redis.Redis.from_url(server.url)
            clients_loop = Metrics(process_collectors=False)  # the 16 clients' own event loop, for the printout

            async def scenario():
                clients, latencies = [], []
                watching = asyncio.create_task(loop_lag.watch(clients_loop.event_loop_lag))
                for index in range(STREAMS):
                    clip = frames[index % len(frames) :] + frames[: index % len(frames)]
                    client = await connect(gateway.url, ClipTrack(clip, fps=10), keep_frames=1)
                    client.channel.on("message", lambda m: latencies.append(time.time() - json.loads(m)["ts"]))
                    clients.append(client)
                try:
                    await until(lambda: all(c.results for c in clients), 240, "results on every stream")
                    marks = [len(c.results) for c in clients]
                    started = time.monotonic()
                    await asyncio.sleep(STREAMING_S)
                    window = time.monotonic() - started
                    counts = [len(c.results) - m for c, m in zip(clients, marks, strict=True)]
                finally:
                    watching.cancel()
                    for client in clients:
                        await client.close()
                return counts, window, latencies

            counts, window, latencies = run(scenario(), timeout=600)
            clients_samples = parse(clients_loop.render().decode())

            def drained() -> bool:  # workers delete every frame they finish, answered or dropped
                return queue.xlen(settings.keys.frames) == 0

            run(until(drained, 60, "the workers done with every queued frame"))
            with urllib.request.urlopen(f"{gateway.url}/api/targets", timeout=10) as response:
                targets = json.load(response)
            workers = [t["targets"][0] for t in targets if t["labels"]["role"] == "worker"]
            gateway_samples = scrape(f"127.0.0.1:{gateway.port}")
            worker_samples = [scrape(address) for address in workers]
            queue.close()

    sampled = total(gateway_samples, "emostream_frames_sampled_total")
    published = sum(total(w, "emostream_results_published_total") for w in worker_samples)
    worker_drops = {
        r: sum(total(w, "emostream_frames_dropped_total", reason=r) for w in worker_samples) for r in WORKER_DROPS
    }
    gateway_drops = {
        r: total(gateway_samples, "emostream_frames_dropped_total", reason=r)
        for r in ("superseded", "backpressure", "decode_error", "redis_unavailable")
    }
    read_back = total(gateway_samples, "emostream_gateway_results_total")
    ms = np.array(latencies) * 1000
    received = total(gateway_samples, "emostream_frames_received_total")
    loops = {"gateway": late_ticks(gateway_samples), "clients": late_ticks(clients_samples)}
    print(
        f"\n{STREAMS} streams, 1 worker, {window:.0f} s: {sum(counts) / window:.1f} results/s "
        f"(per stream min {min(counts) / window:.2f}, max {max(counts) / window:.2f}); "
        f"latency p50 {np.percentile(ms, 50):.0f} ms, p90 {np.percentile(ms, 90):.0f} ms, "
        f"p99 {np.percentile(ms, 99):.0f} ms\nframes: received {received:.0f}, "
        f"sampled {sampled:.0f}, answered {published:.0f}; dropped at the gateway {gateway_drops}, "
        f"by workers {worker_drops}\nevent loop ticks (over 0.1 s late, over 0.5 s late): {loops}"
    )
    assert len(workers) == 1
    assert all(count > 0 for count in counts), f"a stream starved: {counts}"
    assert sampled == published + sum(worker_drops.values()), "every queued frame is answered or counted dropped"
    assert read_back == published, "every answer reached the gateway"
