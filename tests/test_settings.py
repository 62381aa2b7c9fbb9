"""Settings keep their secrets out of logs and messages, and name an address for this host whatever its name."""

import ipaddress
import re
import shlex
import subprocess
import sys

import pytest
from factories import REPO

from emostream.config import Settings


def test_secrets_stay_out_of_the_settings_repr():
    settings = Settings(
        redis_url="redis://:pw-redis@db:6379/0", token="pw-token", admin_token="pw-admin", ice_credential="pw-turn",
        ice_secret="pw-secret",
    )  # fmt: skip
    assert "pw-" not in repr(settings)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@db.example:6380/1", "redis://:***@db.example:6380/1"),
        ("rediss://app:hunter2@db.example/0", "rediss://app:***@db.example/0"),
        ("redis://:hunter2@[::1]:6379", "redis://:***@[::1]:6379"),
        ("redis://db.example:6379/0", "redis://db.example:6379/0"),
        (None, "a private redis-server"),
    ],
)
def test_the_redis_url_is_shown_without_its_password(url, shown):
    assert Settings(redis_url=url).redis_shown() == shown


def advertised_in(namespaces: list[str]) -> subprocess.CompletedProcess:
    """``Settings().advertised("0.0.0.0:9100")`` in a process whose host name resolves nowhere, in new
    ``namespaces`` (``unshare`` options) beside a new UTS one."""
    script = 'from emostream.config import Settings; print(Settings().advertised("0.0.0.0:9100"))'
    command = f"hostname no-such-host-7f3a && {shlex.quote(sys.executable)} -c {shlex.quote(script)}"
    return subprocess.run(
        ["unshare", "--uts", *namespaces, "sh", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_a_host_whose_name_does_not_resolve_is_advertised_at_the_address_it_routes_out_from():
    done = advertised_in([])
    assert done.returncode == 0, done.stderr
    host, port = done.stdout.strip().rsplit(":", 1)
    assert port == "9100" and ipaddress.ip_address(host).version == 4 and not ipaddress.ip_address(host).is_loopback


def test_a_host_with_no_name_and_no_route_says_what_to_set():
    done = advertised_in(["--net"])
    assert done.returncode != 0
    assert "'no-such-host-7f3a' does not resolve and no route leads out: set EMOSTREAM_ADVERTISE_HOST" in done.stderr


def test_a_trainer_heartbeat_under_a_second_is_refused_by_name():
    with pytest.raises(ValueError, match="trainer_heartbeat must be at least 1 second"):
        Settings.from_env({"EMOSTREAM_TRAINER_HEARTBEAT": "0"})


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("EMOSTREAM_RESULT_MAX_AGE", "nan", "result_max_age must be a finite number, not nan"),
        ("EMOSTREAM_SAMPLE_FPS", "inf", "sample_fps must be a finite number, not inf"),
        ("EMOSTREAM_STALL_TIMEOUT", "-5", "stall_timeout, source_timeout and stream_idle_timeout must be positive"),
        ("EMOSTREAM_SOURCE_TIMEOUT", "0", "stall_timeout, source_timeout and stream_idle_timeout must be positive"),
        ("EMOSTREAM_INFLIGHT_FRAMES", "-3", "inflight_frames must be >= 0 and frames_maxlen >= 1"),
        ("EMOSTREAM_FRAMES_MAXLEN", "0", "inflight_frames must be >= 0 and frames_maxlen >= 1"),
    ],
)
def test_a_setting_out_of_range_or_not_finite_is_refused_by_name(variable, value, message):
    """A NaN age would keep every stale frame (no comparison with NaN is true) and break the page's JSON."""
    with pytest.raises(ValueError, match=re.escape(message)):
        Settings.from_env({variable: value})


@pytest.mark.parametrize(
    ("advertise", "bound", "listed"),
    [
        ("", "127.0.0.1:9100", "127.0.0.1:9100"),
        ("fd00:10:244::5", "0.0.0.0:9100", "[fd00:10:244::5]:9100"),  # a pod IP on an IPv6 cluster
        ("[fd00::5]", "0.0.0.0:9100", "[fd00::5]:9100"),
        ("", "::1:9100", "[::1]:9100"),
        ("10.0.0.7", "0.0.0.0:8080", "10.0.0.7:8080"),
    ],
)
def test_addresses_are_advertised_as_prometheus_reads_them(advertise, bound, listed):
    assert Settings(advertise_host=advertise).advertised(bound) == listed
