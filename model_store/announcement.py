"""Telling running workers that another version is live: one message on the model channel.

Whoever moves the live pointer announces it (``emostream models promote`` and ``rollback``, the
gateway's API, a retraining job's promotion); workers also poll the pointer, so a lost message only
delays the switch by seconds.
"""

import json
import logging

import redis

from emostream.config import Settings

log = logging.getLogger(__name__)


def announce(client: redis.Redis, settings: Settings, version: str) -> bool:
    """Tell running workers a new version is live; whether the message went out.

    A Redis that cannot be reached is logged, not raised: the pointer has moved already, and
    workers polling it switch within seconds anyway.
    """
    try:
        client.publish(settings.keys.model_channel, json.dumps({"version": version}))
    except redis.RedisError as err:
        log.warning("%s is live; could not tell workers at once (%s): they switch when they next poll", version, err)
        return False
    return True
