"""Classifying a batch of faces in one compiled call, and following the live model version."""

import logging
import time

import numpy as np
import tensorflow as tf

from emostream.labels import FACE_SIZE, NUM_CLASSES
from model_store import LoadedModel, ModelStore, ModelStoreError

log = logging.getLogger(__name__)


def configure_tensorflow(threads: int) -> None:
    """Cap TensorFlow's CPU threads (call before the first op) so N workers share the cores."""
    if threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)


class Classifier:
    """A model version compiled once for any batch size of 48x48 faces."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.version = loaded.version
        self.architecture = loaded.manifest.architecture
        model = loaded.model
        spec = tf.TensorSpec([None, FACE_SIZE, FACE_SIZE, 1], tf.float32)
        self._infer = tf.function(lambda x: model(x, training=False), input_signature=[spec])

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        """Probabilities ``(N, 7)`` for uint8 faces ``(N, 48, 48)``."""
        if len(faces) == 0:
            return np.zeros((0, NUM_CLASSES), np.float32)
        x = faces.reshape(-1, FACE_SIZE, FACE_SIZE, 1).astype(np.float32)
        return self._infer(x).numpy()

    def smoke_test(self) -> None:
        """Refuse a model whose outputs are not probabilities over the 7 classes."""
        scores = self(np.full((2, FACE_SIZE, FACE_SIZE), 128, np.uint8))
        if scores.shape != (2, NUM_CLASSES) or not np.all(np.isfinite(scores)):
            raise ModelStoreError(f"{self.version}: smoke prediction gave {scores.shape} non-finite scores")
        if not np.allclose(scores.sum(axis=1), 1.0, atol=1e-3):
            raise ModelStoreError(f"{self.version}: smoke prediction is not a probability distribution")


class LiveModel:
    """The classifier of the store's live version, swapped when the live pointer moves.

    ``refresh`` is cheap (one small file read) unless the version changed; a version that
    fails to load or its smoke prediction is refused and the current one keeps serving.
    """

    def __init__(self, store: ModelStore, check_interval: float = 2.0) -> None:
        self.store = store
        self.check_interval = check_interval
        self.refused: dict[str, str] = {}
        self.classifier = self._load(store.live_version())
        self._checked = time.monotonic()

    def _load(self, version: str | None) -> Classifier:
        classifier = Classifier(self.store.load(version))
        classifier.smoke_test()
        return classifier

    def refresh(self, force: bool = False) -> bool:
        """Switch to a newly promoted version; returns whether it switched."""
        now = time.monotonic()
        if not force and now - self._checked < self.check_interval:
            return False
        self._checked = now
        live = self.store.live_version()
        if live is None or live == self.classifier.version or live in self.refused:
            return False
        try:
            self.classifier = self._load(live)
        except (ModelStoreError, OSError, ValueError) as err:
            self.refused[live] = str(err)
            log.error("refused model %s, still serving %s: %s", live, self.classifier.version, err)
            return False
        log.info("switched to model %s", live)
        return True
