"""What a live camera costs the server, with labels drawn on returned video or by the browser.

    python benchmarks/live_modes.py [--cameras 1 4] [--seconds 20] [--fps 30]

Runs a private ``redis-server``, one real ``emostream worker`` (the live model, one thread) and an
``emostream gateway``; this process plays N aiortc cameras (640x480 at ``--fps``, a loop of real
FER2013 faces with camera noise), each in both modes:

- ``server video``: the page's default; the gateway decodes the camera, samples frames to Redis,
  draws the labels on every frame and encodes the video back;
- ``browser draws``: what ``?overlay=browser`` does: the camera offered send-only and sent at the
  gateway's sampling rate (10 frames/s; the page's own preview keeps the camera's rate); the
  gateway encodes nothing back and the page draws the results.

Reports the server's CPU (gateway, worker and Redis processes, from ``/proc``) per camera-second,
results per second per camera and capture-to-result latency (from the gateway's capture stamp
to the result's arrival here, on one machine's clock), p50 and p99.
"""

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import aiohttp
import aiortc  # noqa: F401  before anything that may load TensorFlow
import numpy as np
from capacity import cpu_seconds
from clips import make_clip, validation_faces
from gateway_helpers import ClipTrack, GatewayProcess, connect
from processes import ready_worker

from emostream.config import Settings
from emostream.redis_server import RedisServer

SAMPLE_FPS = Settings().sample_fps
MODES = {
    "server video": ({"direction": "sendrecv"}, None),
    "browser draws": ({"direction": "sendonly", "return_video": False}, SAMPLE_FPS),
}
"""Offer options and the rate frames are sent at (None: the camera's)."""
WARM_UP_S = 6.0
"""ICE, DTLS, the first keyframes and the worker's first batches."""


class Latencies:
    """Capture-to-arrival times of the results that arrive while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.seconds: list[float] = []

    def arrived(self, message: str) -> None:
        if self.on:
            self.seconds.append(time.time() - float(message.split('"ts":', 1)[1].split(",", 1)[0]))


async def measure_mode(
    url: str, pids: dict[str, int], cameras: int, seconds: float, fps: float, clip, mode: str
) -> dict:
    options, send_fps = MODES[mode]
    clients = [
        await connect(url, ClipTrack(clip, fps=min(fps, send_fps or fps)), keep_frames=1, **options)
        for _ in range(cameras)
    ]
    latencies = Latencies()
    for client in clients:
        client.channel.on("message", latencies.arrived)
    await asyncio.sleep(WARM_UP_S)
    latencies.on = True
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    received = await frames_received(url)
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - started
    used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    received = await frames_received(url) - received
    latencies.on = False
    for client in clients:
        await client.close()
    await asyncio.sleep(2.0)  # the gateway closes the sessions
    late = np.array(latencies.seconds)
    return {
        **{name: cpu / elapsed / cameras for name, cpu in used.items()},
        "total": sum(used.values()) / elapsed / cameras,
        "results/s": len(late) / elapsed / cameras,
        "frames/s": received / elapsed / cameras,
        "p50": float(np.percentile(late, 50)) if len(late) else float("nan"),
        "p99": float(np.percentile(late, 99)) if len(late) else float("nan"),
    }


async def measure(url: str, pids: dict[str, int], cameras: int, seconds: float, fps: float, clip) -> dict:
    return {mode: await measure_mode(url, pids, cameras, seconds, fps, clip, mode) for mode in MODES}


async def frames_received(url: str) -> int:
    """Camera frames the gateway has received so far, over its open streams."""
    async with aiohttp.ClientSession() as http, http.get(f"{url}/api/streams") as response:
        return sum(stream["frames_received"] for stream in (await response.json())["streams"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--fps", type=float, default=30.0)
    args = parser.parse_args()
    faces = validation_faces(("happy", "surprise", "neutral", "sad"), per_class=2)
    clip, _ = make_clip(faces, 60, hold=15, sensor_noise=3.0)
    with (
        RedisServer() as redis_server,
        ready_worker({"REDIS_URL": redis_server.url}) as (worker, _),
        GatewayProcess(redis_server.url) as gateway,
    ):
        pids = {"gateway": gateway.process.pid, "worker": worker.pid, "redis": redis_server.process.pid}
        print(
            "| cameras | mode | frames/s received per camera | server cores per camera (gateway + worker + Redis) "
            "| results/s per camera | capture to result p50 / p99 |"
        )
        print("|---:|---|---:|---:|---:|---:|")
        for cameras in args.cameras:
            rows = asyncio.run(measure(gateway.url, pids, cameras, args.seconds, args.fps, clip))
            for mode, row in rows.items():
                print(
                    f"| {cameras} | {mode} | {row['frames/s']:.1f} | **{row['total']:.3f}** ({row['gateway']:.3f} "
                    f"+ {row['worker']:.3f} + {row['redis']:.3f}) | {row['results/s']:.1f} "
                    f"| {row['p50'] * 1000:.0f} / {row['p99'] * 1000:.0f} ms |"
                )
            ratio = rows["browser draws"]["total"] / rows["server video"]["total"]
            print(f"{cameras} camera(s): browser-drawn labels cost {ratio:.2f}x the server video's CPU")


if __name__ == "__main__":
    main()
