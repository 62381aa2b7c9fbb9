"""Classifying a batch of faces in one call, and following the live model version.

Workers run a version's ``model.tflite`` on LiteRT: no TensorFlow in the process, so a worker
starts in a fraction of a second in about 110 MiB. A host with a GPU and TensorFlow installed
runs the Keras model instead (``EMOSTREAM_RUNTIME``; :mod:`workers.keras_runtime`). Scores
are divided by the version's fitted temperature (its manifest's ``temperature``), so a shown
confidence means what it says.
"""

import importlib.util
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from emostream.labels import FACE_SIZE, NUM_CLASSES
from model_store import Manifest, ModelStore, ModelStoreError
from model_store.calibration import calibrate
from model_store.manifest import MANIFEST, MODEL_FILE
from workers.litert import LiteModel

log = logging.getLogger(__name__)

Infer = Callable[[np.ndarray], np.ndarray]
"""Float faces ``(N, 48, 48, 1)`` in 0..255 to probabilities ``(N, 7)``."""


class Classifier:
    """One model version, served: uint8 faces ``(N, 48, 48)`` to calibrated probabilities ``(N, 7)``."""

    def __init__(self, manifest: Manifest, infer: Infer, runtime: str) -> None:
        self.version = manifest.version
        self.architecture = manifest.architecture
        self.temperature = manifest.temperature
        self.runtime = runtime
        self._infer = infer

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        if len(faces) == 0:
            return np.zeros((0, NUM_CLASSES), np.float32)
        scores = self._infer(faces.reshape(-1, FACE_SIZE, FACE_SIZE, 1).astype(np.float32))
        return calibrate(scores, self.temperature)

    def smoke_test(self) -> None:
        """Refuse a model whose outputs are not probabilities over the 7 classes."""
        scores = self(np.full((2, FACE_SIZE, FACE_SIZE), 128, np.uint8))
        if scores.shape != (2, NUM_CLASSES) or not np.all(np.isfinite(scores)):
            raise ModelStoreError(f"{self.version}: smoke prediction gave {scores.shape} non-finite scores")
        if not np.allclose(scores.sum(axis=1), 1.0, atol=1e-3):
            raise ModelStoreError(f"{self.version}: smoke prediction is not a probability distribution")


def use_keras(runtime: str) -> bool:
    """Whether ``runtime`` (auto, litert, keras) means Keras on this host."""
    if runtime == "auto":
        return Path("/dev/nvidiactl").exists() and importlib.util.find_spec("tensorflow") is not None
    return runtime == "keras"


def load_classifier(
    store: ModelStore, version: str | None = None, runtime: str = "auto", threads: int = 0
) -> Classifier:
    """Verify ``version`` (default: the live one) and load it for ``runtime``."""
    if use_keras(runtime):
        from workers.keras_runtime import keras_infer

        manifest = store.verify(version or store.require_live())
        return Classifier(manifest, keras_infer(store.path(manifest.version) / MODEL_FILE, threads), "keras")
    manifest, path = store.serving_file(version)
    try:
        model = LiteModel(path, threads=threads)
    except (RuntimeError, ValueError) as err:  # LiteRT's errors for a file that is no model
        raise ModelStoreError(f"{manifest.version}: {path.name} does not load ({err})") from err
    return Classifier(manifest, lambda x: next(iter(model(x).values())), "litert")


class LiveModel:
    """The classifier of the store's live version, swapped when the live pointer moves.

    ``refresh`` is cheap (one small file read) unless the version changed; a version that
    fails to load or its smoke prediction is refused and the current one keeps serving.
    """

    def __init__(self, store: ModelStore, runtime: str = "auto", threads: int = 0, check_interval: float = 2.0) -> None:
        self.store = store
        self.runtime = runtime
        self.threads = threads
        self.check_interval = check_interval
        self.refused: dict[str, str] = {}
        """Versions this worker refused, with the reason; one is tried again once its manifest changes."""
        self._refused_as: dict[str, tuple[int, int] | None] = {}
        self.refusals = 0
        """Refusals so far (a version refused again after its manifest changed counts again)."""
        self.classifier = self._load(store.live_version())
        self._checked = time.monotonic()

    def _load(self, version: str | None) -> Classifier:
        classifier = load_classifier(self.store, version, self.runtime, self.threads)
        classifier.smoke_test()
        return classifier

    def refresh(self, force: bool = False) -> bool:
        """Switch to a newly promoted version; returns whether it switched."""
        now = time.monotonic()
        if not force and now - self._checked < self.check_interval:
            return False
        self._checked = now
        try:
            live = self.store.live_version()
        except OSError as err:  # a shared store's hiccup (NFS): keep serving, look again next time
            log.warning("cannot read the live pointer, still serving %s: %s", self.classifier.version, err)
            return False
        if live is None or live == self.classifier.version:
            return False
        if live in self.refused and self._refused_as[live] == self._manifest_stamp(live):
            return False
        try:
            self.classifier = self._load(live)
        except (ModelStoreError, OSError, ValueError) as err:
            self.refused[live], self._refused_as[live] = str(err), self._manifest_stamp(live)
            self.refusals += 1
            log.error("refused model %s, still serving %s: %s", live, self.classifier.version, err)
            return False
        self.refused.pop(live, None)
        log.info("switched to model %s", live)
        return True

    def _manifest_stamp(self, version: str) -> tuple[int, int] | None:
        """Which file ``version``'s manifest is (``models convert`` replaces it), or None if unreadable."""
        try:
            stat = (self.store.path(version) / MANIFEST).stat()
        except (ModelStoreError, OSError):  # a pointer to a version that is gone, or unreadable
            return None
        return stat.st_ino, stat.st_mtime_ns
