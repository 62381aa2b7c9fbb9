"""Follow each stream's faces between frames instead of searching every frame from scratch.

A full detection pass costs most of a frame's work; between consecutive frames of a camera,
faces move a little and new ones are rare. For a frame of a stream it has seen recently, the
tracker re-finds each known face in a small window around its last box (``detect_near``, a
fraction of the cost) and falls back to a full pass when:

- it has not seen the stream, or the frame is not shortly after the last one it saw
  (``max_gap``: another worker took the frames in between, or the stream restarted);
- the frame's size changed (a browser lowers a camera's resolution under load): the known boxes
  no longer fit it;
- ``refresh`` frames have passed since the last full pass (a safety net for slow changes);
- a known face was not re-found (it moved far, turned away or left), or two windows found the
  same face (one of two faces close together left);
- the picture changed outside the known faces: a cell of a coarse thumbnail (1/40 of the width)
  moved by more than ``change`` grey levels since the last frame (someone came in, the camera
  moved, the light changed).

So a new face is found on the first frame it changes the picture, and a quiet stream costs a
thumbnail and a few windows per frame. State is per worker process, bounded to ``streams``
streams (least recently seen forgotten first); a worker that sees no frames of a stream for a
while simply starts again with a full pass.
"""

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from workers.detect import Box, FrameKey, NearDetector, window

THUMB_CELLS = 40
"""Thumbnail width in cells."""
WINDOW_GROW = 2.0
"""A known face is searched for in a window this many times its side."""


@dataclass
class _Track:
    seq: int
    full_seq: int
    boxes: list[Box]
    thumb: np.ndarray
    shape: tuple[int, ...]


class FaceTracker:
    """A :class:`~workers.detect.Detector` that follows faces along each stream."""

    def __init__(
        self,
        detector: NearDetector,
        refresh: int = 10,
        max_gap: int = 4,
        change: float = 12.0,
        streams: int = 1024,
        on_pass: Callable[[str], None] | None = None,
    ) -> None:
        self.detector = detector
        self.refresh = refresh
        self.max_gap = max_gap
        self.change = change
        self.streams = streams
        self.on_pass = on_pass or (lambda kind: None)
        """Called with "full" or "tracked" for every frame of a stream."""
        self.tracks: OrderedDict[str, _Track] = OrderedDict()

    def detect(self, gray: np.ndarray, key: FrameKey | None = None) -> list[Box]:
        """Faces of the frame; without ``key`` (a lone image) always a full pass."""
        if key is None:
            return self.detector.detect(gray)
        stream, seq = key
        thumb = _thumbnail(gray)
        track = self.tracks.pop(stream, None)
        refound = self._refind(track, seq, gray, thumb) if track is not None else None
        if track is not None and refound is not None:
            boxes, full_seq, kind = refound, track.full_seq, "tracked"
        else:
            boxes, full_seq, kind = self.detector.detect(gray), seq, "full"
        self.on_pass(kind)
        self.tracks[stream] = _Track(seq, full_seq, boxes, thumb, gray.shape)
        while len(self.tracks) > self.streams:
            self.tracks.popitem(last=False)
        return boxes

    def _refind(self, track: _Track, seq: int, gray: np.ndarray, thumb: np.ndarray) -> list[Box] | None:
        """The track's faces re-found near where they were, or None when a full pass is needed."""
        if not 0 < seq - track.seq <= self.max_gap or seq - track.full_seq >= self.refresh:
            return None
        if gray.shape != track.shape or self._changed_elsewhere(track, thumb, gray.shape):
            return None
        near = self.detector.detect_near(gray, track.boxes, WINDOW_GROW)
        found = [box for box in near if box is not None]
        return found if len(found) == len(near) and not _any_overlap(found) else None

    def _changed_elsewhere(self, track: _Track, thumb: np.ndarray, shape: tuple[int, ...]) -> bool:
        """Whether a thumbnail cell outside the known faces' search windows changed by more than ``change``."""
        moved = cv2.absdiff(thumb, track.thumb)
        cell_y, cell_x = shape[0] / thumb.shape[0], shape[1] / thumb.shape[1]
        for box in track.boxes:  # a known face moving inside its window is not a change
            left, top, right, bottom = window(box, WINDOW_GROW)
            x0, y0 = max(0, int(left / cell_x)), max(0, int(top / cell_y))
            x1, y1 = max(0, int(np.ceil(right / cell_x))), max(0, int(np.ceil(bottom / cell_y)))
            moved[y0:y1, x0:x1] = 0
        return int(moved.max(initial=0)) > self.change


def _thumbnail(gray: np.ndarray) -> np.ndarray:
    """At most THUMB_CELLS cells a side (a tall, narrow frame would otherwise make a tall thumbnail)."""
    height, width = gray.shape
    size = (THUMB_CELLS, min(THUMB_CELLS, max(1, round(THUMB_CELLS * height / width))))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


def _any_overlap(boxes: list[Box]) -> bool:
    """Whether two boxes cover mostly the same place (more than half of the smaller one)."""
    for i, (x, y, w, h) in enumerate(boxes):
        for x2, y2, w2, h2 in boxes[i + 1 :]:
            inter = max(0, min(x + w, x2 + w2) - max(x, x2)) * max(0, min(y + h, y2 + h2) - max(y, y2))
            if inter > 0.5 * min(w * h, w2 * h2):
                return True
    return False
