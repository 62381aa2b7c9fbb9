"""Frames onto the queue: grayscale, downscale, encode, XADD, with a bounded window of frames in flight.

Synchronous by design: an ingest run is one loop that alternates between sending frames and reading
results (:mod:`ingest.app.run`), and the only other thread is a live source's reader. Throughput comes from
the window, not from concurrency: it keeps a few batches queued ahead of the workers, and it stops a file
from flooding the queue with frames that would be stale (older than ``max_frame_age``) before a worker
dequeues them. Workers drop stale frames unanswered, so a frame unanswered for ``resend_after`` seconds
is sent again with a fresh timestamp, and given up after ``MAX_MISSES`` such rounds while workers answer.
"""

import dataclasses
import time
from dataclasses import dataclass

import cv2
import numpy as np
import redis

from emostream.config import Settings
from ingest.wire import Encoding, Frame, wire_size

MAX_MISSES = 3
"""Overdue rounds, while workers answer, before a frame is given up."""


def to_wire_image(bgr: np.ndarray, width: int) -> tuple[np.ndarray, float]:
    """The grayscale frame to send (see :func:`~ingest.wire.wire_size`) and its scale (source px per frame px)."""
    gray = bgr if bgr.ndim == 2 else cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    size = wire_size(gray.shape[1], gray.shape[0], width)
    if size == (gray.shape[1], gray.shape[0]):
        return gray, 1.0
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA), gray.shape[1] / size[0]


@dataclass
class Pending:
    frame: Frame
    first_sent_at: float
    sent_at: float
    misses: int = 0


class Window:
    """Frames sent and not yet answered, oldest first; times are ``time.monotonic()`` seconds."""

    def __init__(self, capacity: int, resend_after: float, max_misses: int = MAX_MISSES) -> None:
        if capacity < 1 or not resend_after > 0:
            raise ValueError("the in-flight window needs capacity >= 1 and resend_after > 0")
        self.capacity, self.resend_after, self.max_misses = capacity, resend_after, max_misses
        self._pending: dict[int, Pending] = {}
        self._answered_at = float("-inf")
        self._progress_at = 0.0
        self._lost_since_answer = False
        """Frames were given up since the last answer: a send into an empty window does not restart the
        stall clock then (a slow live source whose every frame is given up must still stall)."""

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def full(self) -> bool:
        return len(self._pending) >= self.capacity

    def oldest(self) -> int | None:
        """The seq of the oldest frame in flight (frames are sent in seq order)."""
        return next(iter(self._pending), None)

    def add(self, frame: Frame, now: float) -> None:
        """Record a send of ``frame``; a resend keeps its place and its misses."""
        if not self._pending and not self._lost_since_answer:
            self._progress_at = now
        pending = self._pending.get(frame.seq)
        if pending is None:
            self._pending[frame.seq] = Pending(frame, now, now)
        else:
            pending.frame, pending.sent_at = frame, now

    def done(self, seq: int, now: float) -> bool:
        """Record the result of ``seq``; False if it was not in flight (a duplicate or a given-up frame)."""
        if self._pending.pop(seq, None) is None:
            return False
        self._answered_at = self._progress_at = now
        self._lost_since_answer = False
        return True

    def overdue(self, now: float, retry: bool) -> tuple[list[Frame], list[Frame]]:
        """Frames unanswered for ``resend_after``: (to send again, given up). Given-up frames leave the window.

        Without ``retry`` every overdue frame is given up. With it, a frame is given up after ``max_misses``
        overdue rounds once workers have answered since it was first sent: rounds while no worker answers
        anything (none running yet) do not count.
        """
        resend, lost = [], []
        for seq, pending in list(self._pending.items()):
            if now - pending.sent_at <= self.resend_after:
                continue
            pending.misses += self._answered_at > pending.first_sent_at
            if retry and pending.misses < self.max_misses:
                resend.append(pending.frame)
            else:
                lost.append(self._pending.pop(seq).frame)
                self._lost_since_answer = True
        return resend, lost

    def stalled(self, now: float, timeout: float) -> bool:
        """Frames are in flight and nothing was answered for ``timeout`` seconds."""
        return bool(self._pending) and now - self._progress_at > timeout


class Producer:
    """Sends one run's frames to the frames stream, asking for results on ``reply``."""

    def __init__(self, client: redis.Redis, settings: Settings, stream: str, reply: str, window: Window) -> None:
        self.client, self.settings, self.stream, self.reply, self.window = client, settings, stream, reply, window
        self._encoding = Encoding(settings.encoding)

    def send(self, seq: int, ts: float, bgr: np.ndarray) -> None:
        """Queue frame ``seq`` captured at ``ts`` (epoch seconds); the window must not be full."""
        image, scale = to_wire_image(bgr, self.settings.frame_width)
        self._xadd(Frame(self.stream, seq, ts, image, self.reply, scale))

    def resend(self, frame: Frame) -> None:
        """Queue ``frame`` again, stamped now so that workers do not take it for stale."""
        self._xadd(dataclasses.replace(frame, ts=time.time()))

    def _xadd(self, frame: Frame) -> None:
        fields = frame.encode(self._encoding, self.settings.jpeg_quality)
        keys = self.settings.keys
        # redis-py's dict[FieldT, EncodableT] is invariant: it takes no narrower dict
        self.client.xadd(keys.frames, fields, maxlen=self.settings.frames_maxlen, approximate=True)  # type: ignore[arg-type]
        self.window.add(frame, time.monotonic())
