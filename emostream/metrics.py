"""Every Prometheus series emostream exports, defined once; each process exports the ones it feeds.

Conventions: base units (seconds), ``_total`` counters, and no label whose values grow with
streams or users (only ``reason`` with a fixed set, and the model's version).
"""

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

DROP_REASONS = (
    "superseded",  # gateway: a newer frame of the same stream arrived before this one was sampled
    "stale",  # worker: older than the latency budget when dequeued
    "malformed",  # worker: an entry that does not decode
    "decode_error",  # gateway/ingest: a camera frame that could not be converted
    "redis_unavailable",  # gateway/ingest: Redis down, frame not queued
    "reclaimed_stale",  # worker: a dead worker's pending frame, too old once reclaimed
    "backpressure",  # gateway: the stream already has max_inflight_per_stream frames queued and unanswered
    "failed",  # worker: labelling the batch raised (logged); its frames are acknowledged unanswered
)

RESULT_OUTCOMES = (
    "delivered",  # gateway: sent to the browser on the stream's data channel
    "unknown_stream",  # gateway: the stream is closed (or another gateway's)
    "malformed",  # gateway: a reply-stream entry that does not decode
    "undeliverable",  # gateway: the browser's data channel is not open or is backed up, or delivering raised (logged)
    "rate_limited",  # gateway: more results for one stream than its sampling rate allows
)


class Metrics:
    """The series on one registry (a process's own, or a private one for tests)."""

    def __init__(self, registry: CollectorRegistry | None = None, process_collectors: bool = True) -> None:
        self.registry = registry or CollectorRegistry()
        if process_collectors:
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                self.registry.register(collector)
        r = self.registry
        self.frames_received = Counter(
            "emostream_frames_received", "Frames received from sources (cameras, files)", registry=r
        )
        self.frames_sampled = Counter("emostream_frames_sampled", "Frames sampled and queued to Redis", registry=r)
        self.frames_dropped = Counter("emostream_frames_dropped", "Frames dropped, by reason", ["reason"], registry=r)
        self.frames_reclaimed = Counter(
            "emostream_frames_reclaimed", "Frames claimed from a dead or stuck worker's pending list", registry=r
        )
        self.frames_processed = Counter("emostream_frames_processed", "Frames labelled by workers", registry=r)
        self.faces_classified = Counter("emostream_faces_classified", "Faces classified by workers", registry=r)
        self.results_published = Counter("emostream_results_published", "Results published by workers", registry=r)
        self.frame_to_label = Histogram(
            "emostream_frame_to_label_seconds",
            "Capture to result back at the gateway or ingest",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.detection = Histogram(
            "emostream_detection_seconds", "Face detection and cropping per batch", buckets=STAGE_BUCKETS, registry=r
        )
        self.detection_passes = Counter(
            "emostream_detection_passes",
            "Frames searched whole (full) or only around the faces followed from earlier frames (tracked)",
            ["kind"],
            registry=r,
        )
        self.inference = Histogram(
            "emostream_inference_seconds", "One model call on a batch of faces", buckets=STAGE_BUCKETS, registry=r
        )
        self.batch_wait = Histogram(
            "emostream_batch_wait_seconds",
            "Time spent filling a batch after its first frame",
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram("emostream_batch_size", "Faces per model call", buckets=BATCH_BUCKETS, registry=r)
        self.active_streams = Gauge("emostream_active_streams", "Camera streams open on this gateway", registry=r)
        self.queue_length = Gauge("emostream_queue_length", "Frames waiting in the frames stream", registry=r)
        self.consumer_lag = Gauge(
            "emostream_consumer_lag",
            "Frames of the consumer group not yet delivered or not yet acknowledged",
            ["kind"],
            registry=r,
        )
        self.model_info = Gauge(
            "emostream_model_info", "The model version being served (value 1)", ["version", "architecture"], registry=r
        )
        self.model_refused = Counter("emostream_model_refused", "Promoted versions refused by a worker", registry=r)
        # gateway only (label values bounded: RESULT_OUTCOMES, HTTP status codes)
        self.gateway_results = Counter(
            "emostream_gateway_results", "Results read by a gateway, by outcome", ["outcome"], registry=r
        )
        self.gateway_http_errors = Counter(
            "emostream_gateway_http_errors", "Error responses of a gateway's API, by status", ["status"], registry=r
        )
        self.event_loop_lag = Histogram(
            "emostream_event_loop_lag_seconds",
            "How late the gateway's event loop ran a timer (WebRTC, results and the API wait as long)",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        for reason in DROP_REASONS:
            self.frames_dropped.labels(reason=reason)
        for kind in ("full", "tracked"):
            self.detection_passes.labels(kind=kind)

    def serve_model(self, version: str, architecture: str) -> None:
        """Make ``version`` the only model_info series."""
        self.model_info.clear()
        self.model_info.labels(version=version, architecture=architecture).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
