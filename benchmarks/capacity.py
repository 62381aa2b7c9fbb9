"""The measurements behind docs/scaling.md: what one camera costs each part of the pipeline.

    python benchmarks/capacity.py [--only wire redis worker gateway] [--seconds 10] [--cameras 2 4]
                                  [--camera-fps 10] [--json]

Every figure is CPU time (or bytes) per frame, so it can be scaled to cameras; CPU time is read
from ``/proc`` for the process doing the work, which keeps the figures usable on a busy machine
(another process competing for the cores stretches wall time, much less CPU time per frame).

- ``wire``: the size of one 640x480 grayscale frame on the wire, JPEG at ``EMOSTREAM_JPEG_QUALITY``
  (80) against raw 8-bit, over the test clip of real FER2013 faces (``tests/clips.py``).
- ``redis``: one frame's whole life in a private ``redis-server``, with the real commands: XADD by
  the producer (pipelined, as the gateway's sampler does per frame), XREADGROUP COUNT 16 by a
  consumer, the workers' own publish-and-ack Lua script (XACK, XADD of a result, EXPIRE, XDEL),
  XREAD and XDEL of the result by the producer. Reports redis-server CPU per frame and network
  bytes per frame (``INFO``), and the rate this single client loop reached.
- ``worker``: the worker's hot path (decode the wire JPEG, the configured detector on every frame,
  FER-matched crops, one classifier call per batch of 16) on one core: LiteRT and OpenCV limited to one thread and the
  process pinned to one CPU; frames per CPU second and per wall second.
- ``gateway``: an ``emostream gateway`` process serving N aiortc cameras (640x480, ``--camera-fps``) from this
  process, each answered by the real worker with stubbed models (``tests/stand_ins.py``); the gateway's CPU seconds
  per camera-second (VP8 decode, sampling, JPEG encode, overlay, VP8 encode of the returned video), and how late its
  event loop ran meanwhile (``emostream_event_loop_lag_seconds``: the camera count where it falls behind).
"""

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import aiortc  # noqa: F401  before TensorFlow (as in tests/conftest.py): libsrtp's init segfaults after TF's
import cv2
import numpy as np
import redis
from clips import make_clip, validation_faces

from emostream.config import Settings
from emostream.redis_server import RedisServer
from ingest.keys import Keys
from ingest.wire import WIRE_VERSION, Encoding, Frame, Result

CLK_TCK = os.sysconf("SC_CLK_TCK")
BATCH = 16
"""Frames per XREADGROUP and per classifier call here (a worker's ``batch_frames`` is 4 by default)."""


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one by default), children excluded."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def clip_frames(count: int = 60) -> list[np.ndarray]:
    """640x480 grayscale frames of real faces, one face per frame, as latency.py and the tests use."""
    faces = validation_faces(("happy", "surprise", "neutral", "sad"), per_class=5)
    clip, _ = make_clip(faces, count, hold=3)
    return [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in clip]


def wire_fields(image: np.ndarray, settings: Settings, encoding: Encoding, seq: int = 0) -> dict:
    keys = settings.keys
    return Frame("bench", seq, time.time(), image, keys.results("bench")).encode(encoding, settings.jpeg_quality)


def measure_wire(frames: list[np.ndarray], settings: Settings) -> dict:
    sizes = {}
    for encoding in (Encoding.JPEG, Encoding.GRAY):
        entry = [sum(len(k) + len(v) for k, v in wire_fields(f, settings, encoding).items()) for f in frames]
        sizes[encoding.value] = {"mean_bytes": float(np.mean(entry)), "max_bytes": int(np.max(entry))}
    return {"frame": f"{frames[0].shape[1]}x{frames[0].shape[0]}", "quality": settings.jpeg_quality, **sizes}


def _redis_info(client: redis.Redis) -> tuple[float, int, int]:
    info = client.info()
    return info["used_cpu_user"] + info["used_cpu_sys"], info["total_net_input_bytes"], info["total_net_output_bytes"]


def measure_redis(frames: list[np.ndarray], settings: Settings, seconds: float) -> dict:
    """One producer, one consumer and one reply reader in a loop, batches of 16 frames."""
    from workers.worker import PUBLISH_AND_ACK, REPLY_MAXLEN, REPLY_TTL_S

    keys = Keys("capacity")
    reply = keys.results("bench")
    encoded = [wire_fields(f, settings, Encoding.JPEG, i) for i, f in enumerate(frames)]
    result = Result("bench", 0, time.time(), "v", [], "bench-worker", {"queue_s": 0.0}).encode()["json"]
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        client.xgroup_create(keys.frames, keys.group, id="0", mkstream=True)
        publish = client.register_script(PUBLISH_AND_ACK)
        last_reply = "0-0"
        done = 0
        cpu0, in0, out0 = _redis_info(client)
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            pipe = client.pipeline(transaction=False)
            for i in range(BATCH):
                pipe.xadd(keys.frames, encoded[(done + i) % len(encoded)], maxlen=settings.frames_maxlen)
            pipe.execute()
            entries = client.xreadgroup(keys.group, "bench-worker", {keys.frames: ">"}, count=BATCH)[0][1]
            args: list = [keys.group, REPLY_MAXLEN, len(entries)]
            for entry_id, _ in entries:
                args += [entry_id, result]
            publish(keys=[keys.frames] + [reply] * len(entries), args=[*args, REPLY_TTL_S, WIRE_VERSION])
            answered = client.xread({reply: last_reply}, count=256)[0][1]
            last_reply = answered[-1][0]
            client.xdel(reply, *[entry_id for entry_id, _ in answered])
            done += len(entries)
        elapsed = time.perf_counter() - started
        cpu1, in1, out1 = _redis_info(client)
        assert client.xlen(keys.frames) == 0 and client.xpending(keys.frames, keys.group)["pending"] == 0
        client.close()
    return {
        "frames": done,
        "loop_frames_per_s": done / elapsed,
        "redis_cpu_us_per_frame": (cpu1 - cpu0) / done * 1e6,
        "net_in_bytes_per_frame": (in1 - in0) / done,
        "net_out_bytes_per_frame": (out1 - out0) / done,
    }


def measure_worker(frames: list[np.ndarray], settings: Settings, seconds: float) -> dict:
    """The worker's hot path on one core, over wire-encoded frames (decode included)."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    cv2.setNumThreads(1)
    from workers.analysis import analyse
    from workers.classify import load_classifier
    from workers.detection import make_detector

    classifier = load_classifier(settings.model_store(), threads=1)
    detector = make_detector(settings, threads=1, track=False)
    wire = []
    for i, image in enumerate(frames):
        fields = wire_fields(image, settings, Encoding.JPEG, i)
        wire.append(fields)

    def batch(start: int) -> int:
        decoded = [Frame.decode(wire[(start + i) % len(wire)]) for i in range(BATCH)]
        return analyse([f.image for f in decoded], [f.scale for f in decoded], detector, classifier).batch_size

    batch(0)  # warm up: the first call traces the model
    done = faces = 0
    cpu0, started = cpu_seconds(), time.perf_counter()
    while time.perf_counter() - started < seconds:
        faces += batch(done)
        done += BATCH
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu0
    return {
        "model": classifier.version,
        "frames": done,
        "faces_per_frame": faces / done,
        "frames_per_cpu_s": done / cpu,
        "frames_per_wall_s": done / elapsed,
        "cpu_share": cpu / elapsed,
    }


def measure_gateway(cameras: int, seconds: float, fps: float) -> dict:
    from gateway_helpers import ClipTrack, GatewayProcess, connect, face
    from scraped import late_ticks, scrape
    from stand_ins import StubbedWorker

    faces = validation_faces(("happy", "surprise"), per_class=3)
    clip, _ = make_clip(faces, 30, hold=5)

    async def play(gateway: GatewayProcess) -> dict:
        clients = [await connect(gateway.url, ClipTrack(clip, fps=fps), keep_frames=1) for _ in range(cameras)]
        try:
            await asyncio.sleep(5.0)  # ICE, DTLS, the first keyframes
            marks = [len(c.results) for c in clients]
            lag0 = late_ticks(await asyncio.to_thread(scrape, f"127.0.0.1:{gateway.port}"))
            cpu0, started = cpu_seconds(gateway.process.pid), time.perf_counter()
            await asyncio.sleep(seconds)
            cpu, elapsed = cpu_seconds(gateway.process.pid) - cpu0, time.perf_counter() - started
            lag = late_ticks(await asyncio.to_thread(scrape, f"127.0.0.1:{gateway.port}"))
            results = sum(len(c.results) - m for c, m in zip(clients, marks, strict=True))
        finally:
            for c in clients:
                await c.close()
        return {
            "cameras": cameras,
            "camera_fps": fps,
            "gateway_cpu_per_camera": cpu / elapsed / cameras,
            "results_per_s_per_camera": results / elapsed / cameras,
            "loop_ticks": {
                name: after - before
                for name, before, after in zip(("all", "over_0.1s", "over_0.5s"), lag0, lag, strict=True)
            },
        }

    with (
        RedisServer() as server,
        GatewayProcess(server.url) as gateway,
        StubbedWorker(server.url, Settings(), [face((200, 150, 192, 192), "happy")]),
    ):
        return asyncio.run(play(gateway))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=["wire", "redis", "worker", "gateway"])
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring time of each timed part")
    parser.add_argument("--cameras", type=int, nargs="+", default=[2, 4], help="aiortc cameras on the gateway")
    parser.add_argument("--camera-fps", type=float, default=10.0, help="frame rate each aiortc camera sends")
    parser.add_argument("--json", action="store_true", help="also print every figure as one JSON object")
    args = parser.parse_args()
    parts = args.only or ["wire", "redis", "worker", "gateway"]
    settings = Settings.from_env()
    frames = clip_frames()
    report: dict = {"cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0]}
    print(f"machine: {os.cpu_count()} CPUs, 1-minute load average {report['loadavg_1m']:.2f} at the start")
    if "wire" in parts:
        w = report["wire"] = measure_wire(frames, settings)
        print(
            f"wire: {w['frame']} grayscale frame entry, JPEG q{w['quality']}: {w['jpeg']['mean_bytes'] / 1e3:.1f} kB "
            f"mean ({w['jpeg']['max_bytes'] / 1e3:.1f} max); raw gray: {w['gray']['mean_bytes'] / 1e3:.1f} kB"
        )
    if "redis" in parts:
        r = report["redis"] = measure_redis(frames, settings, args.seconds)
        print(
            f"redis: {r['frames']} frames through XADD/XREADGROUP/publish-and-ack/XREAD+XDEL; "
            f"{r['redis_cpu_us_per_frame']:.0f} us redis-server CPU per frame, "
            f"{r['net_in_bytes_per_frame'] / 1e3:.1f} kB in + {r['net_out_bytes_per_frame'] / 1e3:.1f} kB out "
            f"per frame; this one-client loop ran {r['loop_frames_per_s']:.0f} frames/s"
        )
    if "worker" in parts:
        k = report["worker"] = measure_worker(frames, settings, args.seconds)
        print(
            f"worker ({k['model']}, 1 thread, pinned to 1 CPU): {k['frames_per_cpu_s']:.1f} frames per CPU second, "
            f"{k['frames_per_wall_s']:.1f} frames/s wall (it got {k['cpu_share']:.0%} of its CPU), "
            f"{k['faces_per_frame']:.2f} faces per frame"
        )
    if "gateway" in parts:
        report["gateway"] = []
        for cameras in args.cameras:
            g = measure_gateway(cameras, args.seconds, args.camera_fps)
            report["gateway"].append(g)
            print(
                f"gateway, {cameras} cameras at 640x480 {args.camera_fps:g} fps: "
                f"{g['gateway_cpu_per_camera']:.3f} CPU per camera, "
                f"{g['results_per_s_per_camera']:.1f} results/s per camera; event loop "
                f"{g['loop_ticks']['over_0.1s']} of {g['loop_ticks']['all']} ticks over 0.1 s late "
                f"({g['loop_ticks']['over_0.5s']} over 0.5 s)"
            )
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
