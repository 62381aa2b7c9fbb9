"""Scoring a model on a FaceSet: accuracy, macro F1, per-class report, confusion matrix."""

import keras
import numpy as np
import tensorflow as tf
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from emostream.labels import EMOTIONS, FACE_SIZE
from model_store.calibration import calibrate, expected_calibration_error


def predict_scores(model: keras.Model, images: np.ndarray, *, tta: bool = False, batch_size: int = 256) -> np.ndarray:
    """Class probabilities ``(N, 7)`` from one compiled call per batch.

    With ``tta`` the scores of each face and its mirror image are averaged.
    """
    infer = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    x = images.reshape(-1, FACE_SIZE, FACE_SIZE, 1).astype(np.float32)
    out = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        scores = infer(batch).numpy()
        if tta:
            scores = (scores + infer(batch[:, :, ::-1]).numpy()) / 2.0
        out.append(scores)
    return np.concatenate(out) if out else np.zeros((0, len(EMOTIONS)), np.float32)


def score(scores: np.ndarray, labels: np.ndarray) -> dict:
    """Metrics of predicted ``scores`` against true ``labels`` (JSON-ready)."""
    predicted = scores.argmax(axis=1)
    classes = list(range(len(EMOTIONS)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=classes, zero_division=0)
    present = np.isin(classes, np.union1d(labels, predicted))
    return {
        "n": len(labels),
        "accuracy": float((predicted == labels).mean()) if len(labels) else 0.0,
        # over the classes these faces hold or were given: one with neither has no F1 to average
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(EMOTIONS, precision, recall, f1, support, strict=True)
        },
        "confusion": confusion_matrix(labels, predicted, labels=classes).tolist(),
        "ece": expected_calibration_error(scores, labels) if len(labels) else 0.0,
    }


def evaluate(
    model: keras.Model, images: np.ndarray, labels: np.ndarray, *, tta: bool = False, temperature: float = 1.0
) -> dict:
    """Predict (scores divided by ``temperature``, as served) and score in one step."""
    return score(calibrate(predict_scores(model, images, tta=tta), temperature), labels)
