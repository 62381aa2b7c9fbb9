"""Real worker processes and time: skewed clocks (Debian's faketime) and warm or cold shutdown."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from factories import REPO, brightness, brightness_store
from stand_ins import read_results

from emostream.config import Settings
from ingest.wire import Frame


@pytest.mark.parametrize("skew", ["+5s", "-5s"])
def test_a_worker_with_a_skewed_clock_judges_frame_age_by_redis(redis_server, redis_client, tmp_path, skew):
    faketime = shutil.which("faketime")
    assert faketime, "faketime not found: apt-get install faketime (.ci/run installs it)"
    store = brightness_store(tmp_path / "store")
    keys = Settings().keys
    worker = subprocess.Popen(
        [faketime, "-f", skew, sys.executable, "-m", "emostream.cli", "worker", "--threads", "1"],
        cwd=REPO,
        env={**os.environ, "REDIS_URL": redis_server.url, "EMOSTREAM_MODEL_STORE": str(store.root)},
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # faketime runs the worker as its child: stop the whole group
    )
    try:
        deadline = time.monotonic() + 120
        while not redis_client.hlen(keys.workers) and time.monotonic() < deadline:
            assert worker.poll() is None, "the worker exited"
            time.sleep(0.1)
        (beat,) = [json.loads(raw) for raw in redis_client.hgetall(keys.workers).values()]
        seconds, micros = redis_client.time()
        assert abs(beat["ts"] - (seconds + micros / 1e6)) < 3  # stamped by Redis's clock, not its own

        face = np.full((96, 96), brightness(2), np.uint8)
        reply = keys.results("skewed")
        for seq in range(5):  # captured now by this host's clock, which Redis shares
            redis_client.xadd(keys.frames, Frame("skewed", seq, time.time(), face, reply).encode())
            time.sleep(0.05)
        answers = read_results(redis_client, reply, 5, timeout=deadline - time.monotonic())
        assert sorted(r.seq for r in answers) == list(range(5))
        # time in the queue by Redis's clock too (answered frames waited no longer than the budget)
        assert all(0 <= r.timings["queue_s"] <= Settings().max_frame_age for r in answers), answers
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)


def test_one_signal_stops_a_worker_warm_and_a_second_one_cold(redis_server, redis_client, tmp_path):
    store = brightness_store(tmp_path / "store")
    keys = Settings().keys
    env = {**os.environ, "REDIS_URL": redis_server.url, "EMOSTREAM_MODEL_STORE": str(store.root)}
    codes = []
    for signals in (1, 2):
        worker = subprocess.Popen(
            [sys.executable, "-m", "emostream.cli", "worker", "--threads", "1"],
            cwd=REPO,
            env=env,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while not redis_client.hlen(keys.workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        if signals == 2:
            redis_client.execute_command("CLIENT", "PAUSE", "4000")  # the worker's next Redis call hangs 4 s
        worker.send_signal(signal.SIGTERM)
        if signals == 2:
            time.sleep(0.5)  # two signals at once would merge into one
            worker.send_signal(signal.SIGTERM)
        codes.append(worker.wait(25))  # warm: within a second; cold: at once, Redis still paused
        time.sleep(4 if signals == 2 else 0)
        redis_client.delete(keys.workers)
    assert codes == [0, 128 + signal.SIGTERM]
