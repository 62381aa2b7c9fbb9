"""``emostream ingest`` as users run it: bad input, a shared Redis, SIGTERM, and the embedded stack end to end."""

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from clips import iou, make_clip, validation_faces, write_avi
from factories import REPO
from stand_ins import MjpegCamera, StubbedWorker

from emostream.cli import main
from emostream.config import Settings
from emostream.redis_server import free_port
from ingest.app.sources import open_source

FRAMES = [np.full((480, 640, 3), 8 * i, np.uint8) for i in range(20)]


@pytest.fixture(autouse=True)
def own_logging():
    """``main`` points the root logger at this test's (captured) stderr: put it back afterwards, so
    that later tests' threads do not log into a closed file."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def emostream(*args: str, env: dict[str, str], **popen: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "emostream.cli", *args],
        cwd=REPO,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def read_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{tmp}/missing.avi", "missing.avi: no such file"),
        ("{tmp}/garbage.avi", "garbage.avi: not a video OpenCV can decode"),
        ("rtsp://127.0.0.1:{port}/live", "cannot open (unreachable, refused or not video)"),
        ("7", "camera 7: cannot open"),
    ],
)
def test_bad_sources_exit_2_with_a_clear_error(tmp_path, capsys, monkeypatch, source, message):
    monkeypatch.delenv("REDIS_URL", raising=False)  # fails before any stack starts
    (tmp_path / "garbage.avi").write_bytes(np.random.default_rng(1).bytes(10_000))
    out = tmp_path / "out.jsonl"
    assert main(["ingest", "--source", source.format(tmp=tmp_path, port=free_port()), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emostream ingest: error: ") and message in err and "Traceback" not in err
    assert not out.exists()


def test_bad_fps_and_unreachable_redis_exit_2(tmp_path, capsys, monkeypatch):
    avi = write_avi(FRAMES, tmp_path / "clip.avi")
    assert main(["ingest", "--source", str(avi), "--fps", "0"]) == 2
    assert "--fps must be positive" in capsys.readouterr().err
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    assert main(["ingest", "--source", str(avi)]) == 2
    assert "cannot reach Redis" in capsys.readouterr().err
    monkeypatch.setenv("EMOSTREAM_THREADS", "two")  # read while the options are built, for every command
    with pytest.raises(SystemExit) as refused:
        main(["worker"])
    assert refused.value.code == 2 and "--threads: invalid int value: 'two'" in capsys.readouterr().err


def test_a_file_through_a_shared_redis(tmp_path, capsys, monkeypatch, redis_server):
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    avi = write_avi(FRAMES, tmp_path / "clip.avi")
    out = tmp_path / "results.jsonl"
    with StubbedWorker(redis_server.url, Settings()):
        assert main(["ingest", "--source", str(avi), "--out", str(out)]) == 0
    lines = read_lines(out)
    assert [line["seq"] for line in lines] == list(range(20))
    assert {tuple(line["faces"][0]["box"]) for line in lines} == {(0, 0, 640, 480)}
    assert f"{avi}: 20 frames sent, 20 results, 0 dropped, 0 bad frames" in capsys.readouterr().err


def test_sigterm_stops_a_live_camera_cleanly(tmp_path, redis_server):
    out = tmp_path / "live.jsonl"
    with MjpegCamera(FRAMES, fps=25) as camera, StubbedWorker(redis_server.url, Settings()) as worker:
        proc = emostream("ingest", "--source", camera.url, "--out", str(out), env={"REDIS_URL": redis_server.url})
        try:
            deadline = time.monotonic() + 60
            while worker.answered < 5 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    assert "SIGTERM: stopping" in err and "frames sent" in err and "Traceback" not in err
    seqs = [line["seq"] for line in read_lines(out)]
    assert len(seqs) >= 5 and seqs == sorted(set(seqs))


def test_ctrl_c_stops_an_ingest_with_its_own_stack_cleanly(tmp_path):
    """Ctrl-C goes to the terminal's whole foreground process group: the private Redis and workers must
    not take it, or the run cannot finish its frames in flight. The workers it starts log as it was told."""
    out = tmp_path / "live.jsonl"
    env = {"EMOSTREAM_MODEL_STORE": str(tmp_path / "store"), "EMOSTREAM_REDIS_DIR": str(tmp_path / "redis")}
    with MjpegCamera(FRAMES, fps=25) as camera:
        proc = emostream("--log-format", "json", "ingest", "--source", camera.url, "--out", str(out),
                         "--workers", "1", env=env, start_new_session=True)  # fmt: skip
        try:
            deadline = time.monotonic() + 240
            while len(read_lines(out)) < 3 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            os.killpg(proc.pid, signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
    assert proc.returncode == 0, err
    assert "SIGINT: stopping" in err and "frames sent" in err and "cannot reach" not in err
    logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(entry["logger"].startswith("workers.") for entry in logged), err
    assert not re.search(r"^\d{4}-\d\d-\d\d .* (INFO|WARNING) workers\.", err, re.MULTILINE), "no worker logs text"


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """``emostream ingest`` of a clip of real validation faces with REDIS_URL unset: the embedded stack
    (a private redis-server, one real worker) with the bundled model. The clip, its truth, the lines."""
    tmp = tmp_path_factory.mktemp("e2e")
    faces = validation_faces(("happy", "surprise"), per_class=4)
    frames, truth = make_clip(faces, frames=40, hold=5)
    clip = write_avi(frames, tmp / "clip.avi")
    out = tmp / "r.jsonl"
    proc = emostream(
        "ingest", "--source", str(clip), "--out", str(out), "--workers", "1",
        env={"EMOSTREAM_MODEL_STORE": str(tmp / "store")},
    )  # fmt: skip
    try:
        _, err = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "40 frames sent, 40 results, 0 dropped, 0 bad frames" in err
    return clip, truth, read_lines(out), tmp / "store"


@pytest.mark.slow
def test_end_to_end_one_line_per_frame_with_source_pixel_boxes_and_the_models_labels(ingested):
    clip, truth, lines, store = ingested
    assert [line["seq"] for line in lines] == list(range(40))
    found = sum(any(iou(f["box"], t.box) > 0.5 for f in line["faces"]) for line, [t] in zip(lines, truth, strict=True))
    assert found >= 30

    # The live model applied directly to the very frames the one worker received, in the same
    # order (so the same faces followed from frame to frame): same boxes, same labels.
    from ingest.app.producer import to_wire_image
    from ingest.wire import Frame
    from model_store import ModelStore
    from workers.analysis import analyse
    from workers.classify import load_classifier
    from workers.detection import make_detector

    settings = Settings()
    with open_source(str(clip), settings) as source:
        wired = []
        for seq, _, image in source:
            gray, scale = to_wire_image(image, settings.frame_width)
            fields = Frame("e2e", seq, 0.0, gray, "r", scale).encode(quality=settings.jpeg_quality)
            wired.append(Frame.decode(fields))
    loaded = load_classifier(ModelStore.open_default(store))
    direct = analyse(
        [f.image for f in wired],
        [f.scale for f in wired],
        make_detector(settings),
        loaded,
        [(f.stream, f.seq) for f in wired],
    ).faces
    assert all(line["model_version"] == loaded.version for line in lines)
    assert [[f["box"] for f in line["faces"]] for line in lines] == [[f.box for f in faces] for faces in direct]
    same = sum(
        [f["label"] for f in line["faces"]] == [f.label for f in faces]
        for line, faces in zip(lines, direct, strict=True)
    )
    assert same >= 38


@pytest.mark.slow
def test_end_to_end_lines_carry_tracks_and_smoothed_labels_and_the_held_face_keeps_one_track(ingested):
    _, truth, lines, _ = ingested
    faces = [f for line in lines for f in line["faces"]]
    placed = [f for line, [t] in zip(lines, truth, strict=True) for f in line["faces"] if iou(f["box"], t.box) > 0.5]
    assert faces and all(isinstance(f["track"], int) for f in faces)
    assert all(set(f["smoothed"]) == {"label", "score", "scores"} for f in faces)
    assert len(placed) >= 30 and {f["track"] for f in placed} == {placed[0]["track"]}, "one place, one track"


@pytest.mark.slow
def test_end_to_end_labels_are_right_for_most_faces_found(ingested):
    _, truth, lines, _ = ingested
    found, right = 0, 0
    for line, [face] in zip(lines, truth, strict=True):
        hits = [f for f in line["faces"] if iou(f["box"], face.box) > 0.5]
        found += bool(hits)
        right += bool(hits) and hits[0]["label"] == face.label
    assert right > found / 2, f"{right} of {found} faces labelled right"
