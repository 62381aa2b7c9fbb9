"""How late an asyncio event loop runs its timers: the lag every callback on it waits for.

A loop busy with one callback (or starved of CPU) runs everything else late: WebRTC packets,
ICE consent answers, results to browsers. A timer due every :data:`INTERVAL_S` measures it.
"""

import asyncio

from prometheus_client import Histogram

INTERVAL_S = 0.25


async def watch(histogram: Histogram, interval: float = INTERVAL_S) -> None:
    """Observe, every ``interval`` seconds until cancelled, how late the loop woke this task."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval
        await asyncio.sleep(interval)
        histogram.observe(max(0.0, loop.time() - due))
