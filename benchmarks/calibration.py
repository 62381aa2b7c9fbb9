"""How well a version's shown confidences are calibrated, and how precisely 3,589 faces can tell.

    python benchmarks/calibration.py [VERSION ...] [--data ../shared/datasets/fer2013] [--splits 10]

For each version (default: the live one) of ``EMOSTREAM_MODEL_STORE``, on validation, with its
served LiteRT file: expected calibration error (15 equal-width bins of the top score, as
``evaluate --json`` reports it)

- of the raw softmax, and with the temperature fitted on all of validation (what publishing does);
- held out: the temperature fitted on one random half and measured on the other, both ways,
  over ``--splits`` random splits;
- the noise floor: what a *perfectly* calibrated model with the same confidences would measure
  (labels drawn from its own calibrated scores), on all of validation and on half of it, as the
  mean and 90th percentile of 200 draws. A measured ECE near the floor is as good as these
  faces can show.
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from emostream.config import Settings
from model_store.calibration import calibrate, expected_calibration_error, fit_temperature
from training.data import load
from workers.classify import load_classifier

DRAWS = 200


def raw_scores(version: str | None, images: np.ndarray) -> tuple[str, np.ndarray]:
    classifier = load_classifier(Settings.from_env().model_store(), version, runtime="litert", threads=1)
    classifier.temperature = 1.0
    return classifier.version, np.concatenate([classifier(images[i : i + 256]) for i in range(0, len(images), 256)])


def held_out(scores: np.ndarray, labels: np.ndarray, splits: int, rng: np.random.Generator) -> list[float]:
    errors = []
    for _ in range(splits):
        order = rng.permutation(len(labels))
        halves = order[: len(order) // 2], order[len(order) // 2 :]
        for fit, test in (halves, halves[::-1]):
            temperature = fit_temperature(scores[fit], labels[fit])
            errors.append(expected_calibration_error(calibrate(scores[test], temperature), labels[test]))
    return errors


def noise_floor(calibrated: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """ECE of a perfectly calibrated model on ``size`` faces with these confidences, over DRAWS draws."""
    errors = []
    for _ in range(DRAWS):
        chosen = calibrated[rng.choice(len(calibrated), size, replace=False)]
        cumulative = np.cumsum(chosen / chosen.sum(axis=1, keepdims=True), axis=1)
        drawn = (rng.random((size, 1)) > cumulative).sum(axis=1).clip(max=chosen.shape[1] - 1)
        errors.append(expected_calibration_error(chosen, drawn))
    return np.array(errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("versions", nargs="*", default=[None], help="model versions (default: the live one)")
    parser.add_argument("--data", default="../shared/datasets/fer2013", help="dataset root with validation/")
    parser.add_argument("--splits", type=int, default=10, help="random half splits for the held-out figure")
    args = parser.parse_args()
    validation = load(args.data, "validation")
    labels = validation.labels
    print(
        "| version | raw | temperature fitted on all | held out (half, mean) "
        "| perfectly calibrated: all / half (mean, p90) |"
    )
    print("|---|---:|---:|---:|---:|")
    for version in args.versions:
        name, scores = raw_scores(version, validation.images)
        rng = np.random.default_rng(0)
        temperature = fit_temperature(scores, labels)
        calibrated = calibrate(scores, temperature)
        whole, half = noise_floor(calibrated, len(labels), rng), noise_floor(calibrated, len(labels) // 2, rng)
        print(
            f"| {name} | {expected_calibration_error(scores, labels):.4f} "
            f"| {expected_calibration_error(calibrated, labels):.4f} (T {temperature:.2f}) "
            f"| {np.mean(held_out(scores, labels, args.splits, rng)):.4f} "
            f"| {whole.mean():.4f} ({np.percentile(whole, 90):.4f}) "
            f"/ {half.mean():.4f} ({np.percentile(half, 90):.4f}) |"
        )


if __name__ == "__main__":
    main()
