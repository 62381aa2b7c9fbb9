"""OpenCV's Haar cascade: the classic detector, selectable with ``EMOSTREAM_DETECTOR=haar``.

Detection runs on a copy of the frame downscaled to ``detect_width`` and boxes are mapped back
to frame pixels. The defaults (288 px, scale factor 1.2, 3 neighbours) were chosen with
``benchmarks/detector.py`` (196 FER2013 faces at each of 96, 144 and 192 px on 640x480 frames,
2 threads): 5.3 ms a frame and 70.6% recall, against 7.5 ms and 69.7% at 256 px, 1.1, 5 (the
previous default) and 10.9 ms and 60.5% for the tutorial's full-frame
``detectMultiScale(gray, 1.3, 5)``; it finds at least as many faces as the tutorial's call at
every size. A larger ``detect_width`` finds more small faces for more time (384 px: 73.5% at
7.9 ms). A face must be at least ``min_face`` pixels (the cascade's 24 px window) at that width:
53 px in a 640-wide frame at the default.

``detect_near`` re-finds known faces in small windows around their last boxes, at the scales
near each face's size: a fraction of a full pass, used by :mod:`workers.tracking`.
"""

import cv2
import cv2.data
import numpy as np

from workers.detect import Box, FrameKey, nearest, window


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

    def detect(self, gray: np.ndarray, key: FrameKey | None = None) -> list[Box]:
        """A full pass over the frame (stateless: ``key`` is ignored)."""
        return self._scan(gray, 0, 0, self._ratio(gray.shape[1]), self.min_face, 0)

    def detect_near(
        self, gray: np.ndarray, boxes: list[Box], grow: float = 2.0, sizes: float = 1.5
    ) -> list[Box | None]:
        """Each of ``boxes`` re-found in a window ``grow`` times its side around it, or None.

        Only faces within ``sizes`` times the old box's size are looked for; of several hits, the
        one nearest the old box's centre is kept.
        """
        height, width = gray.shape
        ratio = self._ratio(width)
        found: list[Box | None] = []
        for box in boxes:
            _, _, w, h = box
            left, top, right, _ = window(box, grow)
            x0, y0 = max(0, round(left)), max(0, round(top))  # clipped at the frame's edges, not shifted
            x1, y1 = min(width, round(right)), min(height, round(top + right - left))
            smallest = max(self.min_face, round(min(w, h) * ratio / sizes))
            hits = self._scan(gray[y0:y1, x0:x1], x0, y0, ratio, smallest, round(max(w, h) * ratio * sizes))
            found.append(nearest(hits, box))
        return found

    def _ratio(self, width: int) -> float:
        """Scale from frame pixels to the pixels detection runs at (never enlarged)."""
        return min(1.0, self.detect_width / width)

    def _scan(self, gray: np.ndarray, x0: int, y0: int, ratio: float, smallest: int, largest: int) -> list[Box]:
        """Faces of ``gray`` (a region at ``x0, y0`` of a frame) scanned at ``ratio``, in frame pixels."""
        height, width = gray.shape
        size = (round(width * ratio), round(height * ratio))
        if min(size) < smallest:  # a window (partly) off the frame may leave nothing to scan
            return []
        small = gray if ratio == 1.0 else cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        found = self.cascade.detectMultiScale(
            small,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(smallest, smallest),
            maxSize=(largest, largest),
        )
        return [
            (x0 + round(x / ratio), y0 + round(y / ratio), round(w / ratio), round(h / ratio))
            for x, y, w, h in np.asarray(found).reshape(-1, 4)
        ]
