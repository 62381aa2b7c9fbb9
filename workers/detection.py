"""The worker's detection stage as configured: a detector by name, optionally following streams.

:data:`DETECTORS` is the registry the ``--detector`` flags offer; importing this module loads no
detector (nor NumPy or OpenCV), so that every command's ``--help`` stays fast.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING

from emostream.config import Settings

if TYPE_CHECKING:
    from workers.detect import Detector, NearDetector


def _blazeface(settings: Settings, threads: int) -> "NearDetector":
    from workers.blazeface import BlazeFaceDetector

    return BlazeFaceDetector(tiles=settings.detect_tiles, threads=threads)


def _haar(settings: Settings, threads: int) -> "NearDetector":
    from workers.haar import HaarDetector

    return HaarDetector(settings.detect_width)


DETECTORS: dict[str, Callable[[Settings, int], "NearDetector"]] = {"blazeface": _blazeface, "haar": _haar}


def make_detector(
    settings: Settings, threads: int = 0, track: bool = True, on_pass: Callable[[str], None] | None = None
) -> "Detector":
    """The configured detector; with ``track`` and ``settings.track_refresh`` > 0 it follows faces
    along streams (:mod:`workers.tracking`)."""
    try:
        detector = DETECTORS[settings.detector](settings, threads)
    except KeyError:
        raise ValueError(f"unknown detector {settings.detector!r}; choose from {sorted(DETECTORS)}") from None
    if track and settings.track_refresh > 0:
        from workers.tracking import FaceTracker

        return FaceTracker(detector, refresh=settings.track_refresh, on_pass=on_pass)
    return detector
