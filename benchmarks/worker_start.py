"""A worker's time to ready and resident memory: LiteRT (the default) against Keras (TensorFlow).

    python benchmarks/worker_start.py [--runs 3]

Starts ``emostream worker --threads 1`` against a private redis-server, once per runtime per
run, alternating: seconds from the process's start to ``/readyz`` answering 200, resident memory
(VmRSS) then, and whether a TensorFlow library is mapped into the process. What an autoscaler
pays on every scale-up.
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from processes import ready_worker

from emostream.redis_server import RedisServer


def start(runtime: str, redis_url: str, store: str) -> dict:
    env = {"REDIS_URL": redis_url, "EMOSTREAM_MODEL_STORE": store, "EMOSTREAM_RUNTIME": runtime}
    with ready_worker(env) as (worker, seconds):
        status = Path(f"/proc/{worker.pid}/status").read_text()
        rss = int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) / 1024
        tensorflow = "tensorflow" in Path(f"/proc/{worker.pid}/maps").read_text()
    return {"seconds": seconds, "rss": rss, "tensorflow": tensorflow}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows: dict[str, list[dict]] = {"litert": [], "keras": []}
    with RedisServer() as redis, tempfile.TemporaryDirectory() as store:
        for _ in range(args.runs):
            for runtime in rows:
                rows[runtime].append(start(runtime, redis.url, store))
    print(f"{args.runs} starts each, 1 inference thread")
    print("| runtime | time to /readyz (median, min-max) | resident memory at ready | TensorFlow loaded |")
    print("|---|---:|---:|---|")
    for runtime, runs in rows.items():
        s = [r["seconds"] for r in runs]
        rss = statistics.median(r["rss"] for r in runs)
        tf = "yes" if any(r["tensorflow"] for r in runs) else "no"
        print(f"| {runtime} | {statistics.median(s):.2f} s ({min(s):.2f}-{max(s):.2f}) | {rss:.0f} MiB | {tf} |")


if __name__ == "__main__":
    main()
