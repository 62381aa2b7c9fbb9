"""Training's commands: ``train`` and ``evaluate``; the ``models`` actions that need training's code
(``publish``, ``average``, ``ensemble``, ``convert``, ``shadow``); and retraining through RQ: ``trainer``,
``retrain``, ``jobs``.

TensorFlow is imported inside the commands that need it, never by this module.
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import cast

from emostream import logs
from emostream.config import Settings
from model_store.manifest import MODEL_FILE, SERVING_FILE, Manifest
from model_store.store import ModelStore


def _cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    def model_file(name: str) -> str:
        """A ``.keras`` file as given, or the model file of a store version."""
        return name if Path(name).is_file() else str(settings.model_store().path(name) / MODEL_FILE)

    parent = None
    if args.init_from and not Path(args.init_from).is_file():
        parent = args.init_from
    started_as = settings.model_store().manifest(parent).architecture if parent else None
    if args.arch and started_as and args.arch != started_as:
        raise ValueError(f"--init-from {parent} has architecture {started_as}, not {args.arch}")
    architecture = args.arch or started_as or "emonet"
    args.init_from = args.init_from and model_file(args.init_from)
    logs.start_tensorflow()  # once the arguments are known to be right
    from training.pipeline import Augmentation
    from training.train import TrainConfig, train

    if args.resume:
        config = TrainConfig.from_json(json.loads((Path(args.resume) / "config.json").read_text()))
    else:
        config = TrainConfig(
            data=args.data or str(settings.data),
            val_data=args.val_data,
            run_dir=args.run_dir or str(settings.runs_dir / architecture),
            architecture=architecture,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.lr,
            schedule=args.schedule,
            warmup_epochs=args.warmup_epochs,
            optimizer=args.optimizer,
            weight_decay=args.weight_decay,
            label_smoothing=args.label_smoothing,
            augmentation=Augmentation(
                flip=not args.no_flip,
                shift=args.shift,
                rotation=args.rotation,
                zoom=args.zoom,
                erasing=args.erasing,
                mixup=args.mixup,
            ),
            class_weights=args.class_weights,
            patience=args.patience,
            seed=args.seed,
            limit=args.limit,
            extra_train=args.extra_train,
            init_from=args.init_from,
            parent=parent,
            skip_bad=args.skip_bad,
            teachers=[model_file(name) for name in args.teacher.split(",")] if args.teacher else [],
            teacher_temperature=args.teacher_temperature,
            teacher_weight=args.teacher_weight,
        )
    result = train(config)
    val = result.metrics["validation"]
    print(
        f"best model {result.model_path}: validation accuracy {val['accuracy']:.4f} "
        f"(flip TTA {result.metrics['validation_tta']['accuracy']:.4f}), macro F1 {val['macro_f1']:.4f}"
    )
    if args.publish:
        from training.publish import publish_run

        manifest = publish_run(settings.model_store(), result.run_dir, promote=args.promote, force=args.force)
        print(f"published {manifest.version}" + (" (live)" if args.promote else ""))
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (resumable) and write its run artifacts")
    p.add_argument("--data", help="dataset root (train/, validation/) or Kaggle CSV (default: EMOSTREAM_DATA)")
    p.add_argument("--val-data", help="validation source if not inside --data")
    p.add_argument(
        "--arch",
        help="emonet, emonet_wide, emonet_pair or tutorial (default: --init-from's version's, else emonet)",
    )
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    p.add_argument("--schedule", default="cosine", choices=("cosine", "plateau", "constant"))
    p.add_argument("--warmup-epochs", type=int, default=2)
    p.add_argument("--optimizer", default="adamw", choices=("adamw", "adam", "sgd"))
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--no-flip", action="store_true")
    p.add_argument("--shift", type=float, default=0.1)
    p.add_argument("--rotation", type=float, default=10.0)
    p.add_argument("--zoom", type=float, default=0.1)
    p.add_argument("--erasing", type=float, default=0.5, help="random-erasing probability")
    p.add_argument("--mixup", type=float, default=0.0, help="mixup Beta parameter (0: off)")
    p.add_argument("--class-weights", action="store_true", help="weight the loss against class imbalance")
    p.add_argument("--patience", type=int, default=12, help="early-stopping patience in epochs")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--limit", type=int, help="use at most N images per split")
    p.add_argument("--extra-train", action="append", default=[], help="extra <class>/ folder for training")
    p.add_argument("--init-from", help="start from a model version or .keras file (same architecture)")
    p.add_argument("--skip-bad", action="store_true", help="skip and count unreadable images or rows")
    p.add_argument(
        "--teacher",
        metavar="VERSION[,VERSION...]",
        help="distil: train on the mean flip-TTA scores of these versions or .keras files",
    )
    p.add_argument("--teacher-temperature", type=float, default=1.0, help="softens the teachers' scores (default 1)")
    p.add_argument("--teacher-weight", type=float, default=0.7, help="share of the soft target (default 0.7)")
    p.add_argument("--run-dir", help="run directory (default: $EMOSTREAM_RUNS/<arch>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="resume the run in RUN_DIR with its saved configuration")
    p.add_argument("--publish", action="store_true", help="publish the best model into the model store")
    p.add_argument("--promote", action="store_true", help="with --publish: make it the live version")
    p.add_argument("--force", action="store_true", help="with --promote: even if less accurate than live")
    p.set_defaults(func=_cmd_train)


def _cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from training.data import csv_columns, load_csv, load_folder

    store = settings.model_store()
    if args.model:
        store.manifest(args.model)  # before reading data: fail fast on an unknown version
    source = Path(args.data)
    if source.is_file():
        split = args.split or ("validation" if "Usage" in csv_columns(source) else "all")
        faces = load_csv(source, split, skip_bad=args.skip_bad)
    else:
        faces = load_folder(source, skip_bad=args.skip_bad)
    logs.start_tensorflow()  # once the version and the data are known to be good
    from training.evaluation import evaluate

    loaded = store.load(args.model)
    result = evaluate(loaded.model, faces.images, faces.labels, tta=args.tta, temperature=loaded.manifest.temperature)
    result = {
        "model_version": loaded.version,
        "data": faces.source,
        "tta": args.tta,
        "temperature": loaded.manifest.temperature,
        "skipped": len(faces.skipped),
        **result,
    }
    if args.json:
        print(json.dumps(result))
    else:
        from training.reports import classification_report

        print(f"model {loaded.version} on {faces.source}" + (" with flip TTA" if args.tta else ""))
        print(classification_report(result), end="")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a model version on labelled faces")
    p.add_argument("--data", required=True, help="folder of <class>/ subfolders, or a Kaggle CSV")
    p.add_argument(
        "--split",
        help="CSV rows to use: train, validation, test or all (default: validation when the CSV has a Usage "
        "column, as Kaggle's has: not the faces models were trained on; else all)",
    )
    p.add_argument("--model", help="model version (default: the live one)")
    p.add_argument("--tta", action="store_true", help="average with the horizontally flipped face")
    p.add_argument("--skip-bad", action="store_true", help="skip and count unreadable images or rows")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_shadow(args: argparse.Namespace, settings: Settings) -> int:
    logs.start_tensorflow()
    import redis

    from training.shadow import compare, sampled_faces

    url = settings.require_redis_url("the live face sample is in the shared Redis")
    raw = redis.Redis.from_url(url).lrange(settings.keys.face_sample, 0, -1)
    faces = sampled_faces(cast(list[bytes], raw))  # the client does not decode replies
    print(json.dumps(compare(settings.model_store(), args.version, faces, args.against)))
    return 0


def _cmd_convert(args: argparse.Namespace, settings: Settings) -> int:
    logs.start_tensorflow()
    import keras

    from training.data import load
    from training.publish import serving_form

    store = settings.model_store()
    validation = None  # read once a version needs it
    for version in args.versions or store.versions():
        if SERVING_FILE in store.manifest(version).files:
            print(f"{version}: has {SERVING_FILE}")
            continue
        validation = validation or load(args.data or settings.data, "validation")
        serving = serving_form(keras.models.load_model(store.path(version) / MODEL_FILE, compile=False), validation)
        store.add_serving(version, serving.tflite, serving.temperature, serving.metrics)
        print(f"{version}: added {SERVING_FILE}, temperature {serving.temperature:.2f}, {serving.metrics}")
    return 0


def _cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    logs.start_tensorflow()
    from training.publish import publish_run

    manifest = publish_run(
        settings.model_store(), args.run_dir, promote=args.promote, force=args.force, parent=args.parent
    )
    print(f"published {manifest.version}" + (" (live)" if args.promote else ""))
    return 0


def add_model_actions(actions: argparse._SubParsersAction) -> None:
    """The actions of ``emostream models`` that need training's code (see :mod:`model_store.command`)."""
    shadow = actions.add_parser("shadow", help="compare a version with the live one on recent live faces (JSON)")
    shadow.add_argument("version")
    shadow.add_argument("--against", help="reference version (default: the live one)")
    shadow.set_defaults(func=_cmd_shadow)
    convert = actions.add_parser(
        "convert", help="add the LiteRT file workers run to versions published without one (needs TensorFlow)"
    )
    convert.add_argument("versions", nargs="*", metavar="VERSION", help="default: every version")
    convert.add_argument(
        "--data",
        help="dataset whose validation split fits the temperature and scores the file (default: EMOSTREAM_DATA)",
    )
    convert.set_defaults(func=_cmd_convert)
    publish = actions.add_parser("publish", help="publish a training run's best model")
    publish.add_argument("run_dir", help="run directory of `emostream train` (finished or not)")
    publish.add_argument("--promote", action="store_true", help="make it the live version")
    publish.add_argument("--force", action="store_true", help="promote even if less accurate than live")
    publish.add_argument(
        "--parent", help="the version the run was fine-tuned from (default: the one its --init-from named)"
    )
    publish.set_defaults(func=_cmd_publish)
    combine = {
        "average": (
            "publish the mean of the weights of versions of one architecture (fine-tuned from one ancestor)",
            "+",
        ),
        "ensemble": ("publish two versions of one architecture served as one network, their scores averaged", 2),
    }
    for action, (description, count) in combine.items():
        parser = actions.add_parser(action, help=description)
        parser.add_argument("versions", nargs=count, metavar="VERSION", help="the first is the new version's parent")
        parser.add_argument("--run-dir", help=f"where it is scored (default: $EMOSTREAM_RUNS/{action}-<time>)")
        parser.add_argument(
            "--data",
            help="dataset whose validation split scores it (default: the first version's if it is here, "
            "else EMOSTREAM_DATA)",
        )
        parser.add_argument("--promote", action="store_true", help="make it the live version")
        parser.add_argument("--force", action="store_true", help="promote even if less accurate than live")
        parser.set_defaults(func=_cmd_combine)


def _parts(store: ModelStore, versions: list[str]) -> list[Manifest]:
    """The verified manifests of the versions to combine: different ones, of one architecture."""
    if len(set(versions)) < 2:
        raise ValueError("combining needs at least two different versions")
    manifests = [store.verify(version) for version in versions]
    if len({m.architecture for m in manifests}) > 1:
        raise ValueError(
            f"versions of one architecture only: {', '.join(f'{m.version} is {m.architecture}' for m in manifests)}"
        )
    return manifests


def _cmd_combine(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC, datetime

    store = settings.model_store()
    parts = _parts(store, args.versions)  # refused before TensorFlow starts
    logs.start_tensorflow()
    from training.combine import average_run, ensemble_run
    from training.publish import publish_run

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    combine = average_run if args.action == "average" else ensemble_run
    recorded = parts[0].training_config.get("data")
    data = args.data or (None if recorded and Path(recorded).exists() else str(settings.data))
    run_dir = Path(args.run_dir or settings.runs_dir / f"{args.action}-{stamp}")
    made = not run_dir.exists()
    try:
        combine(store, parts, run_dir, data)
    except BaseException:
        if made:  # nothing half-written left behind
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    manifest = publish_run(store, run_dir, promote=args.promote, force=args.force)
    live = " (live)" if args.promote else ""
    print(f"published {manifest.version}{live}: validation accuracy {manifest.metrics['validation_accuracy']:.4f}")
    return 0


def _client(settings: Settings):
    import redis

    return redis.Redis.from_url(settings.require_redis_url("retraining jobs live in the shared Redis"))


def _cmd_trainer(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from training.jobs import run_trainer

    logs.require_training("a trainer")  # before it offers to take jobs it would fail
    _client(settings).ping()
    if args.nice:
        os.nice(args.nice)  # training yields the CPU to serving on a shared machine
    run_trainer(settings, burst=args.burst)
    return 0


def _progress_line(view: dict, epochs: int) -> str:
    done = len(view["progress"])
    last = view["progress"][-1] if view["progress"] else {}
    bar = "#" * round(30 * done / epochs) + "." * (30 - round(30 * done / epochs))
    acc = f" val_accuracy {last['val_accuracy']:.4f}" if "val_accuracy" in last else ""
    return f"\r[{bar}] epoch {done}/{epochs} {view['status']}{acc}"


def follow(client, job_id: str, epochs: int) -> dict:
    """Print a progress bar until the job ends; returns its final view."""
    from training.client import ENDED, describe, fetch

    job = fetch(client, job_id)
    while True:
        view = describe(job)
        print(_progress_line(view, epochs), end="", file=sys.stderr, flush=True)
        if view["status"] in ENDED:
            print(file=sys.stderr)
            return view
        time.sleep(1.0)


def _cmd_retrain(args: argparse.Namespace, settings: Settings) -> int:
    from training.client import RetrainSpec, check_data, enqueue, offers

    spec = RetrainSpec(
        data=args.data,
        architecture=args.arch,
        epochs=args.epochs,
        limit=args.limit,
        extra_train=args.extra_train,
        init_from_live=args.init_from_live,
        promotion=args.promotion,
        shadow=args.shadow,
        timeout_s=args.timeout,
    )
    client = _client(settings)
    job = enqueue(client, check_data(spec, offers(client, settings)))
    print(job.id)
    if not args.wait:
        return 0
    view = follow(client, job.id, spec.epochs)
    print(_outcome(view))
    return 0 if view["status"] == "finished" else 1


def _outcome(view: dict) -> str:
    """A finished job in one line (``jobs show ID`` gives all of it as JSON)."""
    if view["status"] != "finished":
        return f"job {view['id']} {view['status']}: {view.get('error') or 'no reason recorded'}"
    last = view["progress"][-1] if view["progress"] else {}
    accuracy = f", last val_accuracy {last['val_accuracy']:.4f}" if "val_accuracy" in last else ""
    promoted = "promoted (live)" if view["promoted"] else "published, not promoted"
    if view.get("not_promoted"):
        promoted += f" ({view['not_promoted']}; `emostream models promote {view['version']} --force` promotes it)"
    return f"job {view['id']} finished: version {view['version']} {promoted}{accuracy}"


def _cmd_jobs(args: argparse.Namespace, settings: Settings) -> int:
    from training.client import cancel, describe, fetch, list_jobs

    client = _client(settings)
    if args.action == "list":
        print(json.dumps(list_jobs(client)))
    elif args.action == "show":
        print(json.dumps(describe(fetch(client, args.id))))
    else:
        print(json.dumps(describe(cancel(client, settings, args.id))))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``train`` and ``evaluate``."""
    _add_train(sub)
    _add_evaluate(sub)


def add_retraining(sub: argparse._SubParsersAction) -> None:
    """``trainer``, ``retrain`` and ``jobs``."""
    p = sub.add_parser("trainer", help="run an RQ worker (non-forking) for retraining jobs")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.add_argument("--nice", type=int, default=0, help="lower this process's CPU priority by N (0-19)")
    p.set_defaults(func=_cmd_trainer)

    p = sub.add_parser("retrain", help="queue a retraining job (see `emostream trainer`)")
    p.add_argument("--data", default="", help="dataset root or Kaggle CSV (default: the trainer's EMOSTREAM_DATA)")
    p.add_argument("--arch", help="architecture (default: the live model's with --init-from-live, else emonet)")
    p.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    p.add_argument("--limit", type=int, help="at most N images per split")
    p.add_argument("--extra-train", action="append", default=[], help="extra <class>/ folder (e.g. feedback)")
    p.add_argument("--init-from-live", action="store_true", help="fine-tune the live model")
    p.add_argument(
        "--promotion",
        default="auto",
        choices=("auto", "manual"),
        help="auto: promote if better than live on validation",
    )
    p.add_argument(
        "--timeout", type=int, default=6 * 3600, help="seconds the job may train (10 more minutes for publishing)"
    )
    p.add_argument("--shadow", action="store_true", help="compare with the live model on live faces first")
    p.add_argument("--wait", action="store_true", help="follow progress until the job ends")
    p.set_defaults(func=_cmd_retrain)

    p = sub.add_parser("jobs", help="list, show and cancel retraining jobs")
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every job, newest first (JSON)")
    for name, about in (("show", "one job's status and progress (JSON)"), ("cancel", "cancel a queued or running job")):
        actions.add_parser(name, help=about).add_argument("id", help="the job id `retrain` printed")
    p.set_defaults(func=_cmd_jobs)
