import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import aiortc  # noqa: F401  before TensorFlow: libsrtp's init segfaults once TF's crypto symbols are loaded
import pytest
import redis

from emostream.redis_server import RedisServer


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
