"""Combining published versions into a new one, written as a scored run directory and published
like a trained run (:func:`training.publish.publish_run`): no training.

* **Weight averages** of versions of one architecture. Networks fine-tuned from a common
  ancestor stay in one basin of the loss, where the mean of their weights is itself a good
  network, often better than each one (Wortsman et al., *Model soups*, ICML 2022); it has the
  same architecture and multiply-adds as its parts.
* **Ensembles**: two versions served side by side as one network (``<architecture>_pair``),
  their scores averaged. Networks trained apart make different mistakes, so the mean of their
  scores beats each one, for the sum of their multiply-adds.

The new version's first part is its parent; its configuration and datasets are that part's.
"""

import json
from pathlib import Path

import keras
import numpy as np

from model_store.manifest import MODEL_FILE, Manifest
from model_store.store import ModelStore
from training import architectures
from training.train import TrainConfig, dataset_entry, load_validation, write_artifacts


def _network(store: ModelStore, manifest: Manifest) -> keras.Model:
    return keras.models.load_model(store.path(manifest.version) / MODEL_FILE, compile=False)


def _write_run(model: keras.Model, first: Manifest, run_dir: Path, data: str | None, **config_extra: object) -> Path:
    """``model`` as a run directory scored on ``data``'s validation split (None: the first part's dataset)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    model.save(run_dir / "best.keras")
    trained = {k: v for k, v in first.training_config.items() if k not in ("averaged_from", "ensemble_of")}
    scored_on = {"data": data, "val_data": None} if data else {}
    config = {**trained, "run_dir": str(run_dir), "parent": first.version, **scored_on, **config_extra}
    (run_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    validation = load_validation(TrainConfig.from_json(config))
    datasets = {**first.datasets, "validation": dataset_entry(validation)} if data else first.datasets
    (run_dir / "datasets.json").write_text(json.dumps(datasets, indent=2) + "\n")
    write_artifacts(run_dir, validation, seconds=0.0)
    return run_dir


def average_run(store: ModelStore, manifests: list[Manifest], run_dir: Path, data: str | None = None) -> Path:
    """Write the uniform weight average of verified versions of one architecture to ``run_dir`` as a run
    scored on ``data`` (default: the first version's dataset)."""
    versions = [m.version for m in manifests]
    models = [_network(store, m) for m in manifests]
    weights = [model.get_weights() for model in models]
    if any([w.shape for w in ws] != [w.shape for w in weights[0]] for ws in weights):
        raise ValueError(f"{versions[0]} and the others differ in their layers' shapes: not one architecture")
    averaged = models[0]
    averaged.set_weights([np.mean(layer, axis=0) for layer in zip(*weights, strict=True)])
    return _write_run(averaged, manifests[0], run_dir, data, averaged_from=versions)


def ensemble_run(store: ModelStore, manifests: list[Manifest], run_dir: Path, data: str | None = None) -> Path:
    """Write the pair of two verified versions of one architecture, scores averaged, to ``run_dir`` as a run
    scored on ``data`` (default: the first version's dataset)."""
    versions = [m.version for m in manifests]
    tower = manifests[0].architecture
    name = f"{tower}_pair"
    if name not in architectures.ARCHITECTURES:
        pairs = sorted(n for n in architectures.ARCHITECTURES if n.endswith("_pair"))
        raise ValueError(f"an ensemble is two versions of an architecture with a pair: {', '.join(pairs)}")
    pair = architectures.build(name)
    for index, manifest in enumerate(manifests, start=1):
        pair.get_layer(f"{tower}_{index}").set_weights(_network(store, manifest).get_weights())
    return _write_run(pair, manifests[0], run_dir, data, architecture=name, ensemble_of=versions)
