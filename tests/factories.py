"""Real test data made on the fly: face folders, Kaggle CSVs, models with known answers."""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import keras
import numpy as np
import redis

from emostream.config import Settings
from emostream.labels import EMOTIONS
from model_store import Manifest, ModelStore
from model_store.manifest import SERVING_FILE
from model_store.store import new_version_id
from training.client import offers

REPO = Path(__file__).resolve().parent.parent
FER_ROOT = REPO.parent / "shared" / "datasets" / "fer2013"


def fer_root() -> Path:
    """The real FER2013 folders beside the project; tests that need real faces fail without them."""
    if not (FER_ROOT / "validation").is_dir():
        raise RuntimeError(f"FER2013 not found at {FER_ROOT}: the tests need ../shared/datasets/fer2013")
    return FER_ROOT


def copy_fer_subset(dest: Path, split: str, per_class: int) -> Path:
    """Copy the first ``per_class`` real faces of every class of ``split`` into ``dest/<class>/``."""
    for name in EMOTIONS:
        (dest / name).mkdir(parents=True, exist_ok=True)
        for src in sorted((fer_root() / split / name).iterdir())[:per_class]:
            (dest / name / src.name).write_bytes(src.read_bytes())
    return dest


def fer_dataset(root: Path, train_per_class: int, val_per_class: int) -> Path:
    """A small dataset root (``train/``, ``validation/``) of real FER2013 faces."""
    copy_fer_subset(root / "train", "train", per_class=train_per_class)
    copy_fer_subset(root / "validation", "validation", per_class=val_per_class)
    return root


def run_cli(*args: str, env: dict[str, str | None], timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m emostream.cli ARGS`` with ``env`` added (a variable set to None: removed), its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "emostream.cli", *args],
        cwd=REPO,
        env={name: value for name, value in {**os.environ, **env}.items() if value is not None},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextmanager
def trainer_process(env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """``emostream trainer`` (RQ's non-forking worker on the training queue) as a child process."""
    process = subprocess.Popen(
        [sys.executable, "-m", "emostream.cli", "trainer"],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        client = redis.Redis.from_url(env["REDIS_URL"])
        deadline = time.monotonic() + 120
        while not offers(client, Settings()):  # registered, with what it can read: jobs may be queued now
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "the trainer never registered"
            time.sleep(0.1)
        client.close()
        yield process
    finally:
        process.terminate()
        process.wait(30)
        process.stderr.close()


def brightness(label: int) -> int:
    """The grey level that :func:`brightness_model` classifies as ``label``."""
    return round(255 * label / (len(EMOTIONS) - 1))


def brightness_model() -> keras.Model:
    """A real Keras model whose answer is known: the class whose grey level is nearest the mean.

    logits_k = 2 c_k m - c_k^2 is -(m - c_k)^2 up to a term shared by every class.
    """
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(len(EMOTIONS), activation="softmax")
    outputs = dense(x)
    centres = np.arange(len(EMOTIONS)) / (len(EMOTIONS) - 1)
    dense.set_weights([(100 * 2 * centres)[None, :], -100 * centres**2])
    return keras.Model(inputs, outputs)


def write_faces(root: Path, faces: dict[str, list[np.ndarray]], ext: str = "png") -> Path:
    """Write ``faces[class]`` images into ``root/<class>/``, creating every class folder."""
    for name in EMOTIONS:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(faces.get(name, [])):
            cv2.imwrite(str(root / name / f"{name}_{i}.{ext}"), image)
    return root


def flat(level: int, size: int = 48) -> np.ndarray:
    return np.full((size, size), level, np.uint8)


def write_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    """A Kaggle-format CSV: ``emotion,pixels,Usage`` rows given as strings."""
    path.write_text("emotion,pixels,Usage\n" + "".join(f"{e},{p},{u}\n" for e, p, u in rows))
    return path


def pixels(level: int) -> str:
    return " ".join([str(level)] * 48 * 48)


def publish_brightness(store: ModelStore, accuracy: float = 0.5, **fields) -> str:
    """Publish :func:`brightness_model` as a new version with this validation accuracy; its id."""
    manifest = Manifest(
        version=new_version_id("brightness"),
        architecture="brightness",
        created_at="2026-11-24T00:00:00+00:00",
        metrics={"validation_accuracy": accuracy},
        **fields,
    )
    return store.publish(brightness_model(), manifest).version


def without_serving_file(store: ModelStore, version: str) -> str:
    """``version`` as a store from before workers ran LiteRT holds it: no ``model.tflite``."""
    manifest = store.manifest(version)
    (store.path(version) / SERVING_FILE).unlink()
    manifest.files.pop(SERVING_FILE)
    manifest.write(store.path(version))
    return version


def brightness_store(root: Path, accuracy: float = 0.5) -> ModelStore:
    """A store whose live version is :func:`brightness_model`."""
    store = ModelStore(root)
    store.promote(publish_brightness(store, accuracy), force=True)
    return store
