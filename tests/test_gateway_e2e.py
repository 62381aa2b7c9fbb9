"""End to end with a real `emostream worker` process and the live model: camera -> gateway -> Redis -> worker -> back.

The clip shows two real validation faces that the worker's own `emostream predict` labels correctly
from a still frame, so what is checked is that the path through WebRTC, the gateway and Redis
keeps them recognisable and the boxes in place, not the model's accuracy.
"""

import json
import os
import subprocess
import sys
import time

import cv2
import pytest
import redis
from browser import VIDEO_STATE, chromium, open_page
from clips import iou, make_clip, validation_faces, write_y4m
from gateway_helpers import REPO, ClipTrack, GatewayProcess, connect, run, until

from emostream.config import Settings
from emostream.redis_server import RedisServer

CANDIDATES = ("happy", "surprise", "neutral")
PER_CLASS = 6
WORKER_READY_S = 240.0
RESULTS_S = 240.0


def predict(images: list, store: os.PathLike, tmp: os.PathLike) -> list[dict]:
    """``emostream predict --json`` on single-face frames of ``images``."""
    paths = []
    for index, pair in enumerate(images):
        frames, _ = make_clip([pair], 1)
        path = os.path.join(tmp, f"candidate_{index}.png")
        cv2.imwrite(path, frames[0])
        paths.append(path)
    env = {**os.environ, "EMOSTREAM_MODEL_STORE": str(store)}
    command = [sys.executable, "-m", "emostream.cli", "--log-level", "WARNING", "predict", "--json", *paths]
    output = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=True)
    return json.loads(output.stdout)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """Two faces the live model labels correctly (widest margin first), side by side, as a clip and a Y4M."""
    tmp = tmp_path_factory.mktemp("e2e")
    store = tmp / "models"
    candidates = [pair for name in CANDIDATES for pair in validation_faces((name,), PER_CLASS)]
    ranked = []
    for pair, entry in zip(candidates, predict(candidates, store, tmp), strict=True):
        if len(entry["faces"]) == 1 and entry["faces"][0]["label"] == pair[1]:
            scores = sorted(entry["faces"][0]["scores"].values(), reverse=True)
            ranked.append((scores[0] - scores[1], pair))
    ranked.sort(key=lambda item: -item[0])
    assert len(ranked) >= 2, "the live model recognises fewer than two of the candidate faces"
    frames, truth = make_clip([pair for _, pair in ranked[:2]], 10, per_frame=2, hold=10)
    return store, frames, truth[0], write_y4m(frames, tmp / "camera.y4m")


@pytest.fixture(scope="module")
def stack(scene):
    """Redis, one real worker and the gateway, shared by this module's tests."""
    store = scene[0]
    with RedisServer() as server:
        env = {**os.environ, "REDIS_URL": server.url, "EMOSTREAM_MODEL_STORE": str(store)}
        worker = subprocess.Popen(
            [sys.executable, "-m", "emostream.cli", "--log-level", "WARNING", "worker", "--threads", "1"],
            env=env,
            cwd=REPO,
        )
        try:
            client = redis.Redis.from_url(server.url)
            deadline = time.monotonic() + WORKER_READY_S
            while not client.hlen(Settings().keys.workers):
                assert worker.poll() is None, "the worker exited while starting"
                assert time.monotonic() < deadline, "the worker did not start in time"
                time.sleep(0.5)
            client.close()
            with GatewayProcess(server.url, EMOSTREAM_SAMPLE_FPS="5", EMOSTREAM_MODEL_STORE=str(store)) as gateway:
                yield gateway
        finally:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def recognised(results: list[dict], truth) -> float:
    """Share of (result, true face) pairs where a box overlaps the face (IoU >= 0.5) with the right label."""
    hits = [
        any(iou(f["box"], true.box) >= 0.5 and f["label"] == true.label for f in result["faces"])
        for result in results
        for true in truth
    ]
    return sum(hits) / len(hits)


def test_aiortc_camera_gets_real_labels_and_boxes(stack, scene):
    _, frames, truth, _ = scene

    async def scenario():
        client = await connect(stack.url, ClipTrack(frames, fps=10), keep_frames=1)
        await until(lambda: len(client.results) >= 20, RESULTS_S, "20 results from the worker")
        await client.close()
        return client

    client = run(scenario(), timeout=RESULTS_S + 60)
    assert {r["stream"] for r in client.results} == {client.stream}
    share = recognised(client.results[10:], truth)  # past the video's first second: the encoder's start
    assert share >= 0.7, f"only {share:.0%} of the faces were found and labelled right"


def test_two_cameras_on_one_page_and_two_pages_never_cross(stack, scene):
    _, _, truth, clip = scene
    with chromium(clip) as browser:
        first = open_page(browser, stack.url)
        first.wait_for_function("window.emostream.ready")
        first.click("#add")  # beside the default camera's card, there on the first visit
        first.click("#start-all")
        second = open_page(browser, f"{stack.url}/?autostart=1")
        pages = [first, second]
        every_camera_labelled = (
            "(n) => window.emostream.cameras.length === n"
            " && window.emostream.cameras.every((c) => c.last && c.video.currentTime > 0)"
        )
        for page, count in zip(pages, (2, 1), strict=True):
            page.wait_for_function(every_camera_labelled, arg=count, timeout=RESULTS_S * 1000)
        cameras = [page.evaluate(VIDEO_STATE) for page in pages]
        results = [page.evaluate("window.emostream.results") for page in pages]

    assert [len(c) for c in cameras] == [2, 1]
    streams = [{camera["stream"] for camera in page} for page in cameras]
    assert len(streams[0] | streams[1]) == 3, "every camera has a stream of its own"
    for page_cameras, page_streams, page_results in zip(cameras, streams, results, strict=True):
        assert {r["stream"] for r in page_results} == page_streams, "a page only receives its own cameras' results"
        for camera in page_cameras:
            assert camera["playing"] and camera["last"]["stream"] == camera["stream"]
    share = recognised(results[0] + results[1], truth)
    assert share >= 0.7, f"only {share:.0%} of the faces were found and labelled right"
