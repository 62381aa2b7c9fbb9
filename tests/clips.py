"""Clips of real faces with known boxes and labels: FER2013 validation faces, upscaled on larger frames.

``make_clip`` returns BGR frames and the ground truth of each frame; ``write_y4m`` makes a
Chromium fake-webcam file, ``write_avi`` a video file for ``emostream ingest``.
"""

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from factories import fer_root

from emostream.labels import EMOTIONS
from ingest.tracks import overlap as iou


@dataclass(frozen=True)
class TruthFace:
    box: tuple[int, int, int, int]
    """x, y, w, h of the placed (upscaled) FER image in frame pixels."""
    label: str


def validation_faces(classes: tuple[str, ...] = EMOTIONS, per_class: int = 5, offset: int = 0):
    """``(face48, label)`` pairs from the real validation split, in a fixed order."""
    out = []
    for name in classes:
        files = sorted((fer_root() / "validation" / name).iterdir())[offset : offset + per_class]
        out += [(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE), name) for f in files]
    return out


def _background(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(60, 160, width, dtype=np.float32)[None, :, None]
    noise = rng.normal(0, 4, (height, width, 1))
    return np.clip(np.broadcast_to(ramp, (height, width, 3)) + noise, 0, 255).astype(np.uint8)


def make_clip(
    faces,
    frames: int,
    size: tuple[int, int] = (640, 480),
    per_frame: int = 1,
    hold: int = 5,
    scale: int = 4,
    seed: int = 0,
    sensor_noise: float = 0.0,
) -> tuple[list[np.ndarray], list[list[TruthFace]]]:
    """``frames`` BGR frames; every ``hold`` frames the next ``per_frame`` faces appear side by side.

    ``sensor_noise`` adds fresh Gaussian noise of that standard deviation to every frame, as a
    camera does, so that no two frames are identical.
    """
    width, height = size
    rng = np.random.default_rng(seed + 1)
    side = 48 * scale
    background = _background(width, height, seed)
    slots = [(int((i + 0.5) * width / per_frame - side / 2), (height - side) // 2) for i in range(per_frame)]
    clip, truth = [], []
    for index in range(frames):
        frame = background.copy()
        placed = []
        first = (index // hold) * per_frame
        for slot, (x, y) in enumerate(slots):
            face, label = faces[(first + slot) % len(faces)]
            big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
            frame[y : y + side, x : x + side] = big[..., None]
            placed.append(TruthFace((x, y, side, side), label))
        if sensor_noise:
            frame = np.clip(frame + rng.normal(0, sensor_noise, frame.shape), 0, 255).astype(np.uint8)
        clip.append(frame)
        truth.append(placed)
    return clip, truth


def textured_frames(count: int, size: tuple[int, int] = (640, 480), seed: int = 7) -> list[np.ndarray]:
    """Face-free BGR frames: smoothed noise at several scales, filled shapes, lines and a gradient."""
    width, height = size
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        frame = np.zeros((height, width), np.float32)
        for cells in (4, 16, 64):
            coarse = rng.normal(0, 30, (max(1, cells * height // width), cells)).astype(np.float32)
            frame += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        frame += np.linspace(rng.uniform(40, 120), rng.uniform(120, 200), width, dtype=np.float32)[None, :]
        for _ in range(rng.integers(3, 9)):
            colour = float(rng.uniform(0, 255))
            centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            if rng.random() < 0.5:
                axes = (int(rng.integers(10, 120)), int(rng.integers(10, 120)))
                cv2.ellipse(frame, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
            else:
                end = (int(rng.integers(0, width)), int(rng.integers(0, height)))
                cv2.line(frame, centre, end, colour, int(rng.integers(1, 12)))
        gray = np.clip(frame + rng.normal(0, 2, frame.shape), 0, 255).astype(np.uint8)
        frames.append(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    return frames


def write_y4m(frames: list[np.ndarray], path: Path, fps: int = 10) -> Path:
    """A YUV4MPEG2 (4:2:0) file for Chromium's --use-file-for-fake-video-capture."""
    height, width = frames[0].shape[:2]
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            out.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


def write_avi(frames: list[np.ndarray], path: Path, fps: int = 10) -> Path:
    """A Motion-JPEG AVI that OpenCV (and so `emostream ingest`) reads frame-exactly."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def score(found_boxes: list[list], labels: list[list[str]] | None, truth) -> tuple[float, float | None]:
    """Face recall (a found box with IoU > 0.5 against a placed face) and, with ``labels``, the share
    of found faces labelled right; ``found_boxes`` and ``labels`` are per frame, like ``truth``."""
    hits = right = total = 0
    for index, placed in enumerate(truth):
        for face in placed:
            total += 1
            for j, box in enumerate(found_boxes[index]):
                if iou(box, face.box) > 0.5:
                    hits += 1
                    right += bool(labels and labels[index][j] == face.label)
                    break
    return hits / total, (right / hits if labels and hits else None)
