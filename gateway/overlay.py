"""Drawing a result onto a video frame (BGR, or the planes of ``yuv420p`` video): plain functions over numpy arrays."""

from collections.abc import Callable, Sequence

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


Plane = tuple[np.ndarray, int, Callable[[tuple[int, int, int]], tuple[int, ...]]]
"""An image plane, its subsampling (1: full resolution, 2: half each way) and a BGR colour's value in it."""


def _bgr_planes(frame_bgr: np.ndarray) -> list[Plane]:
    return [(frame_bgr, 1, lambda bgr: bgr)]


def _yuv(bgr: tuple[int, int, int]) -> tuple[int, int, int]:
    """A BGR colour in BT.601 limited-range YUV, as yuv420p video carries it."""
    b, g, r = bgr
    return (
        round(16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255),
        round(128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255),
        round(128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255),
    )


def _i420_planes(frame: np.ndarray) -> list[Plane]:
    height, width = frame.shape[0] * 2 // 3, frame.shape[1]
    flat, chroma = frame.reshape(-1), (height // 2) * (width // 2)  # a chroma plane need not fill whole rows
    u = flat[height * width : height * width + chroma].reshape(height // 2, width // 2)
    v = flat[height * width + chroma : height * width + 2 * chroma].reshape(height // 2, width // 2)
    return [
        (frame[:height], 1, lambda bgr: (_yuv(bgr)[0],)),
        (u, 2, lambda bgr: (_yuv(bgr)[1],)),
        (v, 2, lambda bgr: (_yuv(bgr)[2],)),
    ]


def _paint(planes: list[Plane], width: int, height: int, faces: Sequence[Face], scale: float, stale: bool) -> None:
    """Each face's box and shown (smoothed, when tracked) label, painted into every plane."""
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
        text = label if stale else f"{label} {score:.0%}"
        (tw, th), baseline = cv2.getTextSize(text, FONT, font_scale, weight)
        top = y0 - th - baseline - 2 if y0 >= th + baseline + 2 else y1 + 1
        corners = [(x0, y0), (x1, y1), (x0, top), (x0 + tw + 4, top + th + baseline + 2), (x0 + 2, top + th + 1)]
        for plane, sub, value in planes:
            box0, box1, banner0, banner1, origin = [(px // sub, py // sub) for px, py in corners]
            cv2.rectangle(plane, box0, box1, value(color), -(-thickness // sub))  # chroma covers the luma line
            cv2.rectangle(plane, banner0, banner1, value(color), cv2.FILLED)
            ink = max(1, round(weight / sub))
            cv2.putText(plane, text, origin, FONT, font_scale / sub, value(TEXT_COLOR), ink, cv2.LINE_AA)


def draw(frame_bgr: np.ndarray, faces: Sequence[Face], scale: float = 1.0, stale: bool = False) -> np.ndarray:
    """Draw each face's box and label onto a BGR image in place and return it.

    ``scale`` maps the boxes' source pixels to this frame's pixels (the sender may change resolution).
    """
    _paint(_bgr_planes(frame_bgr), frame_bgr.shape[1], frame_bgr.shape[0], faces, scale, stale)
    return frame_bgr


def draw_i420(frame: np.ndarray, faces: Sequence[Face], scale: float = 1.0, stale: bool = False) -> np.ndarray:
    """As :func:`draw`, onto a ``yuv420p`` frame as ``VideoFrame.to_ndarray`` gives it (the Y plane's
    rows, then U's and V's at half resolution each way): the returned video is drawn on without
    converting it to BGR and back."""
    _paint(_i420_planes(frame), frame.shape[1], frame.shape[0] * 2 // 3, faces, scale, stale)
    return frame
