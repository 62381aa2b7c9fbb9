"""Turning a finished training run directory into a published model version."""

import json
from datetime import UTC, datetime
from pathlib import Path

import keras

from model_store.manifest import Manifest
from model_store.store import ModelStore, new_version_id

RUN_FILES = ("history.png", "confusion.png", "report.txt", "metrics.json", "config.json", "history.csv")


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
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.exists() or metrics_file.stat().st_mtime < (run_dir / "best.keras").stat().st_mtime:
        # an unfinished run, or one whose checkpoint moved on: score the checkpoint now
        from training.train import TrainConfig, load_validation, write_artifacts

        write_artifacts(run_dir, load_validation(TrainConfig.from_json(config)), seconds=0.0)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    datasets = json.loads((run_dir / "datasets.json").read_text())
    model = keras.models.load_model(run_dir / "best.keras", compile=False)  # drops optimizer state
    created = datetime.now(UTC)
    manifest = Manifest(
        version=new_version_id(config["architecture"], created),
        architecture=config["architecture"],
        created_at=created.isoformat(timespec="seconds"),
        metrics=run_metrics(metrics),
        training_config=config,
        datasets=datasets,
        parent=parent or config.get("parent"),
    )
    extra = {name: run_dir / name for name in RUN_FILES if (run_dir / name).exists()}
    store.publish(model, manifest, extra)
    if promote:
        store.promote(manifest.version, force=force, reason=f"trained in {run_dir}")
    return manifest
