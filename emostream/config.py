"""One typed configuration object, built from ``EMOSTREAM_*`` variables and flags, passed down.

Nothing below this module reads the environment: processes build a :class:`Settings` once
(``Settings.from_env().replace(**flags)``) and hand it to the parts they start.
"""

import base64
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import math
import os
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

_HOST = r"[\w.-]+(:\d{1,5})?"
ICE_URL = re.compile(rf"stun:{_HOST}|(?P<turn>turn:{_HOST}(\?transport=(udp|tcp))?|turns:{_HOST}(\?transport=tcp)?)")
"""A STUN or TURN URL (RFC 7064, 7065) that both browsers and the gateway's WebRTC stack use: a name or
IPv4 address; not ``stuns:`` (STUN over TLS) nor ``turns:`` over UDP (DTLS), which they pass over."""


def own_address() -> str:
    """This host's IPv4 address: its name's, or where its name does not resolve (a container's often
    does not), the one it routes outward from; ``ValueError`` saying what to set when neither is known."""
    name = socket.gethostname()
    try:
        return socket.gethostbyname(name)
    except OSError:
        pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # UDP: nothing is sent, the kernel only picks the route
            return probe.getsockname()[0]
    except OSError:
        raise ValueError(
            f"this host's name {name!r} does not resolve and no route leads out: set EMOSTREAM_ADVERTISE_HOST "
            "to the address other hosts reach this one at"
        ) from None


UP_RECORD = "up.json"
"""What a running ``emostream up`` writes into ``redis_dir``: its private Redis's URL and its pid."""


def _data_home(env: Mapping[str, str]) -> Path:
    return Path(env.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "emostream"


@dataclass(frozen=True)
class Settings:
    """Process-wide settings. Each field ``name`` is read from ``EMOSTREAM_<NAME>``,
    except ``redis_url`` which is the conventional ``REDIS_URL``."""

    model_store_root: Path = field(default_factory=lambda: _data_home(os.environ) / "models")
    runs_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "emostream" / "runs")
    redis_url: str | None = field(default=None, repr=False)
    """None: `up` and `ingest` start a private redis-server. May hold a password: see :meth:`redis_shown`."""
    key_prefix: str = "emostream"
    # gateway / ingest: what goes on the wire
    host: str = "127.0.0.1"
    port: int = 8080
    sample_fps: float = 10.0
    """Frames sampled per second per stream."""
    frame_width: int = 640
    """Frames wider than this are downscaled before they are queued."""
    encoding: str = "jpeg"
    jpeg_quality: int = 80
    frames_maxlen: int = 2000
    """Approximate cap on the frames stream (XADD MAXLEN ~)."""
    result_max_age: float = 1.0
    """Seconds a result stays drawn on the returned video."""
    ice_servers: str = ""
    """Comma-separated STUN/TURN URLs for the browser and the gateway."""
    ice_username: str = ""
    """The TURN servers' username (their long-term credentials), for ``turn:``/``turns:`` URLs."""
    ice_credential: str = field(default="", repr=False)
    """The TURN servers' password."""
    ice_secret: str = field(default="", repr=False)
    """Instead of a fixed username and password: the TURN servers' shared secret (coturn's
    ``static-auth-secret``), from which each page and peer connection gets credentials that expire."""
    ice_ttl: int = 86400
    """Seconds credentials minted from ``ice_secret`` stay valid: longer than a camera session lasts."""
    # ingest
    inflight_frames: int = 0
    """Most frames one ingest run has queued or in work at once; 0: four worker batches (4 x batch_frames)."""
    resend_after: float = 3.0
    """Seconds an ingest run waits for a frame's result before sending it again (file) or dropping it (live)."""
    stall_timeout: float = 60.0
    """An ingest run fails when no result comes back for this long while frames are in flight."""
    source_timeout: float = 10.0
    """Seconds to open, or to read a frame from, a network camera before it counts as lost."""
    max_streams: int = 32
    """Camera streams one gateway serves at once; further offers get 503."""
    stream_idle_timeout: float = 10.0
    """Seconds a gateway stream may go without a video frame before it is closed (vanished client)."""
    max_inflight_per_stream: int = 4
    """Frames of one gateway stream queued and unanswered at once; a sample beyond it is skipped (backpressure).

    A frame stops counting once older than ``max_frame_age`` plus a second unanswered (workers drop such
    frames, or it was lost)."""
    max_streams_per_client: int = 8
    """Camera streams one client address may have open on a gateway; further offers get 429."""
    offer_rate: float = 30.0
    """Offers per minute one client address may make (token bucket, 0: unlimited); further ones get 429."""
    offer_burst: int = 10
    """Offers one client address may make at once before ``offer_rate`` applies."""
    token: str = field(default="", repr=False)
    """Camera token: the page, offers and one's own streams; required when the gateway binds beyond loopback."""
    admin_token: str = field(default="", repr=False)
    """Operator token: also models, retraining, the stream listing (with no token at all, everyone is operator)."""
    trusted_proxies: str = ""
    """Comma-separated addresses or networks of reverse proxies whose X-Forwarded-For / -Proto are believed."""
    cors_origins: str = ""
    """Comma-separated origins allowed to call the API from other sites (empty: no CORS headers at all)."""
    # workers
    workers: int = 0
    """Worker processes `up` starts; 0 picks as many as fit the cores."""
    max_frame_age: float = 0.5
    """Latency budget: a frame older than this (capture to dequeue) is dropped unprocessed."""
    batch_frames: int = 4
    """Most frames one worker takes per read (XREADGROUP COUNT)."""
    batch_wait_ms: int = 5
    """How long a worker waits for a batch to fill once it has one frame."""
    detector: str = "blazeface"
    """Face detector: blazeface (a small DNN on LiteRT) or haar (OpenCV's cascade)."""
    detect_tiles: int = 2
    """BlazeFace: also search N x N overlapping squares of a frame, for faces under ~1/5 of its side (0: off)."""
    detect_width: int = 288
    """Haar: faces are detected on the frame downscaled to this width; boxes are mapped back."""
    runtime: str = "auto"
    """Classifier runtime: litert, keras (needs TensorFlow), or auto (keras only on a GPU host with TensorFlow)."""
    track_refresh: int = 10
    """Workers follow each stream's faces between frames and search a whole frame at least every
    this many frames of a stream (or when the picture changes); 0: search every frame."""
    metrics_host: str = "127.0.0.1"
    """Address a worker's /metrics, /healthz and /readyz bind to (0.0.0.0 in containers)."""
    metrics_port: int = 0
    """Port of a worker's /metrics, /healthz and /readyz (0: any free port)."""
    advertise_host: str = ""
    """Address other hosts reach this process at (default: metrics_host, or this host's IP if 0.0.0.0)."""
    log_format: str = "text"
    log_level: str = "INFO"
    shadow_sample: int = 0
    """Recent live face crops workers keep in Redis for shadow evaluation of candidates (0: none)."""
    feedback: int = 0
    """The operator's consent switch: 1 stores users' label corrections (face crop + label), 0 stores nothing."""
    feedback_dir: Path = field(default_factory=lambda: _data_home(os.environ) / "feedback")
    """Where corrections go, as ``<class>/`` folders a retraining job can include."""
    feedback_max: int = 10000
    """Most corrected faces ``feedback_dir`` holds (about 2 kB each); further corrections are refused (0: no limit)."""
    redis_dir: Path = field(default_factory=lambda: _data_home(os.environ) / "redis")
    """Where ``emostream up``'s private Redis keeps its data, so retraining jobs outlive a restart."""
    data: Path = field(default_factory=lambda: _data_home(os.environ) / "fer2013")
    """The dataset retraining jobs use unless they name one: a folder with ``train/`` and ``validation/``, or
    FER2013's Kaggle CSV."""
    trainer_heartbeat: int = 15
    """Seconds between a trainer's heartbeats; one silent for three is taken for dead: it is no longer
    offered to enqueuers, and the job it was running ends as failed."""
    data_roots: str = ""
    """Comma-separated folders (or files) a retraining job may read data from (empty: ``data`` and ``feedback_dir``)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        values: dict[str, Any] = {
            "model_store_root": Path(env.get("EMOSTREAM_MODEL_STORE") or _data_home(env) / "models").expanduser(),
            "runs_dir": Path(env.get("EMOSTREAM_RUNS") or Path.home() / ".cache" / "emostream" / "runs").expanduser(),
            "redis_url": env.get("REDIS_URL") or None,
        }
        for f in dataclasses.fields(cls):
            raw = env.get(f"EMOSTREAM_{f.name.upper()}")
            if f.name in values or raw is None:
                continue
            values[f.name] = _convert(f.name, f.type, raw)
        settings = cls(**values)
        settings.validate()
        return settings

    def replace(self, **changes: Any) -> "Settings":
        """A copy with ``changes`` (flags) applied; ``None`` values are ignored."""
        settings = dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
        settings.validate()
        return settings

    def _ice_urls(self) -> list[tuple[str, bool]]:
        """Each URL of ``ice_servers`` and whether it is a TURN server; ``ValueError`` for a malformed one."""
        urls = []
        for url in filter(None, (u.strip() for u in self.ice_servers.split(","))):
            match = ICE_URL.fullmatch(url)
            if not match:
                raise ValueError(
                    f"EMOSTREAM_ICE_SERVERS: {url!r} is not a STUN or TURN URL "
                    "(stun:HOST[:PORT], turn:HOST[:PORT][?transport=udp|tcp] or turns:HOST[:PORT][?transport=tcp]; "
                    "browsers and the gateway pass over stuns: and TURN over DTLS)"
                )
            urls.append((url, bool(match["turn"])))
        return urls

    def ice_server_list(self, now: float | None = None) -> list[dict[str, str]]:
        """``ice_servers`` as WebRTC's ``iceServers`` entries, TURN ones with their credentials (with
        ``ice_secret``, fresh ones valid ``ice_ttl`` seconds from ``now``); ``ValueError`` for TURN without
        credentials (the gateway's to hold: other processes may share its configuration, not its secrets)."""
        servers = []
        for url, turn in self._ice_urls():
            if not turn:
                servers.append({"urls": url})
            elif self.ice_secret:
                servers.append({"urls": url, **turn_credentials(self.ice_secret, self.ice_ttl, now)})
            elif self.ice_username and self.ice_credential:
                servers.append({"urls": url, "username": self.ice_username, "credential": self.ice_credential})
            else:
                raise ValueError(
                    f"EMOSTREAM_ICE_SERVERS: {url!r} is a TURN server: set EMOSTREAM_ICE_SECRET, or "
                    "EMOSTREAM_ICE_USERNAME and EMOSTREAM_ICE_CREDENTIAL (browsers refuse TURN without credentials)"
                )
        return servers

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, not {value}")
        if self.encoding not in ("jpeg", "gray"):
            raise ValueError(f"encoding must be jpeg or gray, not {self.encoding!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be within 1..100")
        if self.sample_fps <= 0 or self.max_frame_age <= 0 or self.result_max_age <= 0:
            raise ValueError("sample_fps, max_frame_age and result_max_age must be positive")
        if self.frame_width < 32 or self.detect_width < 32:
            raise ValueError("frame_width and detect_width must be at least 32 pixels")
        if self.trainer_heartbeat < 1:
            raise ValueError("trainer_heartbeat must be at least 1 second")
        if self.batch_frames < 1 or self.batch_wait_ms < 0 or self.workers < 0 or self.track_refresh < 0:
            raise ValueError("batch_frames must be >= 1, batch_wait_ms, workers and track_refresh >= 0")
        for proxy in filter(None, (p.strip() for p in self.trusted_proxies.split(","))):
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"EMOSTREAM_TRUSTED_PROXIES: {proxy!r} is not an address or network") from None
        if self.ice_secret and (self.ice_username or self.ice_credential):
            raise ValueError("set EMOSTREAM_ICE_SECRET or EMOSTREAM_ICE_USERNAME and _CREDENTIAL, not both")
        if self.ice_ttl < 60:
            raise ValueError("ice_ttl must be at least 60 seconds")
        self._ice_urls()  # a malformed URL is refused at once; TURN without credentials by the gateway
        if self.detect_tiles < 0 or self.runtime not in ("auto", "litert", "keras"):
            raise ValueError("detect_tiles must be >= 0 and runtime one of auto, litert, keras")
        if self.max_inflight_per_stream < 1 or self.max_streams_per_client < 1 or self.offer_burst < 1:
            raise ValueError("max_inflight_per_stream, max_streams_per_client and offer_burst must be >= 1")
        if self.offer_rate < 0 or self.resend_after <= 0 or self.feedback_max < 0:
            raise ValueError("offer_rate and feedback_max must be >= 0 and resend_after positive")
        if min(self.stall_timeout, self.source_timeout, self.stream_idle_timeout) <= 0:
            raise ValueError("stall_timeout, source_timeout and stream_idle_timeout must be positive")
        if self.inflight_frames < 0 or self.frames_maxlen < 1:
            raise ValueError("inflight_frames must be >= 0 and frames_maxlen >= 1")

    def redis_shown(self) -> str:
        """``redis_url`` as logs and messages may show it: without its password."""
        if not self.redis_url:
            return "a private redis-server"
        url = urlsplit(self.redis_url)
        if url.password is None:
            return self.redis_url
        host = f"[{url.hostname}]" if ":" in (url.hostname or "") else url.hostname
        netloc = f"{url.username or ''}:***@{host}" + (f":{url.port}" if url.port else "")
        return urlunsplit(url._replace(netloc=netloc))

    def allowed_data(self) -> list[Path]:
        """Where a retraining job may read data: ``data_roots``, or ``data`` and ``feedback_dir``."""
        roots = [Path(r.strip()).expanduser() for r in self.data_roots.split(",") if r.strip()]
        return [p.resolve() for p in roots or [self.data, self.feedback_dir]]

    def require_redis_url(self, why: str) -> str:
        """``redis_url``; unset, that of the ``emostream up`` running on this host (so ``retrain`` and
        ``jobs`` beside it need no setting); else a clear error saying why this command needs one."""
        url = self.redis_url or self.running_up_redis()
        if not url:
            raise ValueError(f"REDIS_URL is not set and no `emostream up` runs here: {why}")
        return url

    def running_up_redis(self) -> str | None:
        """The private Redis of the ``emostream up`` running on this host, from its record in ``redis_dir``."""
        path = self.redis_dir / UP_RECORD
        try:
            if path.stat().st_uid != os.getuid():  # only this user's own up
                return None
            record = json.loads(path.read_text())
            pid, url = int(record["pid"]), str(record["redis_url"])
            os.kill(pid, 0)  # ProcessLookupError: that up was killed before it could remove its record
        except (OSError, ValueError, KeyError, TypeError):  # none, not one up wrote, or its up is gone
            return None
        return url

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables, for child processes (inverse of from_env)."""
        env = {
            f"EMOSTREAM_{f.name.upper()}": str(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name not in ("model_store_root", "runs_dir", "redis_url")
        }
        env["EMOSTREAM_MODEL_STORE"] = str(self.model_store_root)
        env["EMOSTREAM_RUNS"] = str(self.runs_dir)
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        return env

    def advertised(self, bound: str) -> str:
        """``host:port`` to register for a server bound at ``bound`` (``host:port``); a server bound to
        every address is advertised at this host's own (:func:`own_address`)."""
        host, port = bound.rsplit(":", 1)
        host = host.strip("[]")
        if self.advertise_host:
            host = self.advertise_host.strip("[]")
        elif host in ("0.0.0.0", "::", ""):
            host = own_address()
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # an IPv6 address in brackets

    @property
    def keys(self):
        from ingest.keys import Keys

        return Keys(self.key_prefix)

    def model_store(self):
        """The model store at ``model_store_root``, seeded with the bundled model when empty."""
        from model_store.store import ModelStore

        return ModelStore.open_default(self.model_store_root)


def turn_credentials(secret: str, ttl: int, now: float | None = None) -> dict[str, str]:
    """TURN credentials that expire ``ttl`` seconds from ``now``, as TURN servers sharing ``secret`` check
    them (coturn's ``use-auth-secret``): the username is the expiry time, the password its HMAC-SHA1."""
    username = f"{int(time.time() if now is None else now) + ttl}:emostream"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return {"username": username, "credential": base64.b64encode(digest).decode()}


def _convert(name: str, kind: Any, raw: str) -> Any:
    kind = str(kind)
    try:
        if kind in ("int", "<class 'int'>"):
            return int(raw)
        if kind in ("float", "<class 'float'>"):
            return float(raw)
        if "Path" in kind:
            return Path(raw).expanduser()
    except ValueError:
        raise ValueError(f"EMOSTREAM_{name.upper()}={raw!r} is not a valid {kind}") from None
    return raw
