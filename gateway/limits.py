"""Rate limits of the gateway: token buckets, alone (one stream's data channel), one per client address
(offers), or with a memory of what was done (one stream's label corrections)."""

import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence

MAX_CLIENTS = 4096
"""Client addresses a :class:`ClientRateLimiter` remembers; beyond it, the least recently seen are forgotten."""


class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` a second; :meth:`take` spends one if there is one."""

    def __init__(self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("a token bucket needs rate > 0 and capacity >= 1")
        self.rate = rate
        self.capacity = capacity
        self.clock = clock
        self.tokens = float(capacity)
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self) -> bool:
        self._refill()
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def wait(self) -> float:
        """Seconds until a token is there (0 if one is)."""
        self._refill()
        return max(0.0, (1 - self.tokens) / self.rate)

    @property
    def full(self) -> bool:
        self._refill()
        return self.tokens >= self.capacity


class ClientRateLimiter:
    """One :class:`TokenBucket` per client address (``per_minute`` 0: no limit).

    The table stays bounded: a full bucket is the same as none, so full ones are forgotten first,
    then the least recently seen.
    """

    def __init__(
        self, per_minute: float, burst: int, max_clients: int = MAX_CLIENTS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_minute = per_minute
        self.burst = burst
        self.max_clients = max_clients
        self.clock = clock
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def acquire(self, client: str) -> float:
        """0 when ``client`` may go ahead (a token is spent), else the seconds until it may."""
        if self.per_minute <= 0:
            return 0.0
        bucket = self.buckets.get(client)
        if bucket is None:
            self._make_room()
            bucket = self.buckets[client] = TokenBucket(self.per_minute / 60, self.burst, self.clock)
        else:
            self.buckets.move_to_end(client)
        return 0.0 if bucket.take() else max(bucket.wait(), 0.001)

    def _make_room(self) -> None:
        if len(self.buckets) < self.max_clients:
            return
        for client in [c for c, b in self.buckets.items() if b.full]:
            del self.buckets[client]
        while len(self.buckets) >= self.max_clients:
            self.buckets.popitem(last=False)


class CorrectionLimit:
    """One stream's label corrections: each face of a frame once, and at most ``per_minute`` (``burst`` at once)."""

    def __init__(self, per_minute: float = 30, burst: int = 10, clock: Callable[[], float] = time.monotonic) -> None:
        self.bucket = TokenBucket(per_minute / 60, burst, clock)
        self.done: set[tuple[int, tuple[int, ...]]] = set()

    @staticmethod
    def _key(seq: int, box: Sequence[float]) -> tuple[int, tuple[int, ...]]:
        return seq, tuple(round(v) for v in box)

    def repeated(self, seq: int, box: Sequence[float]) -> bool:
        """Whether this face of frame ``seq`` was corrected already."""
        return self._key(seq, box) in self.done

    def acquire(self) -> float:
        """0 when a correction may be stored now (a token is spent), else the seconds until one may."""
        return 0.0 if self.bucket.take() else max(self.bucket.wait(), 0.001)

    def record(self, seq: int, box: Sequence[float], kept: Collection[int]) -> None:
        """Remember a correction as it is being stored (a second one of the face, even at once, is a repeat);
        frames no longer ``kept`` cannot be corrected, so they are forgotten."""
        self.done = {key for key in self.done if key[0] in kept} | {self._key(seq, box)}

    def forget(self, seq: int, box: Sequence[float]) -> None:
        """A correction that could not be stored after all: it may be sent again."""
        self.done.discard(self._key(seq, box))
