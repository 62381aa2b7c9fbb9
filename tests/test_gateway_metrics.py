"""Observability of a real gateway process and a real worker process: /metrics names, /api/targets, health."""

import asyncio
import json
import time
import urllib.error
import urllib.request

import redis
from gateway_helpers import GatewayProcess
from prometheus_client.parser import text_string_to_metric_families

from emostream import loop_lag
from emostream.config import Settings
from emostream.metrics import Metrics
from emostream.stack import EmbeddedStack

ISSUE_SERIES = {
    # family name as the parser reports it (counters without _total) -> (type, label names of its samples)
    "emostream_frames_received": ("counter", set()),
    "emostream_frames_sampled": ("counter", set()),
    "emostream_frames_dropped": ("counter", {"reason"}),
    "emostream_frames_processed": ("counter", set()),
    "emostream_faces_classified": ("counter", set()),
    "emostream_results_published": ("counter", set()),
    "emostream_frame_to_label_seconds": ("histogram", set()),
    "emostream_detection_seconds": ("histogram", set()),
    "emostream_inference_seconds": ("histogram", set()),
    "emostream_batch_wait_seconds": ("histogram", set()),
    "emostream_batch_size": ("histogram", set()),
    "emostream_active_streams": ("gauge", set()),
    "emostream_queue_length": ("gauge", set()),
    "emostream_consumer_lag": ("gauge", {"kind"}),
    "emostream_model_info": ("gauge", {"version", "architecture"}),
}
GATEWAY_ONLY = {
    "emostream_gateway_results": ("counter", {"outcome"}),
    "emostream_gateway_http_errors": ("counter", {"status"}),
    "emostream_event_loop_lag_seconds": ("histogram", set()),
}
BOUNDED_LABELS = {"reason", "outcome", "status", "kind", "version", "architecture"}
"""Every label an emostream series may have: fixed sets of values, or the model's version."""
PROCESS_SERIES = {
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "python_info",
    "python_gc_objects_collected_total",
}


def fetch(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def families(exposition: str) -> dict:
    """Metric families by name (the client's ``_created`` timestamps left out)."""
    parsed = text_string_to_metric_families(exposition)
    return {family.name: family for family in parsed if not family.name.endswith("_created")}


def sample_labels(family) -> set[str]:
    """Label names of a family's samples, without the histogram bucket bound."""
    return {name for sample in family.samples for name in sample.labels if name != "le"}


def test_metrics_targets_and_health_of_a_gateway_and_a_worker(redis_server, tmp_path):
    settings = Settings(redis_url=redis_server.url, model_store_root=tmp_path / "store")
    with (
        EmbeddedStack(settings, workers=1) as stack,
        GatewayProcess(redis_server.url, EMOSTREAM_MODEL_STORE=str(settings.model_store_root)) as gateway,
    ):
        fetch(f"{gateway.url}/nope")  # one 404, counted
        status, content_type, exposition = fetch(f"{gateway.url}/metrics")
        targets = json.loads(fetch(f"{gateway.url}/api/targets")[2])
        gateway_id = json.loads(fetch(f"{gateway.url}/api/streams")[2])["gateway"]
        health = [fetch(f"{gateway.url}/{path}")[0] for path in ("healthz", "readyz")]
        worker_address = next(t["targets"][0] for t in targets if t["labels"]["role"] == "worker")
        worker = [fetch(f"http://{worker_address}/{path}") for path in ("metrics", "healthz", "readyz")]
        (beat,) = stack.live_workers(redis.Redis.from_url(redis_server.url))

    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    exported = families(exposition)
    for name, (kind, labels) in (ISSUE_SERIES | GATEWAY_ONLY).items():
        assert exported[name].type == kind, name
        assert sample_labels(exported[name]) <= labels, f"{name} has labels {sample_labels(exported[name])}"
    for name in (name for name in exported if name.startswith("emostream_")):
        assert sample_labels(exported[name]) <= BOUNDED_LABELS, f"{name}: no per-stream or per-user labels"
    reasons = {sample.labels["reason"] for sample in exported["emostream_frames_dropped"].samples}
    assert {"superseded", "decode_error", "redis_unavailable"} <= reasons
    samples = {sample.name for family in exported.values() for sample in family.samples}
    assert samples >= PROCESS_SERIES, "the gateway process exports the process and Python collectors"
    assert 'emostream_gateway_http_errors_total{status="404"} 1.0' in exposition

    assert targets == [
        {"targets": [f"127.0.0.1:{gateway.port}"], "labels": {"role": "gateway", "gateway": gateway_id}},
        {"targets": [beat["metrics"]], "labels": {"role": "worker", "worker": beat["name"]}},
    ], "Prometheus HTTP service discovery: the gateway and the live worker"
    assert health == [200, 200]
    assert [status for status, _, _ in worker] == [200, 200, 200]
    worker_families = families(worker[0][2])
    (info,) = worker_families["emostream_model_info"].samples
    assert info.value == 1 and info.labels["version"] == beat["model_version"] and info.labels["architecture"]
    assert {sample.name for family in worker_families.values() for sample in family.samples} >= PROCESS_SERIES
    for name, (kind, labels) in ISSUE_SERIES.items():
        assert worker_families[name].type == kind and sample_labels(worker_families[name]) <= labels, name


def test_targets_leave_out_stale_and_address_less_heartbeats(redis_server, redis_client):
    keys = Settings().keys
    with GatewayProcess(
        redis_server.url, EMOSTREAM_HOST="0.0.0.0", EMOSTREAM_ADVERTISE_HOST="gw.example", EMOSTREAM_TOKEN="t" * 32
    ) as gateway:  # /api/targets stays open to Prometheus without the token
        now = time.time()
        beats = {
            "fresh": {"name": "fresh", "ts": now, "model_version": "v", "metrics": "10.0.0.7:9100", "role": "worker"},
            "stale": {
                "name": "stale",
                "ts": now - 60,
                "model_version": "v",
                "metrics": "10.0.0.8:9100",
                "role": "worker",
            },
            "silent": {"name": "silent", "ts": now, "model_version": "v", "metrics": "", "role": "worker"},
        }
        redis_client.hset(keys.workers, mapping={name: json.dumps(beat) for name, beat in beats.items()})
        redis_client.hset(keys.workers, "garbage", "{not json")
        targets = json.loads(fetch(f"{gateway.url}/api/targets")[2])
    assert [t["targets"] for t in targets] == [[f"gw.example:{gateway.port}"], ["10.0.0.7:9100"]]
    assert targets[1]["labels"] == {"role": "worker", "worker": "fresh"}


def test_the_loop_lag_histogram_sees_a_callback_that_holds_the_loop():
    metrics = Metrics(process_collectors=False)

    async def scenario() -> None:
        watcher = asyncio.create_task(loop_lag.watch(metrics.event_loop_lag, interval=0.05))
        await asyncio.sleep(0.2)
        time.sleep(0.6)  # one callback holding the loop: the watcher's timer, due within 0.05 s, runs >= 0.55 s late
        await asyncio.sleep(0.2)
        watcher.cancel()

    asyncio.run(scenario())
    (family,) = (f for f in text_string_to_metric_families(metrics.render().decode()) if f.name.endswith("lag_seconds"))
    values = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    count = values[("emostream_event_loop_lag_seconds_count", None)]
    assert count >= 3, "the watcher observes every tick"
    assert count - values[("emostream_event_loop_lag_seconds_bucket", "0.5")] == 1, "exactly one tick over 0.5 s late"
    assert values[("emostream_event_loop_lag_seconds_sum", None)] >= 0.55
