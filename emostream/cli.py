"""The ``emostream`` command: each subcommand wires one package's work to flags and settings."""

import argparse
import json
import os
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import redis

from emostream import logs
from emostream.config import Settings
from gateway.command import add_parser as add_gateway
from ingest.command import add_parser as add_ingest
from model_store.errors import ModelStoreError
from model_store.manifest import MODEL_FILE, SERVING_FILE
from training.command import add_parser as add_training_jobs
from workers.command import add_parser as add_workers

DEFAULT_DATA = "../shared/datasets/fer2013"


def _cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from training.pipeline import Augmentation
    from training.train import TrainConfig, train

    def model_file(name: str) -> str:
        """A ``.keras`` file as given, or the model file of a store version."""
        return name if Path(name).is_file() else str(settings.model_store().path(name) / MODEL_FILE)

    parent = None
    if args.init_from and not Path(args.init_from).is_file():
        parent = args.init_from
    args.init_from = args.init_from and model_file(args.init_from)
    if args.resume:
        config = TrainConfig.from_json(json.loads((Path(args.resume) / "config.json").read_text()))
    else:
        config = TrainConfig(
            data=args.data,
            val_data=args.val_data,
            run_dir=args.run_dir or str(settings.runs_dir / args.arch),
            architecture=args.arch,
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
    p.add_argument("--data", default=DEFAULT_DATA, help="dataset root (train/, validation/) or Kaggle CSV")
    p.add_argument("--val-data", help="validation source if not inside --data")
    p.add_argument("--arch", default="emonet", help="architecture name (emonet, tutorial)")
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
    from training.data import load_csv, load_folder
    from training.evaluation import evaluate

    loaded = settings.model_store().load(args.model)  # before reading data: fail fast on a bad version
    source = Path(args.data)
    faces = (
        load_csv(source, args.split, skip_bad=args.skip_bad)
        if source.is_file()
        else load_folder(source, skip_bad=args.skip_bad)
    )
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
    p.add_argument("--split", help="CSV rows to use: train, validation, test (default: all rows)")
    p.add_argument("--model", help="model version (default: the live one)")
    p.add_argument("--tta", action="store_true", help="average with the horizontally flipped face")
    p.add_argument("--skip-bad", action="store_true", help="skip and count unreadable images or rows")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    store = settings.model_store()
    live = store.live_version()
    if args.action == "list":
        rows = [store.manifest(v) for v in store.versions()]
        if args.json:
            print(json.dumps([{**m.to_json(), "live": m.version == live} for m in rows]))
        for m in [] if args.json else rows:
            acc = m.validation_accuracy
            print(
                f"{'*' if m.version == live else ' '} {m.version:<40} {m.architecture:<10} "
                f"{m.created_at:<26} val_acc={'-' if acc is None else f'{acc:.4f}'}"
            )
    elif args.action == "show":
        manifest = store.manifest(args.version or live or "")
        if args.card:
            from model_store.card import model_card

            print(model_card(store, manifest.version), end="")
        elif args.json:
            print(json.dumps({**manifest.to_json(), "live": manifest.version == live}))
        else:
            print(_summary(manifest, live))
    elif args.action == "publish":
        from training.publish import publish_run

        manifest = publish_run(store, args.run_dir, promote=args.promote, force=args.force, parent=args.parent)
        print(f"published {manifest.version}" + (" (live)" if args.promote else ""))
    elif args.action == "convert":
        import keras

        from training.data import load
        from training.publish import serving_form

        validation = load(args.data, "validation")
        for version in args.versions or store.versions():
            if SERVING_FILE in store.manifest(version).files:
                print(f"{version}: has {SERVING_FILE}")
                continue
            serving = serving_form(keras.models.load_model(store.path(version) / MODEL_FILE, compile=False), validation)
            store.add_serving(version, serving.tflite, serving.temperature, serving.metrics)
            print(f"{version}: added {SERVING_FILE}, temperature {serving.temperature:.2f}, {serving.metrics}")
    elif args.action == "shadow":
        import redis

        from training.shadow import compare, sampled_faces

        url = settings.require_redis_url("the live face sample is in the shared Redis")
        raw = redis.Redis.from_url(url).lrange(settings.keys.face_sample, 0, -1)
        print(json.dumps(compare(store, args.version, sampled_faces(raw), args.against)))
    elif args.action == "promote":
        store.promote(args.version, force=args.force, reason="cli")
        _announce(settings, args.version)
        print(f"live: {args.version}")
    else:
        version = store.rollback()
        _announce(settings, version)
        print(f"live: {version}")
    return 0


def _summary(manifest, live: str | None) -> str:
    """A version in a few lines (``--json`` prints the whole manifest)."""
    m = manifest.metrics
    accuracy = m.get("validation_accuracy")
    lines = [
        f"{manifest.version}{' (live)' if manifest.version == live else ''}",
        f"  architecture  {manifest.architecture}, {m.get('parameters') or '?'} parameters, "
        f"{m.get('epochs') or '?'} epochs",
        f"  created       {manifest.created_at}; parent {manifest.parent or '-'}",
        f"  validation    accuracy {'-' if accuracy is None else f'{accuracy:.4f}'}"
        + (f", served file {m['served_validation_accuracy']:.4f}" if "served_validation_accuracy" in m else "")
        + (f", macro F1 {m['validation_macro_f1']:.4f}" if "validation_macro_f1" in m else ""),
        f"  calibration   temperature {manifest.temperature:.2f}"
        + (f", ECE {m['validation_ece']:.4f}" if "validation_ece" in m else ""),
        f"  files         {', '.join(sorted(manifest.files))}",
    ]
    return "\n".join(lines)


def _announce(settings: Settings, version: str) -> None:
    """Tell running workers at once (they would also notice within seconds by polling)."""
    if settings.redis_url:
        import redis

        from training.client import announce

        announce(redis.Redis.from_url(settings.redis_url), settings, version)


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, show, promote and roll back model versions")
    actions = p.add_subparsers(dest="action", required=True)
    for name, about in (("list", "every version, the live one starred"), ("show", "one version's summary")):
        a = actions.add_parser(name, help=about)
        a.add_argument("--json", action="store_true", help="the whole manifest as JSON")
        if name == "show":
            a.add_argument("version", nargs="?", help="default: the live version")
            a.add_argument("--card", action="store_true", help="print the version's model card (Markdown)")
    promote = actions.add_parser("promote", help="make a version live (refused if less accurate than live)")
    promote.add_argument("version")
    promote.add_argument("--force", action="store_true", help="promote even if less accurate than live")
    actions.add_parser("rollback", help="make the previously live version live again")
    shadow = actions.add_parser("shadow", help="compare a version with the live one on recent live faces (JSON)")
    shadow.add_argument("version")
    shadow.add_argument("--against", help="reference version (default: the live one)")
    convert = actions.add_parser(
        "convert", help="add the LiteRT file workers run to versions published without one (needs TensorFlow)"
    )
    convert.add_argument("versions", nargs="*", metavar="VERSION", help="default: every version")
    convert.add_argument(
        "--data", default=DEFAULT_DATA, help="dataset whose validation split fits the temperature and scores the file"
    )
    publish = actions.add_parser("publish", help="publish a training run's best model")
    publish.add_argument("run_dir", help="run directory of `emostream train` (finished or not)")
    publish.add_argument("--promote", action="store_true", help="make it the live version")
    publish.add_argument("--force", action="store_true", help="promote even if less accurate than live")
    publish.add_argument(
        "--parent", help="the version the run was fine-tuned from (default: the one its --init-from named)"
    )
    p.set_defaults(func=_cmd_models)


def _cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    import signal
    import threading

    from emostream.stack import EmbeddedStack
    from gateway.access import check_exposure
    from gateway.command import check_port

    settings = settings.replace(host=args.host, port=args.port)
    check_exposure(settings)  # before starting anything
    check_port(settings)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    with (
        EmbeddedStack(
            settings, workers=args.workers or 0, gateway=True, trainer=True, persist=not args.ephemeral
        ) as stack,
        ExitStack() as extras,
    ):
        workers = sum(name.startswith("worker-") for name in stack.children)
        page = f"http://{settings.host}:{settings.port}/"
        print(
            f"emostream is up: open {page}  (Redis {stack.settings.redis_url}, "
            f"{workers} worker(s), a trainer for retraining jobs on {settings.data}; Ctrl-C stops)",
            flush=True,
        )
        if settings.token or settings.admin_token:  # the address alone answers 401: say how to log in
            print(
                f"log in once at {page}?token=TOKEN with EMOSTREAM_TOKEN (cameras) or EMOSTREAM_ADMIN_TOKEN "
                "(operators) as TOKEN; the browser keeps it as a cookie",
                flush=True,
            )
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        print(
            f"metrics: http://{host}:{settings.port}/metrics; every process's metrics address (Prometheus "
            f"http_sd_configs): http://{host}:{settings.port}/api/targets",
            flush=True,
        )
        if args.prometheus:
            import tempfile

            from emostream.prometheus import start_prometheus

            data_dir = extras.enter_context(tempfile.TemporaryDirectory(prefix="emostream-prometheus-"))
            prometheus = start_prometheus(f"http://{host}:{settings.port}", args.prometheus, data_dir)
            extras.callback(prometheus.wait, 20)
            extras.callback(prometheus.terminate)
            stack.children["prometheus"] = prometheus
            print(f"Prometheus: http://127.0.0.1:{args.prometheus}/", flush=True)
        while not stopping.wait(1.0):
            try:
                stack.supervise()
            except RuntimeError as err:
                print(f"emostream up: error: {err}; stopping", file=sys.stderr)
                return 1
    return 0


def _add_up(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="run everything on this machine: Redis (unless REDIS_URL), gateway, workers")
    p.add_argument("--host", help="gateway address (default 127.0.0.1; EMOSTREAM_HOST)")
    p.add_argument("--port", type=int, help="gateway port (default 8080; EMOSTREAM_PORT)")
    p.add_argument("--workers", type=int, help="worker processes (default: as many as fit the cores)")
    p.add_argument(
        "--ephemeral",
        action="store_true",
        help="a throwaway private Redis (default: its data, the job history, kept in EMOSTREAM_REDIS_DIR)",
    )
    p.add_argument(
        "--prometheus",
        nargs="?",
        const=9090,
        type=int,
        metavar="PORT",
        help="also run a local Prometheus (deploy/prometheus/ config) on PORT (default 9090); needs `prometheus`",
    )
    p.set_defaults(func=_cmd_up)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emostream",
        description="Real-time facial-expression recognition: `emostream up` runs everything on this machine; "
        "the other commands run one part (gateway, worker, ingest, trainer) or manage models and training.",
    )
    parser.add_argument("--log-level", default=os.environ.get("EMOSTREAM_LOG_LEVEL", "INFO"))
    parser.add_argument("--log-format", choices=("text", "json"), help="default: EMOSTREAM_LOG_FORMAT or text")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_evaluate(sub)
    _add_models(sub)
    add_workers(sub)
    add_ingest(sub)
    add_gateway(sub)
    _add_up(sub)
    add_training_jobs(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as err:
        print(f"emostream: error: {err}", file=sys.stderr)
        return 2
    logs.setup(args.log_level, args.log_format or settings.log_format)
    try:
        return args.func(args, settings)
    except (ValueError, OSError, LookupError, ModelStoreError) as err:
        print(f"emostream {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (redis.ConnectionError, redis.TimeoutError) as err:
        where = f"REDIS_URL={settings.redis_url}" if settings.redis_url else "Redis"
        print(
            f"emostream {args.command}: error: cannot reach {where} ({err}): start it or fix REDIS_URL "
            "(`emostream up` runs its own when REDIS_URL is unset)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
