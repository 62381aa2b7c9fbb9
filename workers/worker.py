"""The worker loop: read a batch of frames through the consumer group, label them, answer, ack.

One iteration:

1. ``XREADGROUP COUNT batch_frames BLOCK`` on the frames stream; once a frame is in, wait
   ``batch_wait_ms`` and read again (without blocking) to fill the batch across streams.
2. Decode; a malformed entry is counted and acknowledged (it can never succeed), a frame
   that waited in the stream longer than ``max_frame_age`` is dropped unprocessed and counted.
   The wait is judged by Redis's clock (the entry id is the time Redis added it; the worker
   learns how far its own clock is from Redis's at every heartbeat), so hosts whose clocks
   disagree still agree on a frame's age.
3. Detect faces in every frame, crop them, classify all faces of the batch in one call.
4. In one Lua script (atomic): ``XACK`` each frame and, only if this ack was the one that
   removed it from the pending list, ``XADD`` its result to the frame's reply stream; then
   ``XDEL`` it, so the stream's length is the backlog. A frame is published at most once even
   when a slow worker's frames were reclaimed by another.

Every heartbeat a worker also ``XAUTOCLAIM``s frames pending longer than ``claim_idle`` in
other consumers (a worker killed mid-batch): with the default ``claim_idle`` (twice the latency
budget) they are stale by then, so they are acknowledged and counted, none is lost silently;
a fresh one (a shorter ``claim_idle``) would be processed.
"""

import contextlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from threading import Event

import numpy as np
import redis

from emostream.config import Settings
from emostream.metrics import Metrics
from ingest.keys import live_heartbeats
from ingest.wire import WIRE_VERSION, Entry, Frame, Result, WireError, read_entries
from workers.analysis import analyse
from workers.classify import LiveModel
from workers.detect import Detector

log = logging.getLogger(__name__)

REPLY_MAXLEN = 1000
HEARTBEAT_S = 1.0
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.25, 5.0
REPLY_TTL_S = 120
"""A reply stream nobody writes to for this long disappears (its producer is gone)."""
UNAVAILABLE = (redis.exceptions.ReadOnlyError, redis.exceptions.MasterDownError, redis.exceptions.OutOfMemoryError)
REFUSING = ("MISCONF", "NOREPLICAS", "BUSY ")
"""Redis's answers while it cannot take writes (the classes redis-py has for them, and the prefixes of
those it has none for): a primary turned replica (a failover), a replica without its primary, a full
Redis, a snapshot that could not be saved (a full disk), too few replicas, a long script. Waited out
like a lost connection."""
STREAM_GONE = ("NOGROUP", "UNBLOCKED", "no such key")
"""Redis's answers when the frames stream or its group vanished (a restart, FLUSHDB, DEL): made again."""
BEAT_EXPIRE_S = 60.0
"""A heartbeat older than this (a worker that died without saying so) is removed from the workers hash."""
PRUNE_EVERY = 30
"""Heartbeats between two sweeps of the workers hash for expired entries."""

PUBLISH_AND_ACK = """
local published = 0
local results = tonumber(ARGV[3])
for i = 1, results do
  local id = ARGV[3 + 2 * i - 1]
  if redis.call('XACK', KEYS[1], ARGV[1], id) == 1 then
    -- a reply key holding something else than a stream loses its answer, nothing more
    local reply = KEYS[1 + i]
    local added = redis.pcall('XADD', reply, 'MAXLEN', '~', ARGV[2], '*', 'v', ARGV[#ARGV], 'json', ARGV[3 + 2 * i])
    if type(added) == 'string' then
      redis.call('EXPIRE', reply, ARGV[#ARGV - 1])
      published = published + 1
    end
  end
  redis.call('XDEL', KEYS[1], id)
end
for j = 4 + 2 * results, #ARGV - 2 do
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[j])
  redis.call('XDEL', KEYS[1], ARGV[j])
end
return published
"""
"""KEYS: frames, reply of each result. ARGV: group, maxlen, n, (id, json) x n, dropped ids..., ttl, version."""


@dataclass
class Batch:
    ids: list[bytes] = field(default_factory=list)
    """Every entry read; those not in ``frame_ids`` are acknowledged without an answer."""
    frames: list[Frame] = field(default_factory=list)
    frame_ids: list[bytes] = field(default_factory=list)
    read_at: float = 0.0
    """When the batch was read, by Redis's clock (entry ids are Redis's times too)."""


class Worker:
    """One consumer of the frames stream; run several on any hosts that reach Redis."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        detector: Detector,
        model: LiveModel,
        name: str | None = None,
        metrics: Metrics | None = None,
        metrics_address: str = "",
        claim_idle_ms: int | None = None,
    ) -> None:
        self.settings = settings
        self.keys = settings.keys
        self.redis = client
        self.detector = detector
        self.model = model
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.metrics = metrics or Metrics(process_collectors=False)
        self.metrics_address = metrics_address
        self.metrics.serve_model(model.classifier.version, model.classifier.architecture)
        self.claim_idle_ms = claim_idle_ms or round(max(1.0, 2 * settings.max_frame_age) * 1000)
        self._publish = client.register_script(PUBLISH_AND_ACK)
        self.stopping = Event()
        self.clock_offset = 0.0
        """Redis's clock minus this host's, in seconds (measured at every heartbeat)."""
        self._beats = 0

    def ensure_group(self) -> None:
        """Create the consumer group (and stream) if needed, from the stream's start."""
        try:
            self.redis.xgroup_create(self.keys.frames, self.keys.group, id="0", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    def read_batch(self, block_ms: int = 1000) -> Batch:
        """Up to ``batch_frames`` entries; waits ``block_ms`` for the first, ``batch_wait_ms`` for the rest.

        The fill window is a sleep and a non-blocking read, never a short ``BLOCK``: Redis checks
        blocking timeouts only every ``1/hz`` seconds (100 ms at the default ``hz 10``), so a
        5 ms ``BLOCK`` that finds nothing returns after 100 ms (measured: the latency floor).
        """
        batch = Batch()
        limit = self.settings.batch_frames
        entries = self._read(limit, block_ms)
        if entries:
            first_at = time.monotonic()
            if len(entries) < limit and self.settings.batch_wait_ms:
                time.sleep(self.settings.batch_wait_ms / 1000)
                entries += self._read(limit - len(entries), None)
            self.metrics.batch_wait.observe(time.monotonic() - first_at)
        for entry_id, fields in entries:
            batch.ids.append(entry_id)
            self._accept(batch, entry_id, fields)
        batch.read_at = self.redis_now()
        return batch

    def _read(self, count: int, block_ms: int | None) -> list[Entry]:
        reply = self.redis.xreadgroup(self.keys.group, self.name, {self.keys.frames: ">"}, count=count, block=block_ms)
        return list(read_entries(reply))

    def _accept(self, batch: Batch, entry_id: bytes, fields: dict, stale_reason: str = "stale") -> None:
        # its age first, from the entry's id: a backlog of stale frames costs no decoding
        if self.redis_now() - int(entry_id.split(b"-", 1)[0]) / 1000 > self.settings.max_frame_age:
            self.metrics.frames_dropped.labels(reason=stale_reason).inc()
            return
        try:
            frame = Frame.decode(fields)
            if not frame.reply.startswith(self.keys.results("")):
                raise WireError(f"reply key {frame.reply!r} is not a results stream")
        except WireError as err:
            self.metrics.frames_dropped.labels(reason="malformed").inc()
            log.warning("dropping malformed frame %s: %s", entry_id.decode(), err)
            return
        batch.frames.append(frame)
        batch.frame_ids.append(entry_id)

    def reclaim(self) -> Batch:
        """Frames a dead (or stuck) worker left pending, claimed for this worker."""
        batch = Batch(read_at=self.redis_now())
        _, entries, deleted = self.redis.xautoclaim(
            self.keys.frames, self.keys.group, self.name, self.claim_idle_ms, "0-0", count=self.settings.batch_frames
        )
        for entry_id, fields in entries:
            batch.ids.append(entry_id)
            self._accept(batch, entry_id, fields or {}, stale_reason="reclaimed_stale")
        if deleted:  # trimmed from the stream while pending: nothing left to process
            self.redis.xack(self.keys.frames, self.keys.group, *deleted)
            self.metrics.frames_dropped.labels(reason="reclaimed_stale").inc(len(deleted))
        self.metrics.frames_reclaimed.inc(len(entries))
        return batch

    def process(self, batch: Batch) -> list[Result]:
        """Label the batch's fresh frames, publish their results and acknowledge every entry.

        A batch whose labelling raises (a bug, a frame no detector expected) is logged, counted as
        ``failed`` and acknowledged unanswered: the worker goes on with the next one.
        """
        results: list[Result] = []
        answered_ids: list[bytes] = []
        if batch.frames:
            try:
                results, answered_ids = self.label(batch), batch.frame_ids
            except redis.RedisError:
                raise  # the connection's problem, not the batch's: retried by run()
            except Exception:
                log.exception("worker %s: labelling %d frame(s) failed; dropping them", self.name, len(batch.frames))
                self.metrics.frames_dropped.labels(reason="failed").inc(len(batch.frames))
        answered = set(answered_ids)
        dropped = [i for i in batch.ids if i not in answered]
        args: list = [self.keys.group, REPLY_MAXLEN, len(results)]
        for entry_id, result in zip(answered_ids, results, strict=True):
            args += [entry_id, result.encode()["json"]]
        published = self._publish(
            keys=[self.keys.frames, *(f.reply for f in batch.frames[: len(results)])],
            args=[*args, *dropped, REPLY_TTL_S, WIRE_VERSION],
        )
        self.metrics.frames_processed.inc(len(results))
        self.metrics.results_published.inc(published)
        if published < len(results):
            log.warning(
                "%d frame(s) were answered or reclaimed by another worker meanwhile; not published twice",
                len(results) - published,
            )
        return results

    def label(self, batch: Batch) -> list[Result]:
        """One detection pass and one classifier call for the batch's frames: their results, in order."""
        results: list[Result] = []
        classifier = self.model.classifier
        analysis = analyse(
            [f.image for f in batch.frames],
            [f.scale for f in batch.frames],
            self.detector,
            classifier,
            [(f.stream, f.seq) for f in batch.frames],
        )
        timings = {
            "detect_s": round(analysis.detect_s, 4),
            "classify_s": round(analysis.classify_s, 4),
            "batch_faces": analysis.batch_size,
            "batch_frames": len(batch.frames),
        }
        for frame, entry_id, faces in zip(batch.frames, batch.frame_ids, analysis.faces, strict=True):
            queued = batch.read_at - int(entry_id.split(b"-", 1)[0]) / 1000  # both by Redis's clock
            results.append(
                Result(
                    frame.stream,
                    frame.seq,
                    frame.ts,
                    classifier.version,
                    faces,
                    self.name,
                    {**timings, "queue_s": round(queued, 4)},
                    [round(side * frame.scale) for side in frame.image.shape[1::-1]],
                )
            )
        self.metrics.detection.observe(analysis.detect_s)
        if analysis.batch_size:
            self.metrics.inference.observe(analysis.classify_s)
            self.metrics.batch_size.observe(analysis.batch_size)
        self.metrics.faces_classified.inc(analysis.batch_size)
        if self.settings.shadow_sample and analysis.batch_size:
            self.sample_faces(analysis.crops)
        return results

    def sample_faces(self, crops: np.ndarray, per_batch: int = 2) -> None:
        """Keep a few recent faces (capped list) for shadow evaluation of candidate models."""
        pipe = self.redis.pipeline(transaction=False)
        for crop in crops[:per_batch]:
            pipe.lpush(self.keys.face_sample, crop.tobytes())
        pipe.ltrim(self.keys.face_sample, 0, self.settings.shadow_sample - 1)
        pipe.execute()

    def redis_now(self) -> float:
        """Now, by Redis's clock (seconds)."""
        return time.time() + self.clock_offset

    def sync_clock(self) -> None:
        """Measure how far Redis's clock is from this host's (half a round trip of error at most)."""
        before = time.time()
        seconds, micros = self.redis.time()
        self.clock_offset = seconds + micros / 1e6 - (before + time.time()) / 2

    def heartbeat(self) -> None:
        """Register this worker (and its model version) in the workers hash, stamped by Redis's clock;
        now and then remove the entries of workers that stopped beating."""
        self.sync_clock()
        now = self.redis_now()
        self._beats += 1
        if self._beats % PRUNE_EVERY == 1:
            entries = self.redis.hgetall(self.keys.workers)
            expired = set(entries) - set(live_heartbeats(entries, now, BEAT_EXPIRE_S))
            if expired:
                self.redis.hdel(self.keys.workers, *expired)
            self.forget_idle_consumers()
        beat = {
            "name": self.name,
            "ts": now,
            "model_version": self.model.classifier.version,
            "metrics": self.metrics_address,
            "role": "worker",
        }
        self.redis.hset(self.keys.workers, self.name, json.dumps(beat))
        self.measure_queue()

    def forget_idle_consumers(self) -> None:
        """Remove from the group the consumers that hold no frame and have not read for ``BEAT_EXPIRE_S``:
        workers that stopped (each joins under a new name), which would otherwise pile up in Redis."""
        for consumer in self.redis.xinfo_consumers(self.keys.frames, self.keys.group):
            if consumer["pending"] == 0 and consumer["idle"] > BEAT_EXPIRE_S * 1000:
                self.redis.xgroup_delconsumer(self.keys.frames, self.keys.group, consumer["name"])

    def measure_queue(self) -> None:
        """Queue length and consumer-group lag / pending, for the gauges.

        Redis reports no lag (nil) once entries after the oldest pending one are deleted, which
        workers finishing batches out of order do all the time; every entry left in the stream is
        then pending or undelivered (finished ones are deleted), so the rest of its length is the lag.
        """
        length = self.redis.xlen(self.keys.frames)
        self.metrics.queue_length.set(length)
        for group in self.redis.xinfo_groups(self.keys.frames):
            if group["name"].decode() == self.keys.group:
                lag = group.get("lag")
                self.metrics.consumer_lag.labels(kind="pending").set(group["pending"])
                self.metrics.consumer_lag.labels(kind="undelivered").set(
                    max(0, length - group["pending"]) if lag is None else lag
                )

    def refresh_model(self, force: bool) -> None:
        """Follow the live pointer; count versions this worker refused to serve."""
        refusals = self.model.refusals
        if self.model.refresh(force=force):
            self.metrics.serve_model(self.model.classifier.version, self.model.classifier.architecture)
        self.metrics.model_refused.inc(self.model.refusals - refusals)

    def run(self) -> None:
        """Serve until :meth:`stop`; the batch in hand is finished and acknowledged first.

        A lost Redis connection (an outage, a restart) is retried with capped exponential
        backoff; a restarted Redis without the consumer group gets it back.
        """
        log.info("worker %s serving model %s", self.name, self.model.classifier.version)
        backoff = RECONNECT_MIN_S
        while not self.stopping.is_set():
            try:
                self._serve()
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as err:
                refused = isinstance(err, redis.ResponseError) and not isinstance(err, UNAVAILABLE)
                if refused and any(gone in str(err) for gone in STREAM_GONE):
                    log.warning("worker %s: frames stream or group gone (%s); recreating them", self.name, err)
                    continue
                if refused and not str(err).startswith(REFUSING):
                    raise
                log.warning("worker %s lost Redis (%s); retrying in %.1fs", self.name, err, backoff)
                # after a failover, new connections find the new primary; those other threads use (the status
                # server's readiness ping) are left alone
                self.redis.connection_pool.disconnect(inuse_connections=False)
                self.stopping.wait(backoff)
                backoff = min(RECONNECT_MAX_S, backoff * 2)
                continue
            backoff = RECONNECT_MIN_S
        with contextlib.suppress(redis.RedisError):
            self.redis.hdel(self.keys.workers, self.name)
            if not self.redis.xpending_range(self.keys.frames, self.keys.group, "-", "+", 1, consumername=self.name):
                self.redis.xgroup_delconsumer(self.keys.frames, self.keys.group, self.name)  # nothing of it left
        log.info("worker %s stopped", self.name)

    def _serve(self) -> None:
        self.ensure_group()
        notices = self.redis.pubsub(ignore_subscribe_messages=True)
        notices.subscribe(self.keys.model_channel)
        last_beat = 0.0
        try:
            while not self.stopping.is_set():
                announced = notices.get_message(timeout=0) is not None
                if announced or time.monotonic() - last_beat >= HEARTBEAT_S:
                    self.refresh_model(force=announced)  # between batches: no frame is lost by a switch
                    self.heartbeat()
                    last_beat = time.monotonic()
                    reclaimed = self.reclaim()
                    if reclaimed.ids:
                        self.process(reclaimed)
                batch = self.read_batch()
                if batch.ids:
                    self.process(batch)
        finally:
            notices.close()

    def stop(self) -> None:
        self.stopping.set()
