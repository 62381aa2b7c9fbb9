import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import aiortc  # noqa: F401  before TensorFlow: libsrtp's init segfaults once TF's crypto symbols are loaded
import pytest
import redis
from hypothesis import settings

from emostream.redis_server import RedisServer

settings.register_profile("no-deadline", deadline=None)  # examples are judged by their answers, never their speed
settings.load_profile("no-deadline")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The README runs the tests on two pytest-xdist workers (``-n 2 --dist loadgroup``): the slow
    tests, which train or stream on every core, take turns on one of them while the rest run
    beside them, so no two of them compete for the cores."""
    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.xdist_group("slow"))


@pytest.fixture
def redis_server():
    """A real, private redis-server on a free port, stopped after the test."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_client(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()
