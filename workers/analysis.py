"""Frames in, labelled faces out: detect every frame, crop, classify all faces in one call."""

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ingest.crop import crop_faces
from ingest.wire import Face
from workers.classify import Classifier
from workers.detect import Box, Detector, FrameKey


@dataclass
class Analysis:
    faces: list[list[Face]]
    """Per frame, its faces with boxes scaled to source pixels."""
    detect_s: float
    classify_s: float
    batch_size: int
    crops: np.ndarray
    """Every face of the batch, 48x48, in the order classified."""


def analyse(
    grays: list[np.ndarray],
    scales: list[float],
    detector: Detector,
    classifier: Classifier,
    keys: list[FrameKey] | None = None,
) -> Analysis:
    """Label every face of every frame; ``scales`` map frame pixels to source pixels.

    ``keys`` (stream, seq) place each frame in its stream, for detectors that follow streams.
    """
    started = time.perf_counter()
    frame_keys: Sequence[FrameKey | None] = keys or [None] * len(grays)
    boxes: list[list[Box]] = [detector.detect(gray, key) for gray, key in zip(grays, frame_keys, strict=True)]
    crops = [crop_faces(gray, frame_boxes) for gray, frame_boxes in zip(grays, boxes, strict=True)]
    detected = time.perf_counter()
    faces_in = np.concatenate(crops) if crops else np.zeros((0, 48, 48), np.uint8)
    scores = classifier(faces_in)
    classified = time.perf_counter()
    faces, start = [], 0
    for frame_boxes, scale in zip(boxes, scales, strict=True):
        frame_faces = []
        for box in frame_boxes:
            frame_faces.append(Face.from_scores([round(v * scale) for v in box], scores[start]))
            start += 1
        faces.append(frame_faces)
    return Analysis(faces, detected - started, classified - detected, len(scores), faces_in)
