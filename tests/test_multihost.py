"""Several hosts on one machine: Redis, the gateway and two workers, each in its own network namespace.

Every host is a network namespace with one veth pair into a bridge that lives in a "switch" namespace,
on a private 10.77.N.0/24 subnet (N picked free, names with a random suffix so parallel runs do not
collide). The hosts reach each other only through their own addresses; this test process is one more
host (the operator's and the camera's) with its own veth into the switch. Processes run with
``ip netns exec``, as real ``emostream`` commands.

The scenario: a camera (an aiortc client) streams through the gateway while ``emostream ingest``, run on
the gateway's host, sends a clip; every frame is answered and both workers process frames (their own
/metrics, found through the gateway's /api/targets). Then one worker's switch port goes down mid-stream:
it is cut off, not dead. The other worker takes over (results keep arriving on both streams, every one
of them from the survivor), claims the frames the cut-off worker held, and a second clip still gets a
line for every frame. When the link comes back the cut-off worker serves again and no frame was answered
twice.

Skips only when not root or when ``ip netns`` is unavailable; everything it creates is removed, even on
failure, and the fixture checks that nothing is left.
"""

import asyncio
import json
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from clips import make_clip, validation_faces, write_avi
from gateway_helpers import REPO, ClipTrack, connect, until
from prometheus_client.parser import text_string_to_metric_families

from emostream.config import Settings
from emostream.redis_server import find_binary
from ingest.keys import Keys

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REDIS_PORT, GATEWAY_PORT, METRICS_PORT = 6379, 8080, 9100
MAX_FRAME_AGE = 2.0
"""Workers' latency budget: a cut-off worker's frames are claimed after max(1 s, 2 x this) = 4 s."""
CLIP_FRAMES = 60
LONG_CLIP_LOOPS = 5
"""The second clip is the first one this many times over, long enough to cut a link in its middle."""
CUT_AFTER_LINES = 10
REDIS_FLAGS = ("--save", "", "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning", "--dir")
START_S = 240.0
"""Deadline for the hosts' processes to be ready (TensorFlow imports on a busy 2-core machine)."""
STEP_S = 180.0
"""Deadline for each step of the scenario."""
SCENARIO_S = 780.0
"""Deadline for the whole scenario, within the test's timeout, leaving time to clean up."""

_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces (CI runs it as root)"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    probe = f"es-probe-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns` is unavailable: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    name: str
    netns: str
    address: str
    port: str
    """Its veth's end in the switch namespace: the link ``cut`` takes down."""


@dataclass
class Network:
    """A switch namespace with a bridge, host namespaces plugged into it, and this process as one more host."""

    logs: Path
    suffix: str = field(default_factory=lambda: secrets.token_hex(3))
    subnet: str = ""
    hosts: dict[str, Host] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"es-{self.suffix}-switch"

    @property
    def uplink(self) -> str:
        """This process's veth in the root namespace (at most 15 characters)."""
        return f"es{self.suffix}"

    def create(self) -> None:
        used = _ip("-4", "route").stdout
        free = [n for n in range(1, 255) if f"10.77.{n}." not in used]
        self.subnet = f"10.77.{random.choice(free)}"
        self._netns(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge", "stp_state", "0")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        _ip("link", "add", self.uplink, "type", "veth", "peer", "name", "p-uplink", "netns", self.switch)
        _ip("-n", self.switch, "link", "set", "p-uplink", "master", "br0", "up")
        _ip("addr", "add", f"{self.subnet}.254/24", "dev", self.uplink)
        _ip("link", "set", self.uplink, "up")

    def _netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self.namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def add_host(self, name: str, octet: int) -> Host:
        host = Host(name, f"es-{self.suffix}-{name}", f"{self.subnet}.{octet}", f"p-{name}")
        self._netns(host.netns)
        _ip("-n", self.switch, "link", "add", host.port, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
        _ip("-n", self.switch, "link", "set", host.port, "master", "br0", "up")
        _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _ip("-n", host.netns, "link", "set", "eth0", "up")
        self.hosts[name] = host
        return host

    def cut(self, name: str) -> None:
        """Take the host's switch port down: its processes live on, cut off from every other host."""
        _ip("-n", self.switch, "link", "set", self.hosts[name].port, "down")

    def restore(self, name: str) -> None:
        _ip("-n", self.switch, "link", "set", self.hosts[name].port, "up")

    def spawn(self, label: str, host: Host, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        """``argv`` run on ``host`` (``ip netns exec`` execs it: the Popen's pid is the command's)."""
        log = (self.logs / f"{label}.log").open("w")
        process = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, *argv], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.processes[label] = process
        return process

    def log_tails(self, lines: int = 15) -> str:
        parts = []
        for label in self.processes:
            text = (self.logs / f"{label}.log").read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {label} ---\n" + "\n".join(text))
        return "\n".join(parts)

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        for name in reversed(self.namespaces):
            _ip("netns", "del", name, check=False)
        _ip("link", "del", self.uplink, check=False)

    def leftovers(self) -> list[str]:
        listed = _ip("netns", "list").stdout
        left = [name for name in self.namespaces if re.search(rf"^{re.escape(name)}\b", listed, re.M)]
        if _ip("link", "show", self.uplink, check=False).returncode == 0:
            left.append(f"link {self.uplink}")
        return left


@pytest.fixture
def network(tmp_path):
    reason = _netns_unavailable()
    if reason:
        pytest.skip(reason)
    net = Network(tmp_path)
    try:
        net.create()
        yield net
    finally:
        net.close()
        deadline = time.monotonic() + 10  # a namespace's devices go away asynchronously
        while net.leftovers() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert net.leftovers() == [], "the test left namespaces or links behind"


def _env(redis_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOSTREAM_") and k != "REDIS_URL"}
    return {
        **env,
        "REDIS_URL": redis_url,
        "EMOSTREAM_MODEL_STORE": str(tmp_path / "store"),
        "EMOSTREAM_RUNS": str(tmp_path / "runs"),
        "EMOSTREAM_FEEDBACK_DIR": str(tmp_path / "feedback"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **extra,
    }


def _get(url: str, timeout: float = 5.0) -> str:
    with _http.open(url, timeout=timeout) as response:
        return response.read().decode()


def _answers(url: str) -> bool:
    try:
        _get(url)
    except OSError:
        return False
    return True


def _counter(address: str, name: str, **labels: str) -> float:
    """The sum of a counter's samples (matching ``labels``) on the /metrics at ``address``."""
    total = 0.0
    for family in text_string_to_metric_families(_get(f"http://{address}/metrics")):
        for sample in family.samples:
            if sample.name == f"{name}_total" and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def _lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _seqs_once(results: list[dict], what: str) -> None:
    twice = {seq: n for seq, n in Counter(r["seq"] for r in results).items() if n > 1}
    assert twice == {}, f"{what}: frames answered twice"


async def _wait(predicate: Callable[[], object], timeout: float, what: str, poll: float = 0.1):
    """:func:`until` with a blocking predicate run off the event loop, so the camera keeps streaming."""

    async def check():
        return await asyncio.to_thread(predicate)

    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(poll)


def test_hosts_share_the_load_and_survive_a_worker_cut_off(network: Network, tmp_path):
    net = network
    redis_host = net.add_host("redis", 1)
    gateway_host = net.add_host("gw", 2)
    worker_hosts = [net.add_host("w1", 11), net.add_host("w2", 12)]
    redis_url = f"redis://{redis_host.address}:{REDIS_PORT}/0"

    frames, _ = make_clip(validation_faces(("happy", "surprise", "neutral"), per_class=4), CLIP_FRAMES, hold=5)
    clip = write_avi(frames, tmp_path / "clip.avi")
    long_clip = write_avi(frames * LONG_CLIP_LOOPS, tmp_path / "long.avi")

    # seeded here, once: workers starting together on an empty store can race (see ModelStore.open_default)
    Settings(model_store_root=tmp_path / "store").model_store()
    (tmp_path / "redis").mkdir()
    net.spawn(
        "redis",
        redis_host,
        [find_binary(), "--bind", redis_host.address, "--port", str(REDIS_PORT), *REDIS_FLAGS, str(tmp_path / "redis")],
        os.environ.copy(),
    )
    for host in worker_hosts:
        env = _env(
            redis_url,
            tmp_path,
            EMOSTREAM_METRICS_HOST=host.address,
            EMOSTREAM_METRICS_PORT=str(METRICS_PORT),
            EMOSTREAM_MAX_FRAME_AGE=str(MAX_FRAME_AGE),
        )
        net.spawn(host.name, host, [sys.executable, "-m", "emostream.cli", "worker", "--threads", "1"], env)
    token = secrets.token_hex(16)  # a gateway reachable from other hosts requires one
    gateway_env = _env(
        redis_url,
        tmp_path,
        EMOSTREAM_HOST=gateway_host.address,
        EMOSTREAM_PORT=str(GATEWAY_PORT),
        EMOSTREAM_TOKEN=token,
    )
    net.spawn("gateway", gateway_host, [sys.executable, "-m", "emostream.cli", "gateway"], gateway_env)
    gateway = f"http://{gateway_host.address}:{GATEWAY_PORT}"
    ingest_env = _env(redis_url, tmp_path, EMOSTREAM_INFLIGHT_FRAMES="8", EMOSTREAM_STALL_TIMEOUT="60")

    def ingest(label: str, source: Path) -> tuple[subprocess.Popen, Path]:
        out = tmp_path / f"{label}.jsonl"
        argv = [sys.executable, "-m", "emostream.cli", "ingest", "--source", str(source), "--out", str(out)]
        return net.spawn(label, gateway_host, argv, ingest_env), out

    client = redis.Redis.from_url(redis_url, socket_timeout=5)

    def alive() -> None:
        for label, process in net.processes.items():
            if not label.startswith("ingest") and process.poll() is not None:
                raise AssertionError(f"{label} exited with status {process.returncode}")

    def workers_listed() -> dict[str, str] | None:
        """Worker name by metrics address, as the gateway's /api/targets lists them."""
        alive()
        try:
            targets = json.loads(_get(f"{gateway}/api/targets"))
        except OSError:
            return None
        listed = {t["targets"][0]: t["labels"]["worker"] for t in targets if t["labels"]["role"] == "worker"}
        return listed if len(listed) == len(worker_hosts) else None

    def pending_of(name: str) -> int:
        consumers = client.xinfo_consumers(Keys().frames, Keys.group)
        return next((c["pending"] for c in consumers if c["name"].decode() == name), 0)

    async def scenario() -> None:
        listed = await _wait(workers_listed, START_S, "both workers listed in the gateway's /api/targets")
        # every host is reached at its own address: no worker advertises a loopback one
        addresses = [f"{h.address}:{METRICS_PORT}" for h in worker_hosts]
        assert sorted(listed) == sorted(addresses)
        names = [listed[a] for a in addresses]
        await _wait(lambda: _answers(f"{gateway}/readyz"), START_S, "the gateway ready")

        camera = await connect(gateway, ClipTrack(frames, fps=10), keep_frames=1, token=token)
        try:
            # 1. a clip through the queue from the gateway's host: every frame answered, both workers at work
            first, out = ingest("ingest-1", clip)
            await _wait(lambda: first.poll() is not None, STEP_S, "the first ingest run to finish")
            assert first.returncode == 0, net.log_tails()
            lines = _lines(out)
            assert [r["seq"] for r in lines] == list(range(CLIP_FRAMES)), "every frame of the clip answered once"
            assert {r["worker"] for r in lines} <= set(names)
            await _wait(
                lambda: all(_counter(a, "emostream_frames_processed") > 0 for a in addresses),
                STEP_S,
                "frames processed by both workers, on their own /metrics",
            )
            await until(lambda: len(camera.results) >= 10, STEP_S, "results on the camera stream")

            # 2. a second clip; the first worker's link goes down in its middle
            cut_name, survivor_name = names
            survivor = addresses[1]
            reclaimed_before = _counter(survivor, "emostream_frames_reclaimed") + _counter(
                survivor, "emostream_frames_dropped", reason="reclaimed_stale"
            )
            second, out = ingest("ingest-2", long_clip)
            await _wait(lambda: len(_lines(out)) >= CUT_AFTER_LINES, STEP_S, "the second clip under way")
            assert second.poll() is None, "the second clip ended before the cut: make LONG_CLIP_LOOPS larger"
            net.cut(worker_hosts[0].name)
            cut_at = time.time()  # after the link is down: a frame captured later cannot reach the cut-off worker

            # the survivor takes over: the camera stream keeps getting results for frames captured after the cut
            await until(
                lambda: sum(r["ts"] > cut_at for r in camera.results) >= 20,
                STEP_S,
                "camera results after the cut",
            )
            # what the cut-off worker held is claimed by the survivor once idle for the claim time
            held = 0

            def released() -> bool:
                nonlocal held
                pending = pending_of(cut_name)
                held = max(held, pending)
                return second.poll() is not None and pending == 0

            await _wait(released, STEP_S, "the second clip done and the cut-off worker's pending frames claimed")
            assert second.returncode == 0, net.log_tails()
            lines = _lines(out)
            total = CLIP_FRAMES * LONG_CLIP_LOOPS
            assert [r["seq"] for r in lines] == list(range(total)), "every frame of the second clip answered once"
            reclaimed = (
                _counter(survivor, "emostream_frames_reclaimed")
                + _counter(survivor, "emostream_frames_dropped", reason="reclaimed_stale")
                - reclaimed_before
            )
            assert reclaimed >= held, f"the cut-off worker held {held} frame(s); the survivor claimed {reclaimed}"
            # nothing can reach the cut-off worker: every frame queued after the cut was answered by the survivor
            during_cut = [r for r in [*camera.results, *lines] if r["ts"] > cut_at]
            assert during_cut and {r["worker"] for r in during_cut} == {survivor_name}

            # 3. the link comes back: the worker serves again, and no frame was answered twice
            restored_at = time.time()
            net.restore(worker_hosts[0].name)
            await until(
                lambda: any(r["worker"] == cut_name and r["ts"] > restored_at for r in camera.results),
                STEP_S,
                "the cut-off worker answering again once its link is back",
            )
            assert _counter(addresses[0], "emostream_frames_processed") > 0
            _seqs_once(camera.results, "camera stream")
            assert {r["stream"] for r in camera.results} == {camera.stream}
        finally:
            await camera.close()

    try:
        asyncio.run(asyncio.wait_for(scenario(), SCENARIO_S))
    except (AssertionError, TimeoutError) as err:
        raise AssertionError(f"{err}\n{net.log_tails()}") from err
    finally:
        client.close()
