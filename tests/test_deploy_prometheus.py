"""deploy/prometheus and deploy/grafana: checked by promtool, unit-tested alerts, metric names that the code
really exports, and a real Prometheus server (``emostream up --prometheus``'s) loading and evaluating them.

Needs Debian's ``prometheus`` package (prometheus and promtool; .ci/run installs it).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
import yaml
from clips import write_avi
from factories import REPO

from emostream.config import Settings
from emostream.metrics import DROP_REASONS, LATENCY_BUCKETS, Metrics
from emostream.prometheus import INSTALL_HINT, render_config, start_prometheus
from emostream.redis_server import free_port
from emostream.stack import EmbeddedStack

PROMETHEUS = REPO / "deploy" / "prometheus"
GRAFANA = REPO / "deploy" / "grafana"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
DASHBOARD = GRAFANA / "dashboards" / "emostream.json"
PROMETHEUS_SERIES = {"up"}
"""Series Prometheus itself writes for every target, which rules may use."""
NOT_METRICS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    assert binary, "promtool not found: apt-get install prometheus (.ci/run does)"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, cwd=REPO)


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads (not functions, keywords, labels, numbers or durations)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges and subqueries, Grafana's [$__rate_interval] included
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    expr = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana variables
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        before = expr[match.start() - 1] if match.start() else " "
        if before.isdigit() or before == "." or match.group() in NOT_METRICS:
            continue  # 1e3, 5m
        if expr[match.end() :].lstrip().startswith("("):
            continue  # a function
        names.add(match.group())
    return names


def exported_names() -> set[str]:
    """Every series name ``emostream.metrics.Metrics`` exposes, from its real registry."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
    names = set()
    for family in Metrics(process_collectors=True).registry.collect():
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


def rules() -> list[dict]:
    return [
        rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]
    ]


def recorded() -> dict[str, str]:
    return {rule["record"]: rule["expr"] for rule in rules() if "record" in rule}


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def raw_inputs(expr: str, seen: frozenset = frozenset()) -> set[str]:
    """The exported series behind ``expr``, following recording rules."""
    names = set()
    for name in metric_names(expr):
        if name in recorded() and name not in seen:
            names |= raw_inputs(recorded()[name], seen | {name})
        else:
            names.add(name)
    return names


# --- promtool -------------------------------------------------------------------------------------------


def test_promtool_accepts_the_configuration_and_its_rules():
    done = promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in done.stdout
    done = promtool("check", "rules", *map(str, RULE_FILES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_alert_unit_tests_pass():
    done = promtool("test", "rules", str(PROMETHEUS / "tests" / "alerts.test.yml"))
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def test_every_alert_has_a_unit_test_that_sees_it_fire():
    tests = yaml.safe_load((PROMETHEUS / "tests" / "alerts.test.yml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case["exp_alerts"]}
    quiet = {case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if not case["exp_alerts"]}
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    assert alerts == fired, f"alerts never seen firing in a test: {alerts - fired}"
    assert alerts == quiet, f"alerts never seen staying quiet in a test: {alerts - quiet}"


# --- names the code really exports ----------------------------------------------------------------------


def test_the_name_parser_finds_series_and_nothing_else():
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{le="0.15", x="b"}[$__rate_interval]))) '
        "/ on() group_left c:d:e > 1e3 and count without (instance) (up offset 5m)"
    )
    assert metric_names(expr) == {"a_bucket", "c:d:e", "up"}


def test_rules_and_dashboard_read_only_series_the_code_exports():
    allowed = exported_names() | PROMETHEUS_SERIES | set(recorded())
    assert "emostream_frames_processed_total" in allowed and "emostream_frame_to_label_seconds_bucket" in allowed
    for rule in rules():
        unknown = metric_names(rule["expr"]) - allowed
        assert not unknown, f"{rule.get('record') or rule.get('alert')} reads {unknown}, which nothing exports"
    for expr in dashboard_exprs():
        assert not metric_names(expr) - allowed, f"dashboard query {expr!r} reads {metric_names(expr) - allowed}"


def test_label_values_in_the_rules_exist_in_the_code():
    text = "\n".join(path.read_text() for path in RULE_FILES)
    assert set(re.findall(r'reason!?="(\w+)"', text)) <= set(DROP_REASONS)
    # The 150 ms objective is computed from one bucket: it must be a real bucket bound.
    assert {float(v) for v in re.findall(r'le="([0-9.]+)"', text)} <= set(LATENCY_BUCKETS)


def test_the_dashboard_shows_what_operators_need():
    shown = set().union(*(raw_inputs(expr) for expr in dashboard_exprs()))
    needed = {
        "emostream_frames_processed_total",  # throughput
        "emostream_faces_classified_total",
        "emostream_frame_to_label_seconds_bucket",  # latency percentiles
        "emostream_detection_seconds_bucket",
        "emostream_inference_seconds_bucket",
        "emostream_batch_size_bucket",  # batch sizes
        "emostream_consumer_lag",  # lag
        "emostream_queue_length",  # queue length
        "emostream_frames_dropped_total",  # drops by reason
        "up",  # workers up
        "emostream_model_info",  # model version
    }
    assert needed <= shown, f"not on the dashboard: {needed - shown}"


def test_grafana_provisioning_matches_the_dashboard_and_compose():
    dashboard = json.loads(DASHBOARD.read_text())
    source = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "emostream.yml").read_text())["providers"][0]
    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())["services"]
    assert len(source) == 1 and source[0]["type"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels and all(p["targets"] for p in panels)
    uids = {p["datasource"]["uid"] for p in panels} | {t["datasource"]["uid"] for p in panels for t in p["targets"]}
    assert uids == {source[0]["uid"]}
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    url = urllib.parse.urlsplit(source[0]["url"])
    assert url.hostname in compose and f"127.0.0.1:{url.port}:{url.port}" in compose[url.hostname]["ports"]
    for service in ("prometheus", "grafana"):  # neither asks a viewer to log in: this host's loopback only
        assert all(port.startswith("127.0.0.1:") for port in compose[service]["ports"]), service
    mounts = dict(volume.split(":")[:2][::-1] for volume in compose["grafana"]["volumes"])
    assert (REPO / "deploy" / mounts[provider["options"]["path"]]).resolve() == DASHBOARD.parent
    assert (REPO / "deploy" / mounts["/etc/grafana/provisioning"]).resolve() == GRAFANA / "provisioning"
    prometheus_mounts = dict(volume.split(":")[:2][::-1] for volume in compose["prometheus"]["volumes"])
    assert (REPO / "deploy" / prometheus_mounts["/etc/prometheus"]).resolve() == PROMETHEUS


# --- emostream/prometheus.py and a real Prometheus ------------------------------------------------------


def test_rendered_configuration_points_at_the_given_gateway_and_passes_promtool(tmp_path):
    text = render_config("http://127.0.0.1:18080/", 19090)
    assert "http://127.0.0.1:18080/api/targets" in text and "127.0.0.1:19090" in text and "gateway:8080" not in text
    (tmp_path / "prometheus.yml").write_text(text)
    shutil.copytree(PROMETHEUS / "rules", tmp_path / "rules")
    done = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_start_prometheus_without_the_binary_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="apt-get install prometheus"):
        start_prometheus("http://127.0.0.1:8080", free_port(), tmp_path / "data")
    assert "prometheus not found" in INSTALL_HINT


def query(port: int, expr: str, timeout: float = 10) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as err:
        return json.load(err)


def get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return json.load(response)


def wait_for(check, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


@pytest.fixture
def prometheus_for(tmp_path):
    """``start(gateway_url) -> port``: a real Prometheus from start_prometheus, stopped after the test."""
    started = []

    def start(gateway_url: str) -> int:
        port = free_port()
        process = start_prometheus(gateway_url, port, tmp_path / "prometheus")
        started.append(process)
        wait_for(lambda: _ready(port, process), 30, "Prometheus to be ready")
        return port

    yield start
    for process in started:
        process.terminate()
        process.wait(20)


def _ready(port: int, process: subprocess.Popen) -> bool:
    assert process.poll() is None, f"prometheus exited with status {process.returncode}"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=5) as response:
        return response.status == 200


def test_a_real_prometheus_loads_the_rules_and_evaluates_every_dashboard_query(prometheus_for):
    gateway = f"http://127.0.0.1:{free_port()}"  # nothing there: discovery fails, queries still evaluate
    port = prometheus_for(gateway)
    loaded = get(port, "/api/v1/rules")["data"]["groups"]
    shipped = [g for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"]]
    assert sorted(g["name"] for g in loaded) == sorted(g["name"] for g in shipped)
    assert all(rule["health"] != "err" for g in loaded for rule in g["rules"])
    assert f"{gateway}/api/targets" in get(port, "/api/v1/status/config")["data"]["yaml"]
    for expr in dashboard_exprs():
        answer = query(port, expr.replace("$__rate_interval", "1m"))
        assert answer["status"] == "success", f"{expr!r}: {answer.get('error')}"
    assert query(port, "rate(emostream_frames_processed_total[1m")["status"] == "error"  # queries are parsed


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_real_prometheus_scrapes_a_running_stack(tmp_path, prometheus_for):
    """Gateway and worker found through the gateway's /api/targets, frames pushed with `emostream ingest`,
    and Prometheus's query API shows them processed."""
    if "/api/targets" not in (REPO / "gateway" / "app.py").read_text():
        pytest.skip("the gateway does not serve /api/targets yet")
    settings = Settings(model_store_root=tmp_path / "store", host="127.0.0.1", port=free_port())
    with EmbeddedStack(settings, workers=1, gateway=True) as stack:
        gateway = f"http://127.0.0.1:{settings.port}"

        def targets():
            with urllib.request.urlopen(f"{gateway}/api/targets", timeout=5) as response:
                groups = json.load(response)
            return len([t for group in groups for t in group["targets"]]) >= 2 and groups

        wait_for(targets, 90, "the gateway and a worker in /api/targets")
        port = prometheus_for(gateway)
        for role in ("gateway", "worker"):
            wait_for(
                lambda role=role: [
                    r for r in query(port, f'up{{job="emostream", role="{role}"}} == 1')["data"]["result"]
                ],
                60,
                f"Prometheus scraping the {role}",
            )
        clip = write_avi([np.full((240, 320, 3), 4 * i, np.uint8) for i in range(40)], tmp_path / "clip.avi")
        env = {**os.environ, **stack.settings.to_env()}
        done = subprocess.run(
            [sys.executable, "-m", "emostream.cli", "ingest", "--source", str(clip), "--out", str(tmp_path / "o")],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        rate = wait_for(
            lambda: [
                float(r["value"][1])
                for r in query(port, "sum(rate(emostream_frames_processed_total[1m])) > 0")["data"]["result"]
            ],
            60,
            "a non-zero rate of processed frames",
        )
        assert rate[0] > 0
