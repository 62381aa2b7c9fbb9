"""Haar detection settings: milliseconds per 640x480 frame against face recall, by face size.

    python benchmarks/detector.py [--per-class 20]

Validation faces (offset 40, so not the faces the other benchmarks use) are placed one per
frame at x2, x3 and x4 (96, 144 and 192 px in a 640x480 frame); a face is found when a box
overlaps it with IoU > 0.5. The first row is the tutorial's call (full frame, 1.3, 5), then
the worker's :class:`~workers.detect.HaarDetector` at several widths, scale factors and
neighbour counts, with all of OpenCV's threads.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import cv2
import numpy as np
from clips import make_clip, score, validation_faces

from emostream.labels import EMOTIONS
from workers.detect import HaarDetector

SIZES = (2, 3, 4)
"""Upscaling of the 48x48 faces placed on the frames."""
SETTINGS = [
    (256, 1.1, 5),
    (256, 1.2, 3),
    (288, 1.2, 3),
    (288, 1.25, 3),
    (320, 1.1, 3),
    (320, 1.2, 3),
    (320, 1.25, 3),
    (320, 1.3, 3),
    (352, 1.25, 3),
    (384, 1.2, 3),
]
"""(detect_width, scale_factor, min_neighbors)."""


class TutorialDetector:
    """The article's call: Haar on the full frame, ``detectMultiScale(gray, 1.3, 5)``."""

    def __init__(self) -> None:
        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")

    def detect(self, gray: np.ndarray) -> list:
        return [tuple(b) for b in np.asarray(self.cascade.detectMultiScale(gray, 1.3, 5)).reshape(-1, 4)]


def measure(detector, clips: dict) -> tuple[float, dict[int, float]]:
    """Milliseconds per frame over every clip, and the recall at each face size."""
    elapsed, frames, recall = 0.0, 0, {}
    for size, (grays, truth) in clips.items():
        started = time.perf_counter()
        found = [detector.detect(gray) for gray in grays]
        elapsed += time.perf_counter() - started
        frames += len(grays)
        recall[size], _ = score(found, None, truth)
    return elapsed / frames * 1000, recall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-class", type=int, default=20)
    args = parser.parse_args()
    faces = validation_faces(EMOTIONS, per_class=args.per_class, offset=40)
    clips = {}
    for size in SIZES:
        frames, truth = make_clip(faces, len(faces), hold=1, scale=size)
        clips[size] = ([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames], truth)
    print(f"{len(faces)} faces at each size, OpenCV threads: {cv2.getNumThreads()}")
    heads = " | ".join(f"recall {48 * s} px" for s in SIZES)
    print(f"| detector | ms/frame | {heads} | mean recall |")
    print("|---|---:|" + "---:|" * (len(SIZES) + 1))
    rows = [("tutorial: full frame, 1.3, 5", TutorialDetector())]
    rows += [
        (f"Haar at {w} px, {sf}, {mn}", HaarDetector(w, scale_factor=sf, min_neighbors=mn)) for w, sf, mn in SETTINGS
    ]
    for name, detector in rows:
        ms, recall = measure(detector, clips)
        cells = " | ".join(f"{recall[s]:.0%}" for s in SIZES)
        print(f"| {name} | {ms:.1f} | {cells} | {np.mean(list(recall.values())):.1%} |", flush=True)


if __name__ == "__main__":
    main()
