"""Frame-to-label latency and throughput of the queue + workers under N concurrent 10 fps streams.

    python benchmarks/latency.py [--streams 1 4 8 16] [--workers 1 2] [--seconds 20]

Starts the embedded stack (private redis-server + worker processes), then plays N camera
streams at 10 fps each: every 100 ms one 640x480 grayscale JPEG of a real face per stream (each
face stays a second, with fresh camera noise on every frame) is
queued with its capture time, exactly as the gateway does, and the answers are read back
from the reply stream. Latency is capture time to answer received; frames the workers drop
as stale (older than the latency budget) are reported as drops.
"""

import argparse
import dataclasses
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import cv2
import numpy as np
import redis
from clips import make_clip, validation_faces

from emostream.config import Settings
from emostream.stack import EmbeddedStack
from ingest.wire import Frame, Result

FPS = 10.0


def send(settings: Settings, streams: int, until: float, warmup_end: float, frames: list[np.ndarray]) -> int:
    """Queue one frame per stream every 1/FPS s until ``until``; frames before ``warmup_end`` get negative seqs."""
    client = redis.Redis.from_url(settings.redis_url)
    keys = settings.keys
    sent = seq = 0
    next_tick = time.monotonic()
    while next_tick < until:
        time.sleep(max(0.0, next_tick - time.monotonic()))
        measuring = next_tick >= warmup_end
        pipe = client.pipeline(transaction=False)
        for s in range(streams):
            stream = f"bench-{s}"
            frame = Frame(
                stream,
                seq if measuring else -1 - seq,
                time.time(),
                frames[(seq + s) % len(frames)],
                keys.results(stream),
            )
            pipe.xadd(
                keys.frames,
                frame.encode(quality=settings.jpeg_quality),
                maxlen=settings.frames_maxlen,
                approximate=True,
            )
        pipe.execute()
        sent += streams if measuring else 0
        seq += 1
        next_tick += 1.0 / FPS
    client.close()
    return sent


def play(settings: Settings, streams: int, seconds: float, frames: list[np.ndarray]) -> dict:
    """Send from a thread (paced), read answers here; a blocking read returns as soon as an answer is in."""
    client = redis.Redis.from_url(settings.redis_url)
    start_id = f"{time.time_ns() // 1_000_000}-0"  # not "$": it would skip what arrives between two reads
    replies = {settings.keys.results(f"bench-{s}"): start_id for s in range(streams)}
    latencies: list[float] = []
    warmup_end = time.monotonic() + 3.0
    with ThreadPoolExecutor(1) as pool:
        sending = pool.submit(send, settings, streams, warmup_end + seconds, warmup_end, frames)
        deadline = warmup_end + seconds + 2.0  # answers still in flight after the last frame
        while time.monotonic() < deadline:
            for key, entries in client.xread(replies, block=100) or []:
                for entry_id, fields in entries:
                    replies[key.decode()] = entry_id
                    result = Result.decode(fields)
                    if result.seq >= 0:
                        latencies.append(time.time() - result.ts)
        sent = sending.result()
    client.close()
    ms = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {
        "streams": streams,
        "sent": sent,
        "answered": len(latencies),
        "fps": len(latencies) / seconds,
        "p50": np.percentile(ms, 50),
        "p95": np.percentile(ms, 95),
        "p99": np.percentile(ms, 99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    faces = validation_faces(("happy", "surprise", "neutral", "sad"), per_class=5)
    clip, _ = make_clip(faces, 10 * len(faces), hold=10, sensor_noise=2)
    frames = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in clip]
    print("| workers | streams x 10 fps | frames sent | answered | answered/s | p50 ms | p95 ms | p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for workers in args.workers:
        with EmbeddedStack(dataclasses.replace(Settings.from_env(), redis_url=None), workers=workers) as stack:
            for streams in args.streams:
                r = play(stack.settings, streams, args.seconds, frames)
                print(
                    f"| {workers} | {streams} | {r['sent']} | {r['answered']} ({r['answered'] / max(1, r['sent']):.0%})"
                    f" | {r['fps']:.1f} | {r['p50']:.0f} | {r['p95']:.0f} | {r['p99']:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
