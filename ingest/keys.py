"""Every Redis key and channel name emostream uses, in one place; and how to read the heartbeats in
:attr:`Keys.workers`, which workers write and the gateway, the stack and other workers read."""

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix, so several deployments can share a Redis."""

    prefix: str = "emostream"

    @property
    def frames(self) -> str:
        """The stream of frames to classify, read by workers through :attr:`group`."""
        return f"{self.prefix}:frames"

    group: str = "workers"

    def results(self, consumer: str) -> str:
        """The reply stream of one frame producer (a gateway or an ingest run)."""
        return f"{self.prefix}:results:{consumer}"

    @property
    def model_channel(self) -> str:
        """Pub/sub channel announcing a newly promoted model version."""
        return f"{self.prefix}:model"

    @property
    def workers(self) -> str:
        """Hash of live processes' metrics endpoints, refreshed by heartbeats (see :func:`live_heartbeats`)."""
        return f"{self.prefix}:workers"

    @property
    def face_sample(self) -> str:
        """A capped list of recent live 48x48 face crops, kept only when shadow sampling is on."""
        return f"{self.prefix}:face-sample"

    def trainer(self, name: str = "*") -> str:
        """A live trainer's offer of the data it can read (``*``: the pattern matching every one)."""
        return f"{self.prefix}:trainer:{name}"


def live_heartbeats(entries: dict, now: float, max_age: float) -> dict:
    """The entries of the :attr:`Keys.workers` hash (name -> JSON) stamped less than ``max_age`` seconds
    before ``now``, each as a dict (``name``, ``ts``, ``metrics``, ``role``, ...; ``ts`` a float).

    ``now`` must be on the clock the entries are stamped with (workers stamp Redis's clock); an
    entry nobody can read counts as expired.
    """
    live = {}
    for name, raw in entries.items():
        try:
            beat = json.loads(raw)
            beat["ts"] = float(beat["ts"])
        except (ValueError, TypeError, KeyError):
            continue
        if now - beat["ts"] < max_age:
            live[name] = beat
    return live
