"""User corrections as training data: 48x48 face crops in the ``<class>/`` folder layout of FER2013.

Stored only while the operator's consent switch (``EMOSTREAM_FEEDBACK``) is on; a retraining
job can add the folder beside FER2013 (``emostream retrain --extra-train DIR``).
"""

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from emostream.labels import EMOTIONS, FACE_SIZE


class FeedbackDisabled(PermissionError):
    """Feedback capture is switched off: nothing is stored."""


@dataclass(frozen=True)
class FeedbackStore:
    root: Path
    enabled: bool = False

    def add(self, face: np.ndarray, label: str, predicted: str, model_version: str) -> Path:
        """Store one corrected face; returns the image's path."""
        if not self.enabled:
            raise FeedbackDisabled("feedback capture is off (the operator's EMOSTREAM_FEEDBACK switch)")
        if label not in EMOTIONS:
            raise ValueError(f"unknown label {label!r}; expected one of {list(EMOTIONS)}")
        if face.shape != (FACE_SIZE, FACE_SIZE) or face.dtype != np.uint8:
            raise ValueError(f"a feedback face is a {FACE_SIZE}x{FACE_SIZE} uint8 crop, got {face.dtype} {face.shape}")
        folder = self.root / label
        folder.mkdir(parents=True, exist_ok=True)
        for name in EMOTIONS:  # the training loader wants every class folder, even empty
            (self.root / name).mkdir(exist_ok=True)
        name = f"feedback_{time.strftime('%Y%m%dT%H%M%S')}_{uuid.uuid4().hex[:8]}"
        path = folder / f"{name}.png"
        tmp = folder / f".{name}.png.tmp"
        ok, data = cv2.imencode(".png", face)
        if not ok:
            raise ValueError("could not encode the face as PNG")
        tmp.write_bytes(data.tobytes())
        tmp.rename(path)
        with (self.root / "feedback.jsonl").open("a") as log:
            log.write(
                json.dumps(
                    {
                        "file": str(path.relative_to(self.root)),
                        "label": label,
                        "predicted": predicted,
                        "model_version": model_version,
                        "at": time.time(),
                    }
                )
                + "\n"
            )
        return path

    def count(self) -> dict[str, int]:
        return {
            name: len(list((self.root / name).glob("*.png"))) if (self.root / name).is_dir() else 0 for name in EMOTIONS
        }
