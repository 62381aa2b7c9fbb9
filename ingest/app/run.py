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
from dataclasses import dataclass
from typing import TextIO

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
        self.media_times: dict[int, float] = {}
        """A file's frames in flight: their media time, by seq (the time their faces are tracked by)."""
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
            self.producer.send(seq, time.time(), image)  # stamped now: its age is what workers check
            self.media_times[seq] = media_time
            self.summary.sent += 1

    def _send_live(self, source: LiveSource) -> None:
        while not self.stop.is_set() and not source.finished():
            captured = source.read(POLL_S)
            self._pump(0)
            if captured is None:
                continue
            if self.window.full:
                self.summary.dropped += 1
            else:
                self.producer.send(captured.seq, captured.ts, captured.image)
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
                self.writer.add(result, self.media_times.pop(result.seq, None))
                self.summary.results += 1
        now = time.monotonic()
        resend, lost = self.window.overdue(now, retry=not self.source.live)
        for frame in resend:
            self.producer.resend(frame)
        self.summary.resent += len(resend)
        self.summary.dropped += len(lost)
        for frame in lost:
            self.media_times.pop(frame.seq, None)
        if self.window.stalled(now, self.settings.stall_timeout):
            raise IngestStalled(
                f"no results from workers for {self.settings.stall_timeout:.0f} s: are workers running "
                f"on this Redis and reading {self.settings.keys.frames}?"
            )
        self.writer.flush(before=self.window.oldest())
