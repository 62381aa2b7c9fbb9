"""The video sources of ``emostream ingest``: a file, an RTSP (or HTTP) camera URL, or a local camera index.

A file, or a recording behind a URL (one of known length, ``http://.../clip.mp4``), is read frame by frame,
as fast as the consumer iterates: every frame, or those a sampler keeps by media time. A live source is read
by a background thread that grabs every frame as it arrives, so neither OpenCV's nor the network's buffers
fill up, converts only the frames its sampler keeps, and holds just the newest one for
:meth:`LiveSource.read`: a slow consumer loses frames (counted in ``stats.skipped``) instead of falling
behind. A live source that drops is reopened with exponential backoff (reset once frames come again) until
it is closed.
"""

import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from emostream.config import Settings
from ingest.sampling import Sampler

log = logging.getLogger(__name__)

FILE_MAX_FAILURES = 25
"""Consecutive frames of a file that fail to decode before the file is taken to have ended."""
LIVE_MAX_FAILURES = 2
"""Consecutive failed grabs of a live source before it is reopened."""
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 30.0


class SourceError(OSError):
    """A source that cannot be opened or read; the message names it and says why."""


class Captured(NamedTuple):
    seq: int
    """Index of the frame in its source (0-based), counting frames that were skipped or failed to decode."""
    ts: float
    """Files: media time in seconds. Live sources: capture time, seconds since the epoch."""
    image: np.ndarray
    """BGR pixels."""


@dataclass
class SourceStats:
    bad: int = 0
    """Frames that failed to decode (skipped)."""
    skipped: int = 0
    """Live: sampled frames replaced by a newer one before the consumer took them."""
    reconnects: int = 0


def open_source(spec: str, settings: Settings, fps: float | None = None) -> "FileSource | LiveSource":
    """``spec`` is a camera index (digits), a URL (``scheme://``) or a file path.

    A file gives every frame unless ``fps`` is set; live sources sample at ``fps`` or ``settings.sample_fps``.
    """
    if spec.isdigit():
        return LiveSource(int(spec), Sampler(fps or settings.sample_fps), settings.source_timeout)
    if "://" not in spec:
        return FileSource(str(spec), _open_file(Path(spec)), Sampler(fps) if fps else None)
    capture = _open_url(spec, settings.source_timeout)
    if not capture.isOpened():
        capture.release()
        raise SourceError(f"{_redact(spec)}: cannot open (unreachable, refused or not video)")
    if capture.get(cv2.CAP_PROP_FRAME_COUNT) > 0:  # a recording: its media time, not the wall clock, samples it
        return FileSource(_redact(spec), capture, Sampler(fps) if fps else None, remote=True)
    return LiveSource(spec, Sampler(fps or settings.sample_fps), settings.source_timeout, capture)


class FileSource:
    """The frames of a video file or recording (opened as ``capture``), in order; iterate once.

    A ``remote`` recording (behind a URL) whose reading stops before its end raises :class:`SourceError`
    after two reads that time out, as a live source would be reopened; a local file that does logs it."""

    live = False

    def __init__(
        self, name: str, capture: cv2.VideoCapture, sampler: Sampler | None = None, remote: bool = False
    ) -> None:
        self.name = name
        self.sampler = sampler
        self.stats = SourceStats()
        self._capture, self._remote = capture, remote

    def __iter__(self) -> Iterator[Captured]:
        seq = 0
        budget = LIVE_MAX_FAILURES if self._remote else FILE_MAX_FAILURES
        while (failed := _grab(self._capture, budget)) is not None:
            self.stats.bad += failed
            seq += failed
            ts = self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000
            if self.sampler is None or self.sampler.keep(ts):
                ok, image = self._capture.retrieve()
                if ok and image is not None:
                    yield Captured(seq, ts, image)
                else:
                    self.stats.bad += 1
            seq += 1
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if count > 0 and seq < count - 1:  # a frame count is an estimate for some formats: allow one
            stopped = f"{self.name}: reading stopped after frame {seq} of {count}"
            if self._remote:
                raise SourceError(f"{stopped} (the connection stalled or dropped)")
            log.warning("%s (the rest could not be decoded)", stopped)

    def close(self) -> None:
        self._capture.release()

    def __enter__(self) -> "FileSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LiveSource:
    """A camera or network stream read in real time by a background thread; :meth:`close` stops it."""

    live = True

    def __init__(
        self, target: str | int, sampler: Sampler, timeout: float, capture: cv2.VideoCapture | None = None
    ) -> None:
        """``capture``: ``target`` opened already."""
        self.name = f"camera {target}" if isinstance(target, int) else _redact(target)
        self.sampler = sampler
        self.stats = SourceStats()
        self._target, self._timeout = target, timeout
        capture = capture or self._open()
        if not capture.isOpened():
            what = "no such camera, or it is busy" if isinstance(target, int) else "unreachable, refused or not video"
            raise SourceError(f"{self.name}: cannot open ({what})")
        self._newest: Captured | None = None
        self._ready = threading.Condition()
        self._stop = threading.Event()
        self._failed: Exception | None = None
        self._delay = RECONNECT_FIRST_S
        self._thread = threading.Thread(target=self._read_forever, args=(capture,), name="ingest-source", daemon=True)
        self._thread.start()

    def read(self, timeout: float) -> Captured | None:
        """The newest sampled frame not yet read, waiting up to ``timeout`` seconds; None if none came.

        Raises :class:`SourceError` once the reader has failed and its last frame was taken."""
        with self._ready:
            self._ready.wait_for(lambda: self._newest is not None or self._failed is not None, timeout)
            item, self._newest = self._newest, None
        if item is None and self._failed is not None:
            raise SourceError(f"{self.name}: reading failed: {self._failed}") from self._failed
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(self._timeout + 1)

    def __enter__(self) -> "LiveSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> cv2.VideoCapture:
        if isinstance(self._target, int):
            return cv2.VideoCapture(self._target)
        return _open_url(self._target, self._timeout)

    def _read_forever(self, capture: cv2.VideoCapture | None) -> None:
        try:
            self._read(capture)
        except Exception as err:  # an OpenCV error: the run ends saying so, instead of waiting forever
            log.exception("%s: reading failed", self.name)
            with self._ready:
                self._failed = err
                self._ready.notify()

    def _read(self, capture: cv2.VideoCapture | None) -> None:
        seq, reopened = 0, False
        while capture is not None and not self._stop.is_set():
            failed = _grab(capture, LIVE_MAX_FAILURES)
            if failed is None:
                capture.release()
                capture, reopened = self._reconnect(), True
                continue
            if reopened:  # frames again: the stream is back
                self.stats.reconnects += 1
                log.warning("%s: reconnected", self.name)
                self._delay, reopened = RECONNECT_FIRST_S, False
            ts = time.time()
            self.stats.bad += failed
            seq += failed
            if self.sampler.keep(ts):
                ok, image = capture.retrieve()
                if ok and image is not None:
                    with self._ready:
                        self.stats.skipped += self._newest is not None
                        self._newest = Captured(seq, ts, image)
                        self._ready.notify()
                else:
                    self.stats.bad += 1
            seq += 1
        if capture is not None:
            capture.release()

    def _reconnect(self) -> cv2.VideoCapture | None:
        """Reopen after a wait that doubles with each loss until frames come again; None once closed."""
        log.warning("%s: stream lost, reconnecting in %.1f s", self.name, self._delay)
        while not self._stop.wait(self._delay):
            self._delay = min(2 * self._delay, RECONNECT_MAX_S)
            capture = self._open()
            if capture.isOpened():
                return capture
            capture.release()
            log.warning("%s: still unreachable, next try in %.1f s", self.name, self._delay)
        return None


def _open_url(url: str, timeout: float) -> cv2.VideoCapture:
    """``url`` through FFmpeg, with ``timeout`` seconds to open it and to wait for each frame."""
    ms = int(timeout * 1000)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
    return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)


def _open_file(path: Path) -> cv2.VideoCapture:
    if not path.exists():
        raise SourceError(f"{path}: no such file")
    if not path.is_file() or not os.access(path, os.R_OK):
        raise SourceError(f"{path}: not a readable file")
    probe = cv2.VideoCapture(str(path))
    readable = probe.isOpened() and _grab(probe, FILE_MAX_FAILURES) is not None
    probe.release()
    if not readable:
        raise SourceError(f"{path}: not a video OpenCV can decode")
    return cv2.VideoCapture(str(path))


def _grab(capture: cv2.VideoCapture, max_failures: int) -> int | None:
    """Grab the next decodable frame: how many frames failed before it, or None after ``max_failures``."""
    for failed in range(max_failures):
        if capture.grab():
            return failed
    return None


def _redact(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return urlunsplit(parts._replace(netloc=f"{userinfo.split(':')[0]}:***@{hostport}"))
