"""Averaging the weights of versions of one architecture: a new network at no serving cost.

Networks fine-tuned from a common ancestor stay in one basin of the loss, where the mean of
their weights is itself a good network, often better than each one (Wortsman et al., *Model
soups*, ICML 2022); it has the same architecture and multiply-adds as its parts. The average
is written as a run directory (``best.keras``, configuration, datasets, scored on validation)
and published like a trained run (:func:`training.publish.publish_run`).
"""

import json
from pathlib import Path

import keras
import numpy as np

from model_store.manifest import MODEL_FILE
from model_store.store import ModelStore
from training.train import TrainConfig, load_validation, write_artifacts


def average_run(store: ModelStore, versions: list[str], run_dir: Path) -> Path:
    """Write the uniform weight average of ``versions`` to ``run_dir`` as a scored run; its first
    version is its parent and its configuration and datasets are that version's."""
    manifests = [store.verify(version) for version in versions]
    if len(set(versions)) < 2:
        raise ValueError("average needs at least two different versions")
    if len({m.architecture for m in manifests}) > 1:
        raise ValueError(
            f"versions of one architecture only: {', '.join(f'{m.version} is {m.architecture}' for m in manifests)}"
        )
    models = [keras.models.load_model(store.path(m.version) / MODEL_FILE, compile=False) for m in manifests]
    weights = [model.get_weights() for model in models]
    if any([w.shape for w in ws] != [w.shape for w in weights[0]] for ws in weights):
        raise ValueError(f"{versions[0]} and the others differ in their layers' shapes: not one architecture")
    averaged = models[0]
    averaged.set_weights([np.mean(layer, axis=0) for layer in zip(*weights, strict=True)])
    run_dir.mkdir(parents=True, exist_ok=True)
    averaged.save(run_dir / "best.keras")
    first = manifests[0]
    config = {**first.training_config, "run_dir": str(run_dir), "parent": first.version, "averaged_from": versions}
    (run_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (run_dir / "datasets.json").write_text(json.dumps(first.datasets, indent=2) + "\n")
    write_artifacts(run_dir, load_validation(TrainConfig.from_json(config)), seconds=0.0)
    return run_dir
