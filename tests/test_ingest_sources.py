"""Ingest sources on real inputs: AVI files (good, corrupt, garbage), an HTTP camera, bad URLs and cameras."""

import http.server
import threading
import time

import numpy as np
import pytest
from clips import write_avi
from stand_ins import MjpegCamera

from emostream.config import Settings
from emostream.redis_server import free_port
from ingest.app.sources import FileSource, LiveSource, SourceError, open_source

FRAMES = [np.full((120, 160, 3), 10 * i, np.uint8) for i in range(12)]
"""Frame i is grey level 10 i, so a frame's content tells its index."""


def levels(captured) -> list[int]:
    return [round(float(c.image.mean()) / 10) for c in captured]


@pytest.fixture
def avi(tmp_path):
    return write_avi(FRAMES, tmp_path / "clip.avi", fps=10)


def test_file_gives_every_frame_with_its_index_and_media_time(avi):
    with open_source(str(avi), Settings()) as source:
        captured = list(source)
    assert isinstance(source, FileSource) and not source.live
    assert [c.seq for c in captured] == list(range(12))
    assert levels(captured) == list(range(12))
    assert np.allclose([c.ts for c in captured], np.arange(12) / 10)
    assert captured[0].image.shape == (120, 160, 3) and source.stats.bad == 0


def test_file_with_fps_keeps_frames_by_media_time(avi):
    with open_source(str(avi), Settings(), fps=5) as source:
        captured = list(source)
    assert [c.seq for c in captured] == [0, 2, 4, 6, 8, 10]
    assert levels(captured) == [0, 2, 4, 6, 8, 10]


def test_a_frame_that_fails_to_decode_is_counted_and_skipped(avi, tmp_path):
    data = bytearray(avi.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i : i + 3] == b"\xff\xd8\xff"]  # JPEG SOI of each frame
    assert len(starts) == 12
    data[starts[5] : starts[5] + 300] = bytes(300)
    corrupt = tmp_path / "corrupt.avi"
    corrupt.write_bytes(bytes(data))
    with open_source(str(corrupt), Settings()) as source:
        captured = list(source)
    assert [c.seq for c in captured] == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    assert levels(captured) == [c.seq for c in captured]  # seq stays the index in the source
    assert source.stats.bad == 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing.avi", "no such file"),
        (lambda tmp: tmp, "not a readable file"),
        (lambda tmp: _write(tmp / "garbage.avi", np.random.default_rng(0).bytes(20_000)), "not a video"),
        (lambda tmp: _write(tmp / "empty.mp4", b""), "not a video"),
    ],
)
def test_bad_files_raise_a_clear_error(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(SourceError, match=message) as err:
        open_source(str(path), Settings())
    assert str(path) in str(err.value)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_unreachable_url_raises_a_clear_error_without_its_password():
    url = f"rtsp://admin:s3cret@127.0.0.1:{free_port()}/stream"
    with pytest.raises(SourceError, match="cannot open") as err:
        open_source(url, Settings(source_timeout=2))
    assert "s3cret" not in str(err.value) and "admin:***@127.0.0.1" in str(err.value)


def test_missing_camera_raises_a_clear_error():
    with pytest.raises(SourceError, match="camera 9: cannot open"):
        open_source("9", Settings())


def read_until(source: LiveSource, count: int, limit_s: float = 30.0) -> list:
    """``count`` frames from ``source``; fails rather than hangs if they do not come."""
    captured, deadline = [], time.monotonic() + limit_s
    while len(captured) < count:
        assert time.monotonic() < deadline, f"only {len(captured)} of {count} frames came"
        item = source.read(0.5)
        if item is not None:
            captured.append(item)
    return captured


def test_http_camera_is_read_live_at_the_sampling_rate():
    with MjpegCamera(FRAMES, fps=25) as camera, open_source(camera.url, Settings(sample_fps=10)) as source:
        assert isinstance(source, LiveSource) and source.live
        captured = read_until(source, 6)
        now = time.time()
    seqs = [c.seq for c in captured]
    assert seqs == sorted(set(seqs)) and min(np.diff(seqs)) >= 2  # 25 fps sampled at 10
    assert all(now - 30 < c.ts <= now for c in captured)  # capture time on the wall clock
    assert levels(captured) == [s % 12 for s in seqs]
    assert not source._thread.is_alive()


def test_a_slow_reader_gets_the_newest_frame_and_the_skipped_ones_are_counted():
    with MjpegCamera(FRAMES, fps=25) as camera, open_source(camera.url, Settings(sample_fps=25)) as source:
        first = read_until(source, 1)[0]
        time.sleep(1.0)
        second = read_until(source, 1)[0]
    assert second.seq > first.seq + 5 and source.stats.skipped >= 5


def test_a_dropped_stream_is_reopened_and_seq_keeps_counting():
    with (
        MjpegCamera(FRAMES, fps=50, per_connection=8) as camera,
        open_source(camera.url, Settings(sample_fps=50, source_timeout=3)) as source,
    ):
        captured = read_until(source, 20)
    seqs = [c.seq for c in captured]
    assert seqs == sorted(set(seqs))
    assert camera.connections >= 3 and source.stats.reconnects >= 2


def test_a_recording_behind_a_url_is_read_like_a_file(avi):
    """Every frame, sampled by media time: read as fast as it decodes, a wall-clock sampler would keep a few."""
    with open_source(f"file://{avi}", Settings(sample_fps=5)) as source:
        assert isinstance(source, FileSource) and not source.live
        every = list(source)
    with open_source(f"file://{avi}", Settings(), fps=5) as source:
        sampled = list(source)
    assert [c.seq for c in every] == list(range(12)) and levels(every) == list(range(12))
    assert [c.seq for c in sampled] == [0, 2, 4, 6, 8, 10]


class StallingServer:
    """Serves a file over HTTP, but only its first ``share`` of bytes: then the connection hangs."""

    def __init__(self, path, share: float) -> None:
        data = path.read_bytes()
        stop = self.stop = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "video/x-msvideo")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: int(len(data) * share)])
                self.wfile.flush()
                stop.wait(30)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/{path.name}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self) -> "StallingServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


def test_a_recording_behind_a_url_that_stalls_fails_with_the_frames_read_so_far(tmp_path):
    frames = [np.full((120, 160, 3), 2 * i, np.uint8) for i in range(100)]
    avi = write_avi(frames, tmp_path / "long.avi", fps=10)
    captured = []
    with StallingServer(avi, share=0.6) as server, open_source(server.url, Settings(source_timeout=1)) as source:
        assert isinstance(source, FileSource)
        with pytest.raises(SourceError, match=r"reading stopped after frame \d+ of 100 \(the connection stalled"):
            for item in source:
                captured.append(item)
    assert 0 < len(captured) < 100 and [c.seq for c in captured] == list(range(len(captured)))
