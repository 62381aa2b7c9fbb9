"""Temperature scaling (Guo et al., 2017): confidences that match how often the top label is right.

A version's temperature is fitted on validation at publish and stored in its manifest; every
place that serves scores applies it. ``expected_calibration_error`` is the gap between
confidence and accuracy, averaged over 15 equal-width bins of the top score.
"""

import numpy as np

TEMPERATURES = np.round(np.arange(0.5, 3.0001, 0.01), 2)
"""The grid a temperature is chosen from (the negative log-likelihood is smooth in T)."""


def calibrate(scores: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(scores) / temperature)``: the same ranking, sharper (T < 1) or softer (T > 1)."""
    if temperature == 1.0:
        return scores
    logits = np.log(np.maximum(scores, 1e-12)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def negative_log_likelihood(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.maximum(scores[np.arange(len(labels)), labels], 1e-12)).mean())


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> float:
    """The temperature on :data:`TEMPERATURES` that minimises the negative log-likelihood of ``labels``."""
    losses = [negative_log_likelihood(calibrate(scores, float(t)), labels) for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(losses))])


def reliability(scores: np.ndarray, labels: np.ndarray, bins: int = 15) -> list[dict]:
    """Per equal-width bin of the top score: its range, count, mean confidence and accuracy."""
    confidence, right = scores.max(axis=1), scores.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        chosen = index == b
        rows.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "n": int(chosen.sum()),
                "confidence": float(confidence[chosen].mean()) if chosen.any() else None,
                "accuracy": float(right[chosen].mean()) if chosen.any() else None,
            }
        )
    return rows


def expected_calibration_error(scores: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Sum over bins of (bin share) x |accuracy - mean confidence|."""
    total = len(labels)
    return float(
        sum(r["n"] / total * abs(r["accuracy"] - r["confidence"]) for r in reliability(scores, labels, bins) if r["n"])
    )
