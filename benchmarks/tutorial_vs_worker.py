"""The tutorial's per-frame loop against emostream, on the same 640x480 clip of real faces
(FER2013 validation faces upscaled x4 on a larger frame, each held for 10 frames, fresh sensor
noise on every frame).

    python benchmarks/tutorial_vs_worker.py [--faces 301] [--hold 10] [--noise 2]
    python benchmarks/tutorial_vs_worker.py --ingest 3000 [--workers 2]

Tutorial loop, per frame: grayscale, Haar ``detectMultiScale(gray, 1.3, 5)`` on the full frame,
one ``model.predict`` per face (its 4.48M-parameter CNN), JPEG-encode the frame for MJPEG.
Worker, per batch of 16 frames (this benchmark's; a worker's `batch_frames` is 4 by default): decode the
wire JPEG, detect (BlazeFace, the default, or Haar;
following the stream's faces between full passes, as workers do, or searching every frame),
FER-matched crops, every face of the batch in one LiteRT call of the live model. Reports
frames/s, face recall (a detection with IoU > 0.5 against the placed face) and label accuracy
over found faces (the live model only; the tutorial CNN here has random weights).

``--ingest N`` compares whole programs, start-up included, on an N-frame MJPEG file: wall time
of ``emostream ingest --source clip.avi`` (embedded Redis, worker processes, results to a file)
against the tutorial loop run as its own process over the same file (importing TensorFlow,
building its model, reading the file).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import cv2
import numpy as np
from clips import make_clip, score, validation_faces, write_avi

from emostream.config import Settings
from emostream.labels import EMOTIONS, FACE_SIZE
from ingest.wire import Frame
from training.architectures import build
from workers.analysis import analyse
from workers.classify import load_classifier
from workers.detection import make_detector

REPO = Path(__file__).resolve().parent.parent


def tutorial_boxes(frames: Iterable[np.ndarray]) -> list[list[list[int]]]:
    """The article's loop over ``frames``: each frame's Haar boxes, one ``predict`` per face, MJPEG encode."""
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    model = build("tutorial")
    model.predict(np.zeros((1, 48, 48, 1), np.float32), verbose=0)
    boxes = []
    for frame in frames:
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        faces = cascade.detectMultiScale(gray, 1.3, 5)
        for x, y, w, h in faces:
            roi = cv2.resize(gray[y : y + h, x : x + w], (48, 48))
            model.predict(roi[np.newaxis, :, :, np.newaxis].astype(np.float32), verbose=0)
            cv2.rectangle(frame, (x, y), (x + w, y + h), (255, 0, 0), 2)
        cv2.imencode(".jpg", frame)
        boxes.append([list(map(int, f)) for f in faces])
    return boxes


def tutorial_loop(frames: list[np.ndarray], truth) -> dict:
    started = time.perf_counter()
    boxes = tutorial_boxes(frames)
    elapsed = time.perf_counter() - started
    recall, _ = score(boxes, None, truth)
    faces = sum(map(len, boxes)) / elapsed
    return {"fps": len(frames) / elapsed, "faces": faces, "recall": recall, "accuracy": None}


def worker_pipeline(frames, truth, settings: Settings, batch: int = 16) -> dict:
    classifier = load_classifier(settings.model_store(), runtime="litert", threads=1)
    passes = Counter()
    detector = make_detector(settings, threads=1, on_pass=lambda k: passes.update([k]))
    wire = [Frame("bench", i, 0.0, cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), "r").encode() for i, f in enumerate(frames)]
    for faces in range(1, 2 * batch + 1):  # warm up: oneDNN builds its kernels once per batch shape
        classifier(np.zeros((faces, FACE_SIZE, FACE_SIZE), np.uint8))
    boxes, labels = [], []
    started = time.perf_counter()
    for start in range(0, len(wire), batch):
        decoded = [Frame.decode(w) for w in wire[start : start + batch]]
        keys = [(f.stream, f.seq) for f in decoded]
        result = analyse([f.image for f in decoded], [f.scale for f in decoded], detector, classifier, keys)
        boxes += [[f.box for f in faces] for faces in result.faces]
        labels += [[f.label for f in faces] for faces in result.faces]
    elapsed = time.perf_counter() - started
    recall, accuracy = score(boxes, labels, truth)
    full = passes["full"] / len(frames) if settings.track_refresh else 1.0
    fps, faces = len(frames) / elapsed, sum(map(len, boxes)) / elapsed
    model = classifier.version
    return {"fps": fps, "faces": faces, "recall": recall, "accuracy": accuracy, "model": model, "full": full}


def tutorial_file(path: str) -> None:
    """The tutorial loop over a video file, frame by frame as read, as its own program (``--tutorial-file``)."""
    capture = cv2.VideoCapture(path)

    def read() -> Iterator[np.ndarray]:
        ok, frame = capture.read()
        while ok:
            yield frame
            ok, frame = capture.read()

    print(json.dumps({"frames": len(tutorial_boxes(read()))}))


def whole_programs(frames: list[np.ndarray], workers: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_avi(frames, Path(tmp) / "clip.avi")
        env = {**os.environ, "EMOSTREAM_MODEL_STORE": str(Path(tmp) / "store")}
        env.pop("REDIS_URL", None)
        timings = {}
        for name, command in (
            (
                "emostream ingest",
                ["-m", "emostream.cli", "ingest", "--source", str(clip), "--out", f"{tmp}/out.jsonl"]
                + (["--workers", str(workers)] if workers else []),
            ),
            ("tutorial loop", [__file__, "--tutorial-file", str(clip)]),
        ):
            started = time.perf_counter()
            done = subprocess.run([sys.executable, *command], cwd=REPO, env=env, capture_output=True, text=True)
            timings[name] = time.perf_counter() - started
            if done.returncode:
                raise RuntimeError(f"{name} failed: {done.stderr[-2000:]}")
            if name == "tutorial loop" and json.loads(done.stdout)["frames"] != len(frames):
                raise RuntimeError(f"the tutorial loop read {done.stdout} of {len(frames)} frames")
        answered = len(Path(f"{tmp}/out.jsonl").read_text().splitlines())
    print(f"{len(frames)} frames of 640x480, start-up included ({workers or 'default'} workers)")
    print("| program | wall time | frames/s |\n|---|---:|---:|")
    for name, seconds in timings.items():
        print(f"| {name} | {seconds:.1f} s | {len(frames) / seconds:.1f} |")
    ratio = timings["tutorial loop"] / timings["emostream ingest"]
    print(f"answered {answered}/{len(frames)}; emostream ingest is {ratio:.1f}x the tutorial loop's frames/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--faces", type=int, default=301, help="distinct faces (spread over the 7 classes)")
    parser.add_argument("--hold", type=int, default=10, help="frames each face stays")
    parser.add_argument("--noise", type=float, default=2.0, help="sensor noise (grey levels, s.d.) on every frame")
    parser.add_argument("--ingest", type=int, metavar="N", help="compare whole programs on an N-frame file")
    parser.add_argument("--workers", type=int, default=0, help="with --ingest: worker processes (0: the default)")
    parser.add_argument("--tutorial-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tutorial_file:
        return tutorial_file(args.tutorial_file)
    faces = validation_faces(EMOTIONS, per_class=-(-args.faces // len(EMOTIONS)))
    count = args.ingest or len(faces) * args.hold
    frames, truth = make_clip(faces, count, hold=args.hold, sensor_noise=args.noise)
    if args.ingest:
        return whole_programs(frames, args.workers)
    print(f"clip: {len(frames)} frames of 640x480, {len(faces)} faces, {args.hold} frames each, noise {args.noise}")
    defaults = Settings.from_env()
    pipelines = {
        "BlazeFace, following faces (the default)": defaults,
        "BlazeFace, searching every frame": defaults.replace(track_refresh=0),
        "Haar at 288 px, following faces (the previous default)": defaults.replace(detector="haar"),
    }
    ours = {name: worker_pipeline(frames, truth, settings) for name, settings in pipelines.items()}
    theirs = tutorial_loop([f.copy() for f in frames], truth)
    print("| pipeline | frames/s | faces/s | face recall | labels right (found faces) | frames searched whole |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| tutorial loop | {theirs['fps']:.1f} | {theirs['faces']:.1f} | {theirs['recall']:.1%} | - | 100% |")
    for name, row in ours.items():
        print(
            f"| emostream worker, {name} ({row['model']}) | {row['fps']:.1f} | {row['faces']:.1f} "
            f"| {row['recall']:.1%} | {row['accuracy']:.1%} | {row['full']:.0%} |"
        )
    for name, row in ours.items():
        print(f"{name}: {row['fps'] / theirs['fps']:.1f}x the tutorial's frames/s")


if __name__ == "__main__":
    main()
