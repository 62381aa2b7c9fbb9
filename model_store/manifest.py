"""The manifest of a model version: what it is, how it was made, how to feed it."""

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from emostream.labels import EMOTIONS, FACE_SIZE

MANIFEST = "manifest.json"
MODEL_FILE = "model.keras"
SERVING_FILE = "model.tflite"
"""The same network converted for LiteRT at publish: what workers run (no TensorFlow needed)."""
FORMAT = 1
"""Manifest schema version; a store refuses manifests of a newer format."""

DEFAULT_INPUT = {
    "shape": [FACE_SIZE, FACE_SIZE, 1],
    "dtype": "float32",
    "color": "grayscale",
    "range": [0, 255],
    "rescaling": "inside the model",
}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Manifest:
    """Everything known about one version; ``files`` maps file name to sha256."""

    version: str
    architecture: str
    created_at: str
    classes: list[str] = field(default_factory=lambda: list(EMOTIONS))
    input: dict = field(default_factory=lambda: dict(DEFAULT_INPUT))
    metrics: dict = field(default_factory=dict)
    training_config: dict = field(default_factory=dict)
    datasets: dict = field(default_factory=dict)
    parent: str | None = None
    temperature: float = 1.0
    """Scores are served as softmax(log(p) / temperature), fitted on validation at publish."""
    files: dict[str, str] = field(default_factory=dict)
    format: int = FORMAT

    @property
    def validation_accuracy(self) -> float | None:
        value = self.metrics.get("validation_accuracy")
        return None if value is None else float(value)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict) -> "Manifest":
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    def write(self, directory: Path) -> None:
        (directory / MANIFEST).write_text(self.dumps())

    @classmethod
    def read(cls, directory: Path) -> "Manifest":
        return cls.from_json(json.loads((directory / MANIFEST).read_text()))
