"""Shadow evaluation: a candidate version beside the live one on a sample of recent live faces."""

import numpy as np

from emostream.labels import EMOTIONS, FACE_SIZE
from model_store.store import ModelStore
from training.evaluation import predict_scores


def sampled_faces(raw: list[bytes]) -> np.ndarray:
    """Decode the workers' face sample (raw 48x48 crops); entries of another size are skipped."""
    size = FACE_SIZE * FACE_SIZE
    faces = [np.frombuffer(item, np.uint8).reshape(FACE_SIZE, FACE_SIZE) for item in raw if len(item) == size]
    return np.stack(faces) if faces else np.zeros((0, FACE_SIZE, FACE_SIZE), np.uint8)


def _summary(scores: np.ndarray) -> dict:
    labels = np.bincount(scores.argmax(axis=1), minlength=len(EMOTIONS)) / max(1, len(scores))
    return {
        "label_share": {name: round(float(p), 4) for name, p in zip(EMOTIONS, labels, strict=True)},
        "mean_top_score": round(float(scores.max(axis=1).mean()), 4) if len(scores) else None,
    }


NO_FACES = "no live faces sampled: workers keep them only while EMOSTREAM_SHADOW_SAMPLE is above 0"


def compare(store: ModelStore, candidate: str, faces: np.ndarray, against: str | None = None) -> dict:
    """Agreement of ``candidate`` with ``against`` (default: live) and both score distributions."""
    reference = against or store.live_version()
    new = predict_scores(store.load(candidate).model, faces)
    old = predict_scores(store.load(reference).model, faces)
    agreement = float((new.argmax(axis=1) == old.argmax(axis=1)).mean()) if len(faces) else None
    return {
        "faces": len(faces),
        "candidate": candidate,
        "reference": reference,
        "agreement": None if agreement is None else round(agreement, 4),
        "candidate_scores": _summary(new),
        "reference_scores": _summary(old),
        **({} if len(faces) else {"note": NO_FACES}),
    }
