"""Real emostream processes for tests and benchmarks: a worker, started and awaited until ready; and
what a running process loaded (its native libraries, and the Python modules it imported by exit)."""

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
