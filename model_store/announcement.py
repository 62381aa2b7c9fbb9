"""Telling running workers that another version is live: one message on the model channel.

Whoever moves the live pointer announces it (``emostream models promote`` and ``rollback``, the
gateway's API, a retraining job's promotion); workers also poll the pointer, so a lost message only
delays the switch by seconds.
"""

import json

import redis

from emostream.config import Settings


def announce(client: redis.Redis, settings: Settings, version: str) -> None:
    """Tell running workers a new version is live (they also poll the live pointer)."""
    client.publish(settings.keys.model_channel, json.dumps({"version": version}))
