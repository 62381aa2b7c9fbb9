"""Drawing a result onto a video frame: one plain function over a numpy array, benchmarkable alone."""

from collections.abc import Sequence

import cv2
import numpy as np

from emostream.labels import EMOTIONS
from ingest.wire import Face

COLORS: dict[str, tuple[int, int, int]] = dict(
    zip(
        EMOTIONS,
        [(40, 40, 230), (40, 150, 40), (160, 60, 160), (40, 200, 250), (200, 120, 40), (230, 200, 40), (220, 220, 220)],
        strict=True,
    )
)
"""BGR box colour of each label."""
STALE_COLOR = (128, 128, 128)
"""Boxes of a result that lags the video are drawn grey, without scores."""
TEXT_COLOR = (0, 0, 0)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def css_colors() -> dict[str, str]:
    """The box colours as CSS ``#rrggbb`` (the page's legend), the late-result grey as ``late``."""
    hex_of = lambda bgr: "#{:02x}{:02x}{:02x}".format(*reversed(bgr))  # noqa: E731
    return {**{label: hex_of(bgr) for label, bgr in COLORS.items()}, "late": hex_of(STALE_COLOR)}


def draw(frame_bgr: np.ndarray, faces: Sequence[Face], scale: float = 1.0, stale: bool = False) -> np.ndarray:
    """Draw each face's box and shown (smoothed, when tracked) label onto ``frame_bgr`` in place and return it.

    ``scale`` maps the boxes' source pixels to this frame's pixels (the sender may change resolution).
    """
    height, width = frame_bgr.shape[:2]
    thickness = max(2, round(width / 200))
    font_scale = max(0.4, width / 800)  # text about 1/20 of a 640x480 frame's height, legible in a small video
    weight = max(1, round(font_scale * 1.5))
    for face in faces:
        x, y, w, h = (round(v * scale) for v in face.box)
        x0, y0 = min(max(x, 0), width - 1), min(max(y, 0), height - 1)
        x1, y1 = min(max(x + w, 0), width - 1), min(max(y + h, 0), height - 1)
        if x1 <= x0 or y1 <= y0:
            continue
        label, score = face.shown
        color = STALE_COLOR if stale else COLORS.get(label, STALE_COLOR)
        cv2.rectangle(frame_bgr, (x0, y0), (x1, y1), color, thickness)
        text = label if stale else f"{label} {score:.0%}"
        (tw, th), baseline = cv2.getTextSize(text, FONT, font_scale, weight)
        top = y0 - th - baseline - 2 if y0 >= th + baseline + 2 else y1 + 1
        cv2.rectangle(frame_bgr, (x0, top), (x0 + tw + 4, top + th + baseline + 2), color, cv2.FILLED)
        cv2.putText(frame_bgr, text, (x0 + 2, top + th + 1), FONT, font_scale, TEXT_COLOR, weight, cv2.LINE_AA)
    return frame_bgr
