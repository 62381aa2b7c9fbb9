"""The results of an ingest run: read from its reply stream, tracked, written as JSON lines in seq order."""

import heapq
import json
import logging
from typing import TextIO

import redis

from ingest.tracks import StreamTracks
from ingest.wire import Result, WireError, read_entries

log = logging.getLogger(__name__)

READ_COUNT = 256
"""Most results taken per XREAD."""


class Collector:
    """Reads one reply stream from its start; entries already read are trimmed away."""

    def __init__(self, client: redis.Redis, reply: str) -> None:
        self.client, self.reply = client, reply
        self.malformed = 0
        self._last_id: bytes | str = "0-0"

    def poll(self, wait: float) -> list[Result]:
        """The results that arrived since the last poll, waiting up to ``wait`` seconds for the first."""
        block = int(wait * 1000) or None
        entries = read_entries(self.client.xread({self.reply: self._last_id}, count=READ_COUNT, block=block))
        if not entries:
            return []
        self._last_id = entries[-1][0]
        self.client.xtrim(self.reply, minid=self._last_id, approximate=False)
        results = []
        for entry_id, fields in entries:
            try:
                results.append(Result.decode(fields))
            except WireError as err:
                self.malformed += 1
                log.warning("skipping malformed result %s: %s", entry_id, err)
        return results

    def close(self) -> None:
        self.client.delete(self.reply)


class OrderedWriter:
    """Writes one stream's results as JSON lines in seq order: a result is held until no earlier
    frame can still come, then its faces get their tracks and smoothed labels (:mod:`ingest.tracks`)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.written = 0
        self.tracks = StreamTracks()
        self._held: list[tuple[int, int, Result, float | None]] = []

    def add(self, result: Result, at: float | None = None) -> None:
        """Hold ``result``; ``at``: its frame's time for tracking when ``ts`` is not (a file's media time)."""
        heapq.heappush(self._held, (result.seq, id(result), result, at))

    def flush(self, before: int | None = None) -> None:
        """Write the held results with seq below ``before`` (all of them when None)."""
        while self._held and (before is None or self._held[0][0] < before):
            _, _, result, at = heapq.heappop(self._held)
            result = self.tracks.update(result, at)
            self.out.write(json.dumps(result.to_json(), separators=(",", ":")) + "\n")
            self.written += 1
        self.out.flush()
