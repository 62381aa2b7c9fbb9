"""Turning a finished training run directory into a published model version, with its served form.

The served form is the LiteRT file workers run (:mod:`model_store.convert`) and the temperature
that calibrates its scores, fitted on validation; the manifest records the served file's own
validation accuracy and calibration error beside the Keras model's.
"""

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np

from emostream import logs
from model_store.calibration import calibrate, expected_calibration_error, fit_temperature
from model_store.convert import to_tflite
from model_store.errors import PromotionRefused
from model_store.manifest import Manifest
from model_store.store import ModelStore, new_version_id
from training.data import FaceSet
from workers.litert import LiteModel

RUN_FILES = (
    "history.png",
    "confusion.png",
    "reliability.png",
    "report.txt",
    "metrics.json",
    "config.json",
    "history.csv",
)


@dataclass
class Serving:
    tflite: bytes
    temperature: float
    metrics: dict


def serving_form(model: keras.Model, validation: FaceSet) -> Serving:
    """The LiteRT file of ``model``, the temperature fitted to its scores on ``validation``, and its metrics."""
    with logs.quiet_native_start():  # the converter's and LiteRT's start-up lines
        tflite = to_tflite(model)
        lite = LiteModel(tflite)
    x = validation.images.reshape(-1, *lite.input_shape).astype(np.float32)
    scores = next(iter(lite(x).values()))
    temperature = fit_temperature(scores, validation.labels)
    return Serving(
        tflite,
        temperature,
        {
            "served_validation_accuracy": float((scores.argmax(axis=1) == validation.labels).mean()),
            "validation_ece_uncalibrated": expected_calibration_error(scores, validation.labels),
            "validation_ece": expected_calibration_error(calibrate(scores, temperature), validation.labels),
        },
    )


def run_metrics(metrics: dict) -> dict:
    """The headline validation metrics a manifest carries (and promotion compares)."""
    val, tta = metrics["validation"], metrics.get("validation_tta", {})
    return {
        "validation_accuracy": val["accuracy"],
        "validation_macro_f1": val["macro_f1"],
        "validation_tta_accuracy": tta.get("accuracy"),
        "validation_n": val["n"],
        "per_class_f1": {name: row["f1"] for name, row in val["per_class"].items()},
        "epochs": metrics.get("epochs_run"),
        "parameters": metrics.get("parameters"),
    }


def publish_run(
    store: ModelStore, run_dir: str | Path, *, promote: bool = False, force: bool = False, parent: str | None = None
) -> Manifest:
    """Publish ``run_dir/best.keras`` with the run's config, datasets, metrics and plots.

    ``parent`` defaults to the store version the run was fine-tuned from (its config's ``parent``).
    """
    from training.train import TrainConfig, load_validation, write_artifacts

    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    validation = load_validation(TrainConfig.from_json(config))
    metrics_file = run_dir / "metrics.json"
    scored = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    if (
        not scored
        or metrics_file.stat().st_mtime < (run_dir / "best.keras").stat().st_mtime
        or "calibration" not in scored
    ):  # an unfinished run, one whose checkpoint moved on, or one scored before calibration: score it now
        write_artifacts(run_dir, validation, seconds=scored.get("train_seconds_this_session", 0.0))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    datasets = json.loads((run_dir / "datasets.json").read_text())
    model = keras.models.load_model(run_dir / "best.keras", compile=False)  # drops optimizer state
    serving = serving_form(model, validation)
    created = datetime.now(UTC)
    manifest = Manifest(
        version=new_version_id(config["architecture"], created),
        architecture=config["architecture"],
        created_at=created.isoformat(timespec="seconds"),
        metrics={**run_metrics(metrics), **serving.metrics},
        training_config=config,
        datasets=datasets,
        parent=parent or config.get("parent"),
        temperature=serving.temperature,
    )
    extra = {name: run_dir / name for name in RUN_FILES if (run_dir / name).exists()}
    store.publish(model, manifest, extra, serving.tflite)
    if promote:
        try:
            store.promote(manifest.version, force=force, reason=f"trained in {run_dir}")
        except PromotionRefused as err:  # published all the same: say so, or a retry would publish it twice
            raise PromotionRefused(err.version, f"published {err.version}, not promoted: {err.reason}") from None
    return manifest
