"""Cutting detected faces out of frames the way FER2013's faces were cut: the one crop that workers
(faces to classify) and the gateway (a user's correction, stored as training data) share.

Measured with ``benchmarks/crop_margin.py`` (240 FER2013 validation faces placed x4 on 640x480
frames, the default Haar settings): the Haar box of a face covers the FER image itself (median
side ratio 1.005, centre offset under 1%), and the live model is about as accurate on crops of
exactly the Haar box as on the original 48x48 images (70.7% against 72.5% on the faces found;
67.7% with 10% more margin, 64.7% with 20%). So a crop is the Haar box, squared.
"""

from collections.abc import Sequence

import cv2
import numpy as np

from emostream.labels import FACE_SIZE

Box = tuple[float, float, float, float]
"""x, y, w, h in frame pixels (a detector's box, or one scaled back from source pixels)."""

FER_BOX_SCALE = 1.0
"""Side of the FER2013 image relative to the Haar box of its face (measured)."""


def crop_face(gray: np.ndarray, box: Box, scale: float = FER_BOX_SCALE) -> np.ndarray:
    """A 48x48 uint8 face: the square around ``box`` grown by ``scale``, edges replicated."""
    x, y, w, h = box
    side = max(1, round(max(w, h) * scale))
    x0, y0 = round(x + w / 2 - side / 2), round(y + h / 2 - side / 2)
    x1, y1 = x0 + side, y0 + side
    height, width = gray.shape
    pad = max(0, -x0, -y0, x1 - width, y1 - height)
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    region = gray[y0:y1, x0:x1]
    interpolation = cv2.INTER_AREA if side > FACE_SIZE else cv2.INTER_LINEAR
    return cv2.resize(region, (FACE_SIZE, FACE_SIZE), interpolation=interpolation)


def crop_faces(gray: np.ndarray, boxes: Sequence[Box], scale: float = FER_BOX_SCALE) -> np.ndarray:
    """All faces of a frame as ``(N, 48, 48)`` uint8."""
    if not boxes:
        return np.zeros((0, FACE_SIZE, FACE_SIZE), np.uint8)
    return np.stack([crop_face(gray, box, scale) for box in boxes])
