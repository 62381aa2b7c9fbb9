"""Real processes for tests and benchmarks: an emostream worker and a coturn TURN server, started and
awaited until ready; and what a running process loaded (its native libraries, and the Python modules it
imported by exit)."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from emostream.redis_server import free_port

REPO = Path(__file__).resolve().parent.parent

_REPORT_MODULES = """\
import atexit, json, os, sys

atexit.register(lambda: open(os.environ["MODULES_AT_EXIT"], "w").write(json.dumps(sorted(sys.modules))))
"""


def mapped(pid: int) -> str:
    """The memory map of a running process, lower-cased: the native libraries it loaded."""
    return Path(f"/proc/{pid}/maps").read_text().lower()


def loads_tensorflow(pid: int) -> bool:
    """Whether a running process has TensorFlow's native library mapped (importing Keras maps it too)."""
    return "tensorflow" in mapped(pid)


def modules_at_exit(folder: Path) -> tuple[dict[str, str], Path]:
    """Environment that makes a Python child write every module name in its ``sys.modules`` (as JSON)
    to the returned file when it exits normally (a ``sitecustomize`` in ``folder`` registers it)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(_REPORT_MODULES)
    path = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, "MODULES_AT_EXIT": str(folder / "modules.json")}, folder / "modules.json"


@contextmanager
def ready_worker(env: dict[str, str], timeout: float = 120.0) -> Iterator[tuple[subprocess.Popen, float]]:
    """``emostream worker --threads 1`` with ``env`` added, once its ``/readyz`` answers 200; yields the
    process and the seconds from its start to ready. Terminated on leaving."""
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    worker = subprocess.Popen(
        [sys.executable, "-m", "emostream.cli", "worker", "--threads", "1"],
        cwd=REPO,
        env={**os.environ, **env},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        address = None
        while address is None:
            line = worker.stderr.readline()
            if not line or time.monotonic() > deadline:
                raise RuntimeError("the worker exited (or hung) before serving its status")
            if "metrics on http://" in line:
                address = line.split("http://", 1)[1].split("/", 1)[0]
        while True:
            try:
                with urllib.request.urlopen(f"http://{address}/readyz", timeout=2) as ready:
                    if ready.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the worker at {address} never got ready") from None
                time.sleep(0.02)
        yield worker, time.perf_counter() - started
    finally:
        worker.terminate()
        worker.wait(30)
        worker.stderr.close()


@contextmanager
def coturn(folder: Path, secret: str, timeout: float = 30.0) -> Iterator[int]:
    """A coturn server on 127.0.0.1 relaying for credentials minted from ``secret`` (its ``use-auth-secret``),
    once its UDP port is bound; yields the port. Terminated on leaving."""
    port = free_port()
    server = subprocess.Popen(
        [
            "turnserver", "--use-auth-secret", f"--static-auth-secret={secret}", "--realm=emostream.test",
            "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
            "--no-tls", "--no-dtls", "--no-cli", "--allow-loopback-peers", "--log-file=stdout",
            f"--pidfile={folder / 'turn.pid'}", f"--userdb={folder / 'turn.db'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    break  # coturn holds it
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"coturn did not listen on UDP {port} (exit status {server.poll()})")
            time.sleep(0.05)
        yield port
    finally:
        server.terminate()
        server.wait(10)
