"""The tutorial's per-frame loop against one emostream worker's pipeline, on the same 640x480 clip
of real faces (FER2013 validation faces upscaled x4 on a larger frame, each held for 10 frames,
fresh sensor noise on every frame).

    python benchmarks/tutorial_vs_worker.py [--faces 300] [--hold 10] [--noise 2]

Tutorial loop, per frame: grayscale, Haar ``detectMultiScale(gray, 1.3, 5)`` on the full frame,
one ``model.predict`` per face (its 4.48M-parameter CNN), JPEG-encode the frame for MJPEG.
Worker, per batch of 16 frames: decode the wire JPEG, Haar at the configured width (following the
stream's faces between full passes, as workers do, and searching every frame, as they did before),
FER-matched crops, every face of the batch in one compiled call of the live model.

Reports frames/s, face recall (a detection with IoU > 0.5 against the placed face) and label
accuracy over found faces (the live model only; the tutorial CNN here has random weights).
"""

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import cv2
import numpy as np
from clips import make_clip, score, validation_faces

from emostream.config import Settings
from emostream.labels import EMOTIONS, FACE_SIZE
from ingest.wire import Frame
from training.architectures import build
from workers.analysis import analyse
from workers.classify import Classifier
from workers.detection import make_detector


def tutorial_loop(frames, truth) -> dict:
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    model = build("tutorial")
    model.predict(np.zeros((1, 48, 48, 1), np.float32), verbose=0)
    boxes = []
    started = time.perf_counter()
    for frame in frames:
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        faces = cascade.detectMultiScale(gray, 1.3, 5)
        for x, y, w, h in faces:
            roi = cv2.resize(gray[y : y + h, x : x + w], (48, 48))
            model.predict(roi[np.newaxis, :, :, np.newaxis].astype(np.float32), verbose=0)
            cv2.rectangle(frame, (x, y), (x + w, y + h), (255, 0, 0), 2)
        cv2.imencode(".jpg", frame)
        boxes.append([list(map(int, f)) for f in faces])
    elapsed = time.perf_counter() - started
    recall, _ = score(boxes, None, truth)
    faces = sum(map(len, boxes)) / elapsed
    return {"fps": len(frames) / elapsed, "faces": faces, "recall": recall, "accuracy": None}


def worker_pipeline(frames, truth, track_refresh: int, batch: int = 16) -> dict:
    settings = Settings.from_env()
    classifier = Classifier(settings.model_store().load())
    passes = Counter()
    detector = make_detector(settings.detector, settings.detect_width, track_refresh, lambda k: passes.update([k]))
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
    full = passes["full"] / len(frames) if track_refresh else 1.0
    fps, faces = len(frames) / elapsed, sum(map(len, boxes)) / elapsed
    model = classifier.version
    return {"fps": fps, "faces": faces, "recall": recall, "accuracy": accuracy, "model": model, "full": full}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--faces", type=int, default=301, help="distinct faces (spread over the 7 classes)")
    parser.add_argument("--hold", type=int, default=10, help="frames each face stays")
    parser.add_argument("--noise", type=float, default=2.0, help="sensor noise (grey levels, s.d.) on every frame")
    args = parser.parse_args()
    faces = validation_faces(EMOTIONS, per_class=-(-args.faces // len(EMOTIONS)))
    frames, truth = make_clip(faces, len(faces) * args.hold, hold=args.hold, sensor_noise=args.noise)
    print(f"clip: {len(frames)} frames of 640x480, {len(faces)} faces, {args.hold} frames each, noise {args.noise}")
    tracked = worker_pipeline(frames, truth, Settings().track_refresh)
    every = worker_pipeline(frames, truth, 0)
    theirs = tutorial_loop([f.copy() for f in frames], truth)
    print("| pipeline | frames/s | faces/s | face recall | labels right (found faces) | frames searched whole |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| tutorial loop | {theirs['fps']:.1f} | {theirs['faces']:.1f} | {theirs['recall']:.1%} | - | 100% |")
    for name, ours in (("following faces", tracked), ("searching every frame", every)):
        print(
            f"| emostream worker, {name} ({ours['model']}) | {ours['fps']:.1f} | {ours['faces']:.1f} "
            f"| {ours['recall']:.1%} "
            f"| {ours['accuracy']:.1%} | {ours['full']:.0%} |"
        )
    ratio, ratio_every = tracked["fps"] / theirs["fps"], every["fps"] / theirs["fps"]
    print(f"speed-up: {ratio:.1f}x ({ratio_every:.1f}x searching every frame)")


if __name__ == "__main__":
    main()
