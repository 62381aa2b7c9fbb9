"""What every face detector is: boxes of faces in grayscale frames, and re-finding known faces.

Two implementations: :mod:`workers.blazeface` (the default: a small DNN on LiteRT, with tiles for
small faces) and :mod:`workers.haar` (OpenCV's Haar cascade). Both return boxes framed like a
FER2013 image of the face, so one crop (:mod:`ingest.crop`) serves both; ``detect_near`` is what
:mod:`workers.tracking` calls to follow faces between frames.
"""

from typing import Protocol

import numpy as np

Box = tuple[int, int, int, int]
"""x, y, w, h in frame pixels."""
FrameKey = tuple[str, int]
"""A frame's stream and sequence number, for detectors that follow streams."""


class Detector(Protocol):
    def detect(self, gray: np.ndarray, key: FrameKey | None = None) -> list[Box]:
        """Faces in a 2-D uint8 frame; ``key`` names the frame's place in its stream, if any."""
        ...


class NearDetector(Detector, Protocol):
    def detect_near(
        self, gray: np.ndarray, boxes: list[Box], grow: float = 2.0, sizes: float = 1.5
    ) -> list[Box | None]:
        """Each of ``boxes`` re-found in a square ``grow`` times its side around it, or None."""
        ...


def window(box: Box, grow: float) -> tuple[float, float, float, float]:
    """Left, top, right, bottom of the square ``grow`` times the box's side around its centre."""
    x, y, w, h = box
    half = max(w, h) * grow / 2
    return x + w / 2 - half, y + h / 2 - half, x + w / 2 + half, y + h / 2 + half


def nearest(candidates: list[Box], box: Box) -> Box | None:
    """The candidate whose centre is nearest ``box``'s (city-block distance), or None."""
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    return min(candidates, key=lambda b: abs(b[0] + b[2] / 2 - cx) + abs(b[1] + b[3] / 2 - cy), default=None)
