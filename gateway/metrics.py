"""The gateway's Prometheus metrics, on a registry of its own (several gateways may share a process)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class Metrics:
    """Counters of frames, results and errors; every drop has an outcome label, none goes unseen."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.streams = Gauge("emostream_gateway_streams", "Camera streams open", registry=self.registry)
        self.frames = Counter(
            "emostream_gateway_frames",
            "Camera frames by outcome: received (newest-only, so fewer than decoded), sent, failed",
            ["outcome"],
            registry=self.registry,
        )
        self.results = Counter(
            "emostream_gateway_results",
            "Results read from the reply stream by outcome: delivered, unknown_stream, malformed, undeliverable",
            ["outcome"],
            registry=self.registry,
        )
        self.http_errors = Counter(
            "emostream_gateway_http_errors", "Error responses by status", ["status"], registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
