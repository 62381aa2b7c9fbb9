"""The worker's detection stage as configured: a detector by name, optionally following streams."""

from collections.abc import Callable

from emostream.config import Settings
from workers.detect import Detector, NearDetector
from workers.tracking import FaceTracker


def _blazeface(settings: Settings, threads: int) -> NearDetector:
    from workers.blazeface import BlazeFaceDetector

    return BlazeFaceDetector(tiles=settings.detect_tiles, threads=threads)


def _haar(settings: Settings, threads: int) -> NearDetector:
    from workers.haar import HaarDetector

    return HaarDetector(settings.detect_width)


DETECTORS: dict[str, Callable[[Settings, int], NearDetector]] = {"blazeface": _blazeface, "haar": _haar}


def make_detector(
    settings: Settings, threads: int = 0, track: bool = True, on_pass: Callable[[str], None] | None = None
) -> Detector:
    """The configured detector; with ``track`` and ``settings.track_refresh`` > 0 it follows faces
    along streams (:mod:`workers.tracking`)."""
    try:
        detector = DETECTORS[settings.detector](settings, threads)
    except KeyError:
        raise ValueError(f"unknown detector {settings.detector!r}; choose from {sorted(DETECTORS)}") from None
    if track and settings.track_refresh > 0:
        return FaceTracker(detector, refresh=settings.track_refresh, on_pass=on_pass)
    return detector
