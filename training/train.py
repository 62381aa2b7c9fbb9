"""Training runs: ``model.fit`` with checkpoints, resume, early stopping and run artifacts.

A run directory holds everything a run produces and everything needed to resume it:

    config.json     the exact configuration and the datasets' fingerprints
    backup/         Keras BackupAndRestore state (model, optimizer, epoch)
    best.keras      the checkpoint with the best validation accuracy
    history.csv     one row per epoch, appended across resumes
    history.png     loss and accuracy, train vs validation
    confusion.png   normalised confusion matrix of best.keras on validation
    reliability.png accuracy against confidence, raw and with the fitted temperature
    report.txt      per-class precision / recall / F1
    metrics.json    validation metrics (single crop and flip TTA), calibration, timing, hardware
"""

import json
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from emostream.labels import EMOTIONS
from model_store.calibration import calibrate, expected_calibration_error, fit_temperature, reliability
from training import architectures, reports
from training.data import DataError, FaceSet, load
from training.evaluation import evaluate, predict_scores, score
from training.history import read_history
from training.pipeline import Augmentation, evaluation_dataset, training_dataset

log = logging.getLogger(__name__)

SCHEDULES = ("cosine", "plateau", "constant")
OPTIMIZERS = ("adamw", "adam", "sgd")
EpochHook = Callable[[int, dict[str, float]], None]


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved verbatim as ``config.json``."""

    data: str
    run_dir: str
    val_data: str | None = None
    architecture: str = "emonet"
    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 3e-3
    schedule: str = "cosine"
    warmup_epochs: int = 2
    optimizer: str = "adamw"
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    augmentation: Augmentation = field(default_factory=Augmentation)
    class_weights: bool = False
    patience: int = 12
    seed: int = 1
    limit: int | None = None
    """Use at most this many images per split (smoke tests, quick retrains)."""
    extra_train: list[str] = field(default_factory=list)
    """More ``<class>/`` folders appended to the training split (e.g. user feedback)."""
    init_from: str | None = None
    """A ``.keras`` file of the same architecture to start from (fine-tuning)."""
    parent: str | None = None
    """The model-store version ``init_from`` belongs to; a published run records it as its parent."""
    skip_bad: bool = False
    teachers: list[str] = field(default_factory=list)
    """``.keras`` files whose averaged flip-TTA scores become soft training targets (distillation)."""
    teacher_temperature: float = 1.0
    """Softens (>1) or sharpens (<1) the teachers' averaged distribution."""
    teacher_weight: float = 0.7
    """Share of the soft target in the training target; the rest is the one-hot label."""

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        values["augmentation"] = Augmentation(**values.get("augmentation", {}))
        return cls(**values)

    def validate(self) -> None:
        if self.architecture not in architectures.ARCHITECTURES:
            raise ValueError(
                f"unknown architecture {self.architecture!r}; choose from {sorted(architectures.ARCHITECTURES)}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose from {SCHEDULES}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose from {OPTIMIZERS}")
        if (
            self.epochs < 1
            or self.batch_size < 1
            or self.learning_rate <= 0
            or (self.limit is not None and self.limit < 1)
        ):
            raise ValueError("epochs, batch size, learning rate and limit must be positive")
        if self.teacher_temperature <= 0 or not 0 <= self.teacher_weight <= 1:
            raise ValueError("teacher temperature must be positive and teacher weight within 0..1")


@dataclass
class TrainResult:
    run_dir: Path
    model_path: Path
    metrics: dict


def _subset(faces: FaceSet, limit: int | None, seed: int) -> FaceSet:
    if limit is None or len(faces) <= limit:
        return faces
    keep = np.sort(np.random.default_rng(seed).permutation(len(faces))[:limit])
    return FaceSet(
        faces.images[keep], faces.labels[keep], faces.fingerprint + f"[:{limit}@{seed}]", faces.source, faces.skipped
    )


def _concat(base: FaceSet, extra: list[FaceSet]) -> FaceSet:
    if not extra:
        return base
    return FaceSet(
        np.concatenate([base.images] + [e.images for e in extra]),
        np.concatenate([base.labels] + [e.labels for e in extra]),
        "+".join([base.fingerprint] + [e.fingerprint for e in extra]),
        "+".join([base.source] + [e.source for e in extra]),
        base.skipped + [s for e in extra for s in e.skipped],
    )


def load_splits(config: TrainConfig) -> tuple[FaceSet, FaceSet]:
    """The training (plus any extra folders) and validation sets of a config."""
    train = load(config.data, "train", skip_bad=config.skip_bad)
    train = _concat(train, [load(extra, "train", skip_bad=config.skip_bad) for extra in config.extra_train])
    validation = load_validation(config)
    for name, faces in (("training", train), ("validation", validation)):
        if not len(faces):
            raise DataError(f"{faces.source}: no {name} faces ({len(faces.skipped)} skipped as unreadable)")
    return _subset(train, config.limit, config.seed), validation


def dataset_entry(faces: FaceSet) -> dict:
    """How a run's ``datasets.json`` (and its manifest) names a set of faces."""
    return {"source": faces.source, "fingerprint": faces.fingerprint, "n": len(faces), "skipped": faces.skipped}


def load_validation(config: TrainConfig) -> FaceSet:
    """The validation set of a config (model selection only ever looks at this split)."""
    source = Path(config.val_data or config.data)
    if not config.val_data and source.is_dir() and not (source / "validation").is_dir():
        # else the class folders would be read as validation too: selection on the faces trained on
        raise DataError(f"{source} has no validation/ folder; name the validation faces with --val-data")
    val = load(source, "validation", skip_bad=config.skip_bad)
    return _subset(val, config.limit, config.seed)


def soft_targets(config: TrainConfig, faces: FaceSet) -> np.ndarray:
    """Training targets ``(N, 7)``: the teachers' mean flip-TTA distribution mixed with the labels.

    Teachers score the unaugmented faces once, before training: the augmentation is mild enough
    for a face's soft label to stand for its augmented views.
    """
    scores = np.zeros((len(faces), len(EMOTIONS)), np.float64)
    for path in config.teachers:
        teacher = keras.models.load_model(path, compile=False)
        scores += predict_scores(teacher, faces.images, tta=True)
        log.info("teacher %s scored %d faces", path, len(faces))
    soft = np.power(np.maximum(scores / len(config.teachers), 1e-8), 1.0 / config.teacher_temperature)
    soft /= soft.sum(axis=1, keepdims=True)
    hard = np.eye(len(EMOTIONS))[faces.labels]
    return (config.teacher_weight * soft + (1 - config.teacher_weight) * hard).astype(np.float32)


def _optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    lr: float | keras.optimizers.schedules.LearningRateSchedule = config.learning_rate
    if config.schedule == "cosine":
        warmup = min(config.warmup_epochs, config.epochs - 1) * steps_per_epoch
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=config.learning_rate / 10 if warmup else config.learning_rate,
            decay_steps=max(1, config.epochs * steps_per_epoch - warmup),
            alpha=0.01,
            warmup_target=config.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay or None)


def _class_weights(labels: np.ndarray) -> dict[int, float]:
    """Inverse-frequency weights, square-rooted so `disgust` helps without dominating."""
    counts = np.maximum(np.bincount(labels, minlength=len(EMOTIONS)), 1)
    weights = np.sqrt(counts.sum() / (len(EMOTIONS) * counts))
    return {i: float(w) for i, w in enumerate(weights)}


def _check_run_dir(config: TrainConfig) -> Path:
    """The run's folder, refused if it holds another configuration's run."""
    run_dir = Path(config.run_dir).expanduser()
    saved = run_dir / "config.json"
    if saved.exists():
        previous = json.loads(saved.read_text())
        if previous != config.to_json():
            raise ValueError(
                f"{run_dir} holds a run with a different configuration; resume it with "
                "`emostream train --resume` or choose another --run-dir"
            )
        if (run_dir / "metrics.json").exists() and not (run_dir / "backup").exists():
            raise ValueError(
                f"the run in {run_dir} has finished: nothing to resume (`emostream models publish {run_dir}` "
                "publishes it; another run needs another --run-dir)"
            )
        log.info("resuming run in %s", run_dir)
    return run_dir


def _claim_run_dir(config: TrainConfig, run_dir: Path) -> None:
    """Write the configuration into a new run's folder (once its data has loaded: a run refused for
    its data leaves nothing that would refuse the corrected command)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = run_dir / "config.json"
    if not saved.exists():
        saved.write_text(json.dumps(config.to_json(), indent=2) + "\n")


def _hardware() -> dict:
    gpus = tf.config.list_physical_devices("GPU")
    return {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "gpus": [g.name for g in gpus],
        "tensorflow": tf.__version__,
    }


def train(config: TrainConfig, on_epoch: EpochHook | None = None) -> TrainResult:
    """Train (or resume) the run described by ``config`` and write every artifact."""
    config.validate()
    run_dir = _check_run_dir(config)
    keras.utils.set_random_seed(config.seed)
    if tf.config.list_physical_devices("GPU"):
        keras.mixed_precision.set_global_policy("mixed_float16")
    train_set, val_set = load_splits(config)
    _claim_run_dir(config, run_dir)
    log.info("train %d faces %s, validation %d faces", len(train_set), train_set.class_counts(), len(val_set))
    (run_dir / "datasets.json").write_text(
        json.dumps(
            {"train": dataset_entry(train_set), "validation": dataset_entry(val_set)},
            indent=2,
        )
        + "\n"
    )

    batch_size = min(config.batch_size, len(train_set))
    steps = len(train_set) // batch_size
    model = architectures.build(config.architecture)
    if config.init_from:
        start = keras.models.load_model(config.init_from, compile=False)
        if [w.shape for w in start.weights] != [w.shape for w in model.weights]:
            raise ValueError(f"--init-from {config.init_from} holds {start.name}, not {config.architecture}")
        model.set_weights(start.get_weights())
    model.compile(
        optimizer=_optimizer(config, steps),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
    )
    history_path, best_path = run_dir / "history.csv", run_dir / "best.keras"
    previous = read_history(history_path).get("val_accuracy", [])
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
        keras.callbacks.ModelCheckpoint(
            str(best_path),
            monitor="val_accuracy",
            mode="max",
            save_best_only=True,
            initial_value_threshold=max(previous) if previous else None,
        ),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=config.patience),
        keras.callbacks.CSVLogger(str(history_path), append=True),
    ]
    if config.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.1, patience=2, min_lr=1e-5))
    if on_epoch:
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: on_epoch(epoch + 1, {k: float(v) for k, v in (logs or {}).items()})
            )
        )

    targets = soft_targets(config, train_set) if config.teachers else train_set.labels
    started = time.monotonic()
    model.fit(
        training_dataset(train_set.images, targets, batch_size, config.augmentation, config.seed),
        validation_data=evaluation_dataset(val_set.images, val_set.labels, 256),
        epochs=config.epochs,
        shuffle=False,  # the dataset reshuffles itself every epoch
        class_weight=_class_weights(train_set.labels) if config.class_weights else None,
        callbacks=callbacks,
        verbose=1 if log.isEnabledFor(logging.INFO) else 2,
    )
    seconds = time.monotonic() - started
    return TrainResult(run_dir, best_path, write_artifacts(run_dir, val_set, seconds))


def write_artifacts(run_dir: Path, val_set: FaceSet, seconds: float) -> dict:
    """Evaluate best.keras on validation and write plots, report and metrics.json."""
    model = keras.models.load_model(run_dir / "best.keras", compile=False)
    scores = predict_scores(model, val_set.images)
    single = score(scores, val_set.labels)
    tta = evaluate(model, val_set.images, val_set.labels, tta=True)
    temperature = fit_temperature(scores, val_set.labels)
    calibrated = calibrate(scores, temperature)
    before, after = reliability(scores, val_set.labels), reliability(calibrated, val_set.labels)
    history = read_history(run_dir / "history.csv")
    val_acc = history.get("val_accuracy", [])
    metrics = {
        "validation": single,
        "validation_tta": tta,
        "epochs_run": len(val_acc),
        "best_epoch": int(np.argmax(val_acc)) + 1 if val_acc else None,
        "train_seconds_this_session": round(seconds, 1),
        "parameters": int(model.count_params()),
        "hardware": _hardware(),
        "calibration": {
            "temperature": temperature,
            "ece_before": expected_calibration_error(scores, val_set.labels),
            "ece_after": expected_calibration_error(calibrated, val_set.labels),
        },
    }
    if history:  # a combined network (training.combine) has none
        reports.plot_history(history, run_dir / "history.png")
    reports.plot_confusion(single["confusion"], run_dir / "confusion.png")
    reports.plot_reliability(before, after, temperature, run_dir / "reliability.png")
    (run_dir / "report.txt").write_text(reports.classification_report(single))
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
