"""Face detection on grayscale frames; detectors are pluggable by name.

Detection runs on a copy of the frame downscaled to ``detect_width`` and boxes are mapped back
to frame pixels. The defaults (288 px, scale factor 1.2, 3 neighbours) were chosen with
``benchmarks/detector.py`` (196 FER2013 faces at each of 96, 144 and 192 px on 640x480 frames,
2 threads): 5.3 ms a frame and 70.6% recall, against 7.5 ms and 69.7% at 256 px, 1.1, 5 (the
previous default) and 10.9 ms and 60.5% for the tutorial's full-frame
``detectMultiScale(gray, 1.3, 5)``; it finds at least as many faces as the tutorial's call at
every size. A larger ``detect_width`` finds more small faces for more time (384 px: 73.5% at
7.9 ms). A face must be at least ``min_face`` pixels (the cascade's 24 px window) at that width:
53 px in a 640-wide frame at the default.
"""

from collections.abc import Callable
from typing import Protocol

import cv2
import numpy as np

Box = tuple[int, int, int, int]
"""x, y, w, h in frame pixels."""


class Detector(Protocol):
    def detect(self, gray: np.ndarray) -> list[Box]:
        """Faces in a 2-D uint8 frame."""
        ...


class HaarDetector:
    """OpenCV's frontal-face Haar cascade (from ``opencv-python-headless<5``)."""

    def __init__(
        self, detect_width: int = 288, min_face: int = 24, scale_factor: float = 1.2, min_neighbors: int = 3
    ) -> None:
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise RuntimeError(f"cannot load the Haar cascade at {path}")
        self.detect_width = detect_width
        self.min_face = min_face
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors

    def detect(self, gray: np.ndarray) -> list[Box]:
        height, width = gray.shape
        ratio = min(1.0, self.detect_width / width)
        small = (
            gray
            if ratio == 1.0
            else cv2.resize(gray, (round(width * ratio), round(height * ratio)), interpolation=cv2.INTER_AREA)
        )
        found = self.cascade.detectMultiScale(
            small,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_face, self.min_face),
        )
        return [tuple(round(v / ratio) for v in box) for box in np.asarray(found).reshape(-1, 4)]


DETECTORS: dict[str, Callable[[int], Detector]] = {"haar": lambda width: HaarDetector(width)}


def make_detector(name: str, detect_width: int) -> Detector:
    try:
        return DETECTORS[name](detect_width)
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; choose from {sorted(DETECTORS)}") from None
