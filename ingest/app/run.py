"""One ingest run: frames from a source through the queue and the workers, results to a JSON-lines file.

A file is sent as fast as the workers answer, never more than the window ahead, and the run ends when
every frame is answered or given up. A live source is sent in real time: a sampled frame that finds the
window full is dropped, and the run ends when ``stop`` is set (Ctrl-C, SIGTERM), after a last wait of up
to ``resend_after`` for the frames in flight.
"""

import logging
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import TextIO

import numpy as np
import redis

from emostream.config import Settings
from ingest.app.collector import Collector, OrderedWriter
from ingest.app.producer import Producer, Window
from ingest.app.sources import FileSource, LiveSource

log = logging.getLogger(__name__)

POLL_S = 0.1
"""Longest the loop blocks on one thing, so it notices results, frames and ``stop`` promptly."""


class IngestStalled(RuntimeError):
    """No worker answered for ``stall_timeout`` seconds while frames were in flight."""


@dataclass
class Summary:
    sent: int = 0
    """Distinct frames queued."""
    results: int = 0
    dropped: int = 0
    """Sampled frames that got no result: skipped to stay real-time, or unanswered."""
    bad: int = 0
    """Frames that failed to decode."""
    resent: int = 0
    elapsed: float = 0.0

    def __str__(self) -> str:
        fps = self.results / self.elapsed if self.elapsed > 0 else 0.0
        return (
            f"{self.sent} frames sent, {self.results} results, {self.dropped} dropped, {self.bad} bad frames, "
            f"{self.resent} resent; {fps:.1f} fps over {self.elapsed:.1f} s"
        )


class IngestRun:
    """Wires a source, a producer, a collector and an ordered writer for one run; call :meth:`run` once."""

    def __init__(
        self,
        source: FileSource | LiveSource,
        client: redis.Redis,
        settings: Settings,
        out: TextIO,
        stop: threading.Event | None = None,
    ) -> None:
        self.source, self.settings = source, settings
        self.stop = stop or threading.Event()
        self.stream = f"ingest-{uuid.uuid4().hex[:12]}"
        reply = settings.keys.results(self.stream)
        self.window = Window(settings.inflight_frames or 4 * settings.batch_frames, settings.resend_after)
        self.producer = Producer(client, settings, self.stream, reply, self.window)
        self.collector = Collector(client, reply)
        self.writer = OrderedWriter(out)
        self.in_flight: dict[int, tuple[int, float | None]] = {}
        """Frames in flight by their seq on the wire (consecutive, as workers' face tracking needs): their
        index in the source, and a file's media time (the time their faces are tracked by)."""
        self.summary = Summary()

    def run(self) -> Summary:
        """Raises :class:`IngestStalled` when workers stop answering; results so far are written anyway."""
        started, skipped = time.monotonic(), self.source.stats.skipped
        try:
            if isinstance(self.source, LiveSource):
                self._send_live(self.source)
            else:
                self._send_file(self.source)
            self._drain()
        finally:
            self.writer.flush()
            self.collector.close()
            self.summary.bad = self.source.stats.bad
            self.summary.dropped += self.source.stats.skipped - skipped
            self.summary.elapsed = time.monotonic() - started
        return self.summary

    def _send_file(self, source: FileSource) -> None:
        for seq, media_time, image in source:
            while self.window.full and not self.stop.is_set():
                self._pump(POLL_S)
            if self.stop.is_set():
                return
            self._send(seq, time.time(), image, media_time)  # stamped now: its age is what workers check

    def _send_live(self, source: LiveSource) -> None:
        while not self.stop.is_set():
            captured = source.read(POLL_S)
            self._pump(0)
            if captured is None:
                continue
            if self.window.full:
                self.summary.dropped += 1
            else:
                self._send(captured.seq, captured.ts, captured.image, None)

    def _send(self, index: int, ts: float, image: np.ndarray, media_time: float | None) -> None:
        """Queue the source's frame ``index`` as the next seq of the stream: a sampled source skips
        frames, and a gap in seq would read to workers as frames another worker took."""
        seq = self.summary.sent
        self.producer.send(seq, ts, image)
        self.in_flight[seq] = (index, media_time)
        self.summary.sent += 1

    def _drain(self) -> None:
        deadline = time.monotonic() + self.settings.resend_after
        while len(self.window) and (not self.stop.is_set() or time.monotonic() < deadline):
            self._pump(POLL_S)
        self.summary.dropped += len(self.window)

    def _pump(self, wait: float) -> None:
        """Take in results, resend or give up overdue frames, write what is complete."""
        for result in self.collector.poll(wait):
            if result.stream == self.stream and self.window.done(result.seq, time.monotonic()):
                index, media_time = self.in_flight.pop(result.seq)
                self.writer.add(replace(result, seq=index), media_time)
                self.summary.results += 1
        now = time.monotonic()
        resend, lost = self.window.overdue(now, retry=not self.source.live)
        for frame in resend:
            self.producer.resend(frame)
        self.summary.resent += len(resend)
        self.summary.dropped += len(lost)
        for frame in lost:
            del self.in_flight[frame.seq]
        if self.window.stalled(now, self.settings.stall_timeout):
            raise IngestStalled(
                f"no results from workers for {self.settings.stall_timeout:.0f} s: are workers running "
                f"on this Redis and reading {self.settings.keys.frames}?"
            )
        oldest = self.window.oldest()
        self.writer.flush(before=None if oldest is None else self.in_flight[oldest][0])
