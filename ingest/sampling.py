"""Which frames to keep so that a stream is sampled at a target rate: pure, driven by capture timestamps.

Used by the ingest sources (file with ``--fps``, RTSP, camera) and by the gateway. Kept frames sit on a
grid of ``1 / fps`` seconds started at the first frame, so the mean rate is exact whatever the source
rate and jitter; when the source pauses (or its clock jumps back), the grid restarts at the next frame
instead of keeping a burst of frames to catch up.
"""

TOLERANCE = 1e-3
"""Seconds a frame may come early for its grid slot and still be kept (float error, clock jitter)."""


class Sampler:
    """``keep(ts)`` for each captured frame, in capture order, says whether to use it."""

    def __init__(self, fps: float) -> None:
        if not fps > 0:
            raise ValueError(f"sampling rate must be positive, got {fps}")
        self.period = 1.0 / fps
        self._start: float | None = None
        self._slot = 0

    def keep(self, ts: float) -> bool:
        due = self._due()
        if due is None or ts >= due + self.period or ts < due - self.period - TOLERANCE:
            self._start, self._slot = ts, 1  # first frame, a pause, or the clock went back: restart the grid
            return True
        if ts >= due - TOLERANCE:
            self._slot += 1
            return True
        return False

    def _due(self) -> float | None:
        return None if self._start is None else self._start + self._slot * self.period
