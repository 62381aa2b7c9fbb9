"""The embedded stack for one machine: a private redis-server (unless REDIS_URL is set),
worker processes and, for ``emostream up``, the gateway and a trainer; stopped together.

Children are separate processes started with ``python -m emostream.cli`` (never forked
from a process that imported TensorFlow) and configured through ``Settings.to_env()``.
:meth:`EmbeddedStack.supervise` restarts a child that dies, with backoff; shutdown stops the
gateway first (it drains its streams), then workers and trainer, then Redis, each bounded.
"""

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import redis

from emostream.children import tied
from emostream.config import Settings
from emostream.redis_server import RedisServer
from ingest.keys import live_heartbeats

log = logging.getLogger(__name__)


MAX_DEFAULT_WORKERS = 8
RESTART_MIN_S, RESTART_MAX_S = 0.5, 30.0
"""Backoff between restarts of a child that keeps dying (doubling)."""
STABLE_S = 60.0
"""A child that ran this long is healthy again: its next death restarts it at once."""
GIVE_UP = 5
"""Deaths in a row, each within STABLE_S of its start, after which the stack stops with the reason."""


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
    persist: bool = False
    """Keep the private Redis's data in ``settings.redis_dir`` (job history survives a restart)."""
    ready_timeout: float = 120.0
    redis_server: RedisServer | None = None
    children: dict[str, subprocess.Popen] = field(default_factory=dict)
    commands: dict[str, tuple[str, ...]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    """Restarts of each child so far."""
    _failures: dict[str, int] = field(default_factory=dict)
    _started_at: dict[str, float] = field(default_factory=dict)
    _due: dict[str, float] = field(default_factory=dict)

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
            self.redis_server = RedisServer(data_dir=self.settings.redis_dir if self.persist else None).start()
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
        self.commands[name] = command
        self._started_at[name] = time.monotonic()
        self.children[name] = subprocess.Popen([sys.executable, "-m", "emostream.cli", *command], env=env, **tied())

    def supervise(self) -> None:
        """Restart dead children (call every second or so), with backoff while one keeps dying.

        Raises ``RuntimeError`` with the reason when a child died :data:`GIVE_UP` times in a row,
        each time soon after its start: something is wrong that a restart does not fix.
        """
        now = time.monotonic()
        for name in self.dead_children():
            if name not in self.commands:
                continue  # not ours to restart (e.g. Prometheus)
            if name not in self._due:
                code = self.children[name].returncode
                quick = now - self._started_at[name] < STABLE_S
                self._failures[name] = self._failures.get(name, 0) + 1 if quick else 1
                if self._failures[name] >= GIVE_UP:
                    raise RuntimeError(f"{name} exited with status {code} {GIVE_UP} times in a row soon after starting")
                delay = min(RESTART_MAX_S, RESTART_MIN_S * 2 ** (self._failures[name] - 1))
                log.warning("%s exited with status %s; restarting it in %.1fs", name, code, delay)
                self._due[name] = now + delay
            elif now >= self._due[name]:
                del self._due[name]
                self.restarts[name] = self.restarts.get(name, 0) + 1
                self._spawn(name, *self.commands[name])
                log.info("%s restarted (restart %d)", name, self.restarts[name])

    def wait_for_workers(self, count: int) -> None:
        """Block until ``count`` workers have registered a heartbeat (model loaded, group joined)."""
        client = redis.Redis.from_url(self.settings.require_redis_url("workers register in Redis"))
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
        return list(live_heartbeats(client.hgetall(self.settings.keys.workers), time.time(), max_age).values())

    def dead_children(self) -> list[str]:
        return [name for name, child in self.children.items() if child.poll() is not None]

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the gateway first (it drains its streams), then everything else (workers finish their
        batch), then Redis; each group gets ``timeout`` seconds before it is killed."""
        first = {name: child for name, child in self.children.items() if name == "gateway"}
        rest = {name: child for name, child in self.children.items() if name not in first}
        for group in (first, rest):
            for child in group.values():
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for name, child in group.items():
                try:
                    child.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop in %.0fs; killing it", name, timeout)
                    child.kill()
                    child.wait()
        self.children.clear()
        if self.redis_server:
            self.redis_server.stop()
            self.redis_server = None
