"""Settings keep their secrets out of logs and messages."""

import pytest

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
