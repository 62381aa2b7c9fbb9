"""Face tracks and smoothed labels over one stream's results: pure (no I/O), so every reader agrees.

The gateway (per camera) and ``emostream ingest``'s writer (per run) pass each result of a
stream through one :class:`StreamTracks`, in order. Every face then carries

- ``track``: an integer that stays the same while the face stays in view (a face missed for
  up to ``keep_s`` seconds keeps it) and is new for a new face. Faces are matched to tracks by
  the overlap of their box with the track's box moved on by the track's velocity, so two
  faces that cross keep their tracks;
- ``smoothed``: ``{"label", "score", "scores"}``, the track's scores averaged exponentially
  over time (time constant ``smoothing_s``, from capture times, so it does not depend on the
  result rate) with hysteresis on the label: the shown label changes only when another
  class leads it by ``hysteresis``.

``label``, ``score`` and ``scores`` stay the raw values of the frame.
"""

import math
from dataclasses import dataclass

import numpy as np

from emostream.labels import EMOTIONS
from ingest.wire import Face, Result

KEEP_S = 0.6
"""A track unseen this long ends; a face appearing later gets a new one."""
SMOOTHING_S = 0.1
"""Time constant of the exponential average of a track's scores."""
HYSTERESIS = 0.12
"""Lead another class needs over the shown label's smoothed score to replace it."""
MIN_OVERLAP = 0.2
"""Least intersection-over-union of a face with a track's predicted box to continue it."""
VELOCITY_WEIGHT = 0.5
"""Share of the newest displacement in a track's velocity estimate."""
MIN_DT = 0.01
"""Results closer in time than this (seconds) do not update a track's velocity: a pixel of
detector jitter over a microsecond is no motion."""


@dataclass
class _Track:
    id: int
    box: np.ndarray
    """x, y, w, h of its last face."""
    velocity: np.ndarray
    """Pixels per second of the box's centre."""
    ts: float
    scores: np.ndarray
    label: int

    def predicted(self, ts: float) -> np.ndarray:
        box = self.box.copy()
        box[:2] += self.velocity * max(0.0, ts - self.ts)
        return box

    def smoothed(self) -> dict:
        scores = {name: round(float(p), 4) for name, p in zip(EMOTIONS, self.scores, strict=True)}
        return {"label": EMOTIONS[self.label], "score": scores[EMOTIONS[self.label]], "scores": scores}


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``x, y, w, h`` boxes."""
    width = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    height = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return float(inter / (a[2] * a[3] + b[2] * b[3] - inter))


class StreamTracks:
    """Tracks of one stream: call :meth:`update` with each of its results, oldest first."""

    def __init__(
        self, keep_s: float = KEEP_S, smoothing_s: float = SMOOTHING_S, hysteresis: float = HYSTERESIS
    ) -> None:
        self.keep_s, self.smoothing_s, self.hysteresis = keep_s, smoothing_s, hysteresis
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._last: tuple[int, float] | None = None

    def update(self, result: Result, at: float | None = None) -> Result:
        """Set ``track`` and ``smoothed`` of every face of ``result`` (in place) and return it.

        ``at`` is the frame's time in seconds when its ``ts`` is not (a file's frames are stamped
        when sent, in bursts: their media time is what passes between them). A result older than
        one already seen (workers may answer out of order) is labelled from the tracks as they are,
        without changing them.
        """
        now = result.ts if at is None else at
        late = self._last is not None and result.seq <= self._last[0]
        if not late:
            self._tracks = [t for t in self._tracks if now - t.ts <= self.keep_s]
            self._last = (result.seq, now)
        boxes = [np.asarray(face.box, np.float64) for face in result.faces]
        matches = self._match(boxes, now)
        for index, face in enumerate(result.faces):
            track = matches.get(index)
            if late:
                self._label_late(face, track)
            elif track is None:
                track = self._start(boxes[index], now, face)
            else:
                self._continue(track, boxes[index], now, face)
            if track is not None:
                face.track, face.smoothed = track.id, track.smoothed()
        return result

    def _match(self, boxes: list[np.ndarray], ts: float) -> dict[int, _Track]:
        """Face index -> track, greedily by overlap with each track's predicted box."""
        pairs = sorted(
            (
                (overlap(box, track.predicted(ts)), index, position)
                for position, track in enumerate(self._tracks)
                for index, box in enumerate(boxes)
            ),
            reverse=True,
        )
        matches: dict[int, _Track] = {}
        taken: set[int] = set()
        for score, index, position in pairs:
            if score < MIN_OVERLAP:
                break
            if index not in matches and position not in taken:
                matches[index] = self._tracks[position]
                taken.add(position)
        return matches

    def _start(self, box: np.ndarray, ts: float, face: Face) -> _Track:
        raw = _probabilities(face)
        track = _Track(self._next_id, box, np.zeros(2), ts, raw, int(np.argmax(raw)))
        self._next_id += 1
        self._tracks.append(track)
        return track

    def _continue(self, track: _Track, box: np.ndarray, ts: float, face: Face) -> None:
        dt = ts - track.ts
        if dt >= MIN_DT:
            moved = (_centre(box) - _centre(track.box)) / dt
            track.velocity = VELOCITY_WEIGHT * moved + (1 - VELOCITY_WEIGHT) * track.velocity
        if dt > 0:
            weight = 1.0 - math.exp(-dt / self.smoothing_s) if self.smoothing_s > 0 else 1.0
            track.scores = track.scores + weight * (_probabilities(face) - track.scores)
        track.box, track.ts = box, max(ts, track.ts)
        best = int(np.argmax(track.scores))
        if track.scores[best] - track.scores[track.label] >= self.hysteresis:
            track.label = best

    def _label_late(self, face: Face, track: _Track | None) -> None:
        if track is None:  # a face no track knows: its own values, under an id never reused
            face.track, face.smoothed = self._next_id, {"label": face.label, "score": face.score, "scores": face.scores}
            self._next_id += 1


def _centre(box: np.ndarray) -> np.ndarray:
    return box[:2] + box[2:] / 2


def _probabilities(face: Face) -> np.ndarray:
    return np.array([face.scores.get(name, 0.0) for name in EMOTIONS], np.float64)
