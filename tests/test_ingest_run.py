"""Whole ingest runs against a real Redis, the real worker (stubbed models) answering through the consumer group."""

import io
import json
import threading
import time

import numpy as np
import pytest
from clips import write_avi
from stand_ins import MODEL, MjpegCamera, StubbedWorker

from emostream.config import Settings
from ingest.app.run import IngestRun, IngestStalled
from ingest.app.sources import open_source

FRAMES = [np.full((480, 640, 3), 5 * i, np.uint8) for i in range(30)]


@pytest.fixture
def avi(tmp_path):
    return write_avi(FRAMES, tmp_path / "clip.avi", fps=10)


def settings_for(redis_server, **changes) -> Settings:
    return Settings(redis_url=redis_server.url, frame_width=320, **changes)


def ingest(source, client, settings, stop=None) -> tuple[list[dict], object]:
    out = io.StringIO()
    with source:
        summary = IngestRun(source, client, settings, out, stop).run()
    return [json.loads(line) for line in out.getvalue().splitlines()], summary


def test_a_file_gives_one_result_per_frame_in_order_never_more_than_the_window_ahead(avi, redis_server, redis_client):
    settings = settings_for(redis_server, inflight_frames=4)
    with StubbedWorker(redis_server.url, settings, delay=0.01) as worker:
        lines, summary = ingest(open_source(str(avi), settings), redis_client, settings)
    assert [line["seq"] for line in lines] == list(range(30))
    assert all(line["model_version"] == MODEL for line in lines)
    assert {tuple(line["faces"][0]["box"]) for line in lines} == {(0, 0, 640, 480)}  # back in source pixels
    assert len({line["stream"] for line in lines}) == 1
    assert 1 <= worker.max_backlog <= 4
    assert (summary.sent, summary.results, summary.dropped, summary.bad, summary.resent) == (30, 30, 0, 0, 0)
    assert not redis_client.keys("emostream:results:*")  # the reply stream is cleaned up


def test_a_file_with_fps_sends_only_sampled_frames_numbered_consecutively_on_the_wire(avi, redis_server, redis_client):
    settings = settings_for(redis_server)
    with StubbedWorker(redis_server.url, settings) as worker:
        lines, summary = ingest(open_source(str(avi), settings, fps=2.5), redis_client, settings)
    assert [line["seq"] for line in lines] == [0, 4, 8, 12, 16, 20, 24, 28] and summary.sent == 8
    assert [frame.seq for frame in worker.delivered] == list(range(8))  # workers' tracking sees no gaps


def test_frames_workers_drop_are_sent_again(avi, redis_server, redis_client):
    settings = settings_for(redis_server, resend_after=0.3)
    with StubbedWorker(redis_server.url, settings, lose={2: 1, 5: 2}) as worker:
        lines, summary = ingest(open_source(str(avi), settings), redis_client, settings)
    assert [line["seq"] for line in lines] == list(range(30))
    assert summary.resent >= 3 and summary.dropped == 0
    assert [f.seq for f in worker.delivered].count(5) >= 3


def test_a_frame_no_worker_will_answer_is_given_up(avi, redis_server, redis_client):
    settings = settings_for(redis_server, resend_after=0.2)
    with StubbedWorker(redis_server.url, settings, lose={3: 1000}):
        lines, summary = ingest(open_source(str(avi), settings), redis_client, settings)
    assert [line["seq"] for line in lines] == [s for s in range(30) if s != 3]
    assert summary.dropped == 1 and summary.results == 29


def test_without_workers_the_run_fails_instead_of_waiting_forever(avi, redis_server, redis_client):
    settings = settings_for(redis_server, stall_timeout=1.0, resend_after=0.3)
    with pytest.raises(IngestStalled, match="no results from workers"):
        ingest(open_source(str(avi), settings), redis_client, settings)


def test_a_live_camera_streams_until_stopped(redis_server, redis_client):
    settings = settings_for(redis_server, sample_fps=10)
    stop = threading.Event()
    with MjpegCamera(FRAMES, fps=25) as camera, StubbedWorker(redis_server.url, settings) as worker:

        def stop_after_results() -> None:
            deadline = time.monotonic() + 60
            while worker.answered < 6 and time.monotonic() < deadline:
                time.sleep(0.05)
            stop.set()

        threading.Thread(target=stop_after_results, daemon=True).start()
        started = time.time()
        lines, summary = ingest(open_source(camera.url, settings), redis_client, settings, stop)
    seqs = [line["seq"] for line in lines]
    assert len(seqs) >= 6 and seqs == sorted(set(seqs))
    assert all(started - 1 < line["ts"] <= time.time() for line in lines)  # capture times
    assert {tuple(line["faces"][0]["box"]) for line in lines} == {(0, 0, 640, 480)}
    assert summary.results == len(lines) and summary.sent >= summary.results
