"""Face detectors: milliseconds per 640x480 frame, recall by face size, false positives.

    python benchmarks/detector.py [--per-class 20] [--threads 1]

Validation faces (offset 40, so not the faces the other benchmarks use) are placed one per
frame at x2, x3 and x4 (96, 144 and 192 px in a 640x480 frame) with camera noise (s.d. 2
grey levels); a face is found when a box overlaps it with IoU > 0.5. False positives are
boxes found on face-free frames (:func:`clips.textured_frames`: smoothed noise, shapes, edges
and gradients). Rows: the tutorial's call (full frame, 1.3, 5), the worker's Haar at a few
settings, and BlazeFace on the whole frame alone and with tiles, at a few score thresholds.
Every detector gets ``--threads`` CPU threads (a worker of ``emostream up`` gets one).
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import cv2
import numpy as np
from clips import make_clip, score, textured_frames, validation_faces

from emostream.labels import EMOTIONS
from workers.blazeface import BlazeFaceDetector
from workers.haar import HaarDetector

SIZES = (2, 3, 4)
"""Upscaling of the 48x48 faces placed on the frames."""


class TutorialDetector:
    """The article's call: Haar on the full frame, ``detectMultiScale(gray, 1.3, 5)``."""

    def __init__(self) -> None:
        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")

    def detect(self, gray: np.ndarray) -> list:
        return [tuple(b) for b in np.asarray(self.cascade.detectMultiScale(gray, 1.3, 5)).reshape(-1, 4)]


def measure(detector, clips: dict, empty: list[np.ndarray]) -> tuple[float, dict[int, float], float]:
    """Milliseconds per frame over every clip, recall at each face size, false positives per empty frame."""
    elapsed, frames, recall = 0.0, 0, {}
    for size, (grays, truth) in clips.items():
        started = time.perf_counter()
        found = [detector.detect(gray) for gray in grays]
        elapsed += time.perf_counter() - started
        frames += len(grays)
        recall[size], _ = score(found, None, truth)
    false = sum(len(detector.detect(gray)) for gray in empty) / len(empty)
    return elapsed / frames * 1000, recall, false


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    faces = validation_faces(EMOTIONS, per_class=args.per_class, offset=40)
    clips = {}
    for size in SIZES:
        frames, truth = make_clip(faces, len(faces), hold=1, scale=size, sensor_noise=2)
        clips[size] = ([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames], truth)
    empty = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in textured_frames(100)]
    print(f"{len(faces)} faces at each size, {len(empty)} face-free frames, {args.threads} thread(s)")
    heads = " | ".join(f"recall {48 * s} px" for s in SIZES)
    print(f"| detector | ms/frame | {heads} | mean recall | false positives/frame |")
    print("|---|---:|" + "---:|" * (len(SIZES) + 2))
    rows = [("tutorial: Haar, full frame, 1.3, 5", TutorialDetector())]
    rows += [(f"Haar at {w} px, 1.2, 3", HaarDetector(w)) for w in (288, 384)]
    rows += [
        (
            f"BlazeFace, {f'whole frame + {t}x{t} tiles' if t else 'whole frame'}, score {s}",
            BlazeFaceDetector(tiles=t, min_score=s, threads=args.threads),
        )
        for t, s in ((0, 0.5), (2, 0.4), (2, 0.5), (2, 0.6), (3, 0.5))
    ]
    for name, detector in rows:
        ms, recall, false = measure(detector, clips, empty)
        cells = " | ".join(f"{recall[s]:.1%}" for s in SIZES)
        print(f"| {name} | {ms:.1f} | {cells} | {np.mean(list(recall.values())):.1%} | {false:.2f} |", flush=True)


if __name__ == "__main__":
    main()
