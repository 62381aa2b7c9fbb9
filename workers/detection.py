"""The worker's detection stage as configured: a detector by name, optionally following streams."""

from collections.abc import Callable

from workers.detect import Detector, HaarDetector
from workers.tracking import FaceTracker

DETECTORS: dict[str, Callable[[int], HaarDetector]] = {"haar": lambda width: HaarDetector(width)}


def make_detector(
    name: str, detect_width: int, track_refresh: int = 0, on_pass: Callable[[str], None] | None = None
) -> Detector:
    """The named detector; with ``track_refresh`` > 0 it follows faces along streams (:mod:`workers.tracking`)."""
    try:
        detector = DETECTORS[name](detect_width)
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; choose from {sorted(DETECTORS)}") from None
    return FaceTracker(detector, refresh=track_refresh, on_pass=on_pass) if track_refresh > 0 else detector
