"""Memory over a long run: N aiortc camera streams through the whole embedded stack, RSS sampled.

    python benchmarks/soak.py [--minutes 30] [--streams 4] [--workers 1] [--every 30]

Starts what ``emostream up`` starts (a private redis-server, worker processes and the gateway
process), connects ``--streams`` WebRTC clients playing real faces at 10 fps, and every
``--every`` seconds prints one table row: results per second over the interval, streams still
connected, and the resident memory (VmRSS from /proc/<pid>/status) of the gateway, each
worker and redis-server. At the end it prints each process's growth from the first sample
after the warm-up to the last, and the slope over the second half of the run (MiB/hour).
"""

import argparse
import asyncio
import dataclasses
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import aiortc  # noqa: F401  before anything that may load TensorFlow's libraries (see tests/conftest.py)
import numpy as np
from clips import make_clip, validation_faces
from gateway_helpers import ClipTrack, connect

from emostream.config import Settings
from emostream.redis_server import free_port
from emostream.stack import EmbeddedStack

WARMUP_SAMPLES = 1
"""Samples taken before the baseline (model loaded, caches and codecs warmed up)."""


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (0 once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def processes(stack: EmbeddedStack) -> dict[str, int]:
    pids = {name: child.pid for name, child in stack.children.items()}
    if stack.redis_server and stack.redis_server.process:
        pids["redis"] = stack.redis_server.process.pid
    return dict(sorted(pids.items(), key=lambda item: item[0] != "gateway"))


async def soak(url: str, pids: dict[str, int], args: argparse.Namespace) -> list[dict]:
    faces = validation_faces(("happy", "surprise", "neutral", "sad"), per_class=3)
    frames, _ = make_clip(faces, 60, hold=5)
    clients = [await connect(url, ClipTrack(frames, fps=10), keep_frames=1) for _ in range(args.streams)]
    names = list(pids)
    print("| minute | results/s | connected | " + " | ".join(f"{n} MiB" for n in names) + " |", flush=True)
    print("|---:" * (3 + len(names)) + "|", flush=True)
    rows = []
    started = time.monotonic()
    try:
        while time.monotonic() - started < args.minutes * 60:
            await asyncio.sleep(args.every)
            answered = 0
            for client in clients:  # count and forget: the soak process itself stays flat
                answered += len(client.results)
                client.results.clear()
            row = {
                "minute": (time.monotonic() - started) / 60,
                "rate": answered / args.every,
                "connected": sum(c.pc.connectionState == "connected" for c in clients),
                **{name: rss_mib(pid) for name, pid in pids.items()},
            }
            rows.append(row)
            cells = " | ".join(f"{row[n]:.1f}" for n in names)
            print(f"| {row['minute']:.1f} | {row['rate']:.1f} | {row['connected']} | {cells} |", flush=True)
    finally:
        for client in clients:
            await client.close()
    return rows


def report(rows: list[dict], names: list[str]) -> None:
    if len(rows) <= WARMUP_SAMPLES + 1:
        print("too short to report growth")
        return
    base, last = rows[WARMUP_SAMPLES], rows[-1]
    half = rows[len(rows) // 2 :]
    minutes = np.array([r["minute"] for r in half])
    print(f"\ngrowth from minute {base['minute']:.1f} to {last['minute']:.1f}:")
    print("| process | first MiB | last MiB | growth MiB | slope, second half (MiB/hour) |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        values = np.array([r[name] for r in half])
        slope = np.polyfit(minutes, values, 1)[0] * 60 if len(half) > 1 else 0.0
        print(f"| {name} | {base[name]:.1f} | {last[name]:.1f} | {last[name] - base[name]:+.1f} | {slope:+.1f} |")
    rates = [r["rate"] for r in rows]
    print(
        f"\nresults/s: mean {np.mean(rates):.1f}, min {min(rates):.1f}; streams connected at the end: "
        f"{last['connected']}",
        flush=True,
    )


def wait_ready(url: str, timeout: float = 120.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    args = parser.parse_args()
    settings = dataclasses.replace(Settings.from_env(), redis_url=None, port=free_port())
    with EmbeddedStack(settings, workers=args.workers, gateway=True) as stack:
        url = f"http://127.0.0.1:{settings.port}"
        wait_ready(url)
        pids = processes(stack)
        print(f"soak: {args.streams} streams, {args.workers} worker(s), {args.minutes:g} min, pids {pids}", flush=True)
        rows = asyncio.run(soak(url, pids, args))
    report(rows, list(pids))


if __name__ == "__main__":
    main()
