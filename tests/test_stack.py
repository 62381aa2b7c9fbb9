"""`emostream up` and the embedded stack, as real processes."""

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from factories import REPO

from emostream.config import Settings
from emostream.redis_server import free_port
from emostream.stack import EmbeddedStack, default_worker_count


def test_worker_count_fits_the_cores():
    assert default_worker_count(1) == (1, 1)
    assert default_worker_count(2) == (2, 1)
    assert default_worker_count(8) == (8, 1)
    assert default_worker_count(32) == (8, 4)


def test_up_without_redis_server_gives_an_install_hint(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["PATH"] = str(tmp_path)  # no redis-server here
    done = subprocess.run(
        [sys.executable, "-m", "emostream.cli", "up", "--port", str(free_port())],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "redis-server not found" in done.stderr and "apt-get install redis-server" in done.stderr


def test_stack_starts_workers_that_register_and_stops_them(tmp_path):
    settings = Settings(model_store_root=tmp_path / "store")
    with EmbeddedStack(settings, workers=2) as stack:
        import redis

        client = redis.Redis.from_url(stack.settings.redis_url)
        beats = stack.live_workers(client)
        assert len(beats) == 2 and len({b["name"] for b in beats}) == 2
        assert all(b["model_version"] == settings.model_store().live_version() for b in beats)
        children = list(stack.children.values())
        client.close()
    assert all(child.poll() is not None for child in children)
    assert stack.redis_server is None


def test_up_serves_the_page_and_stops_cleanly_on_sigterm(tmp_path):
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != "REDIS_URL"},
        "EMOSTREAM_MODEL_STORE": str(tmp_path / "store"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "emostream.cli", "up", "--port", str(port), "--workers", "1"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line, line
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    assert response.status == 200 and b"<html" in response.read().lower()
                break
            except OSError:
                assert time.monotonic() < deadline, "gateway never answered"
                time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    children = subprocess.run(["pgrep", "-f", f"--port {port}"], capture_output=True, text=True).stdout.split()
    assert children == [] or children == [str(proc.pid)]


@pytest.fixture(autouse=True)
def _no_shared_redis(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
