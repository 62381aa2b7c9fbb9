"""The samples of a Prometheus /metrics page, for tests and benchmarks that read a process's counters."""

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(address: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a /metrics page, by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        return parse(response.read().decode())


def parse(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a metrics exposition, by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for (n, got), value in samples.items() if n == name and wanted <= set(got))


def late_ticks(samples: dict) -> tuple[int, int, int]:
    """Ticks of an ``emostream_event_loop_lag_seconds`` histogram: all, over 0.1 s late, over 0.5 s late."""
    ticks = total(samples, "emostream_event_loop_lag_seconds_count")
    bucket = "emostream_event_loop_lag_seconds_bucket"
    return int(ticks), int(ticks - total(samples, bucket, le="0.1")), int(ticks - total(samples, bucket, le="0.5"))
