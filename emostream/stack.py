"""The embedded stack for one machine: a private redis-server (unless REDIS_URL is set),
worker processes and, for ``emostream up``, the gateway; stopped together.

Children are separate processes started with ``python -m emostream.cli`` (never forked
from a process that imported TensorFlow) and configured through ``Settings.to_env()``.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import redis

from emostream.config import Settings
from emostream.redis_server import RedisServer

log = logging.getLogger(__name__)


MAX_DEFAULT_WORKERS = 8


def default_worker_count(cores: int | None = None) -> tuple[int, int]:
    """``(workers, threads per worker)``: one single-threaded worker per core, at most eight.

    Measured on 2 cores (``benchmarks/latency.py``): two 1-thread workers answer more frames
    a second than one 2-thread worker, whose Python and Redis steps leave a core idle.
    """
    cores = cores or len(os.sched_getaffinity(0))
    workers = min(cores, MAX_DEFAULT_WORKERS)
    return workers, threads_per_worker(workers, cores)


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """CPU threads each of ``workers`` gets so that together they never oversubscribe the cores."""
    return max(1, (cores or len(os.sched_getaffinity(0))) // workers)


@dataclass
class EmbeddedStack:
    """Context manager; ``settings`` carries the live ``redis_url`` once started."""

    settings: Settings
    workers: int = 0
    gateway: bool = False
    trainer: bool = False
    """Also run ``emostream trainer`` (retraining jobs), at low CPU priority."""
    ready_timeout: float = 120.0
    redis_server: RedisServer | None = None
    children: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __enter__(self) -> "EmbeddedStack":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if not self.settings.redis_url:
            self.redis_server = RedisServer().start()
            self.settings = self.settings.replace(redis_url=self.redis_server.url)
            log.info("started private redis-server at %s", self.redis_server.url)
        count = self.workers or self.settings.workers or default_worker_count()[0]
        for index in range(count):
            self._spawn(f"worker-{index}", "worker", "--threads", str(threads_per_worker(count)))
        if self.gateway:
            self._spawn("gateway", "gateway")
        if self.trainer:
            self._spawn("trainer", "trainer", "--nice", "10")
        self.wait_for_workers(count)

    def _spawn(self, name: str, *command: str) -> None:
        env = {**os.environ, **self.settings.to_env()}
        self.children[name] = subprocess.Popen([sys.executable, "-m", "emostream.cli", *command], env=env)

    def wait_for_workers(self, count: int) -> None:
        """Block until ``count`` workers have registered a heartbeat (model loaded, group joined)."""
        client = redis.Redis.from_url(self.settings.redis_url)
        deadline = time.monotonic() + self.ready_timeout
        try:
            while len(self.live_workers(client)) < count:
                for name, child in self.children.items():
                    if child.poll() is not None:
                        raise RuntimeError(f"{name} exited with status {child.returncode} while starting")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"workers not ready after {self.ready_timeout:.0f}s")
                time.sleep(0.2)
        finally:
            client.close()

    def live_workers(self, client: redis.Redis, max_age: float = 5.0) -> list[dict]:
        beats = [json.loads(v) for v in client.hgetall(self.settings.keys.workers).values()]
        return [b for b in beats if time.time() - b["ts"] < max_age]

    def dead_children(self) -> list[str]:
        return [name for name, child in self.children.items() if child.poll() is not None]

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every child (workers finish their batch), then stop Redis."""
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, child in self.children.items():
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", name)
                child.kill()
                child.wait()
        self.children.clear()
        if self.redis_server:
            self.redis_server.stop()
            self.redis_server = None
