"""``emostream worker`` and ``emostream predict``."""

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

from emostream import logs
from emostream.config import Settings
from workers.detection import DETECTORS

log = logging.getLogger(__name__)


def _cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    settings = settings.replace(
        batch_frames=args.batch_frames,
        batch_wait_ms=args.batch_wait_ms,
        max_frame_age=args.max_frame_age,
        detector=args.detector,
        detect_tiles=args.detect_tiles,
        detect_width=args.detect_width,
        track_refresh=args.track_refresh,
    )
    redis_url = settings.require_redis_url("`emostream worker` serves a shared Redis (or use `emostream up`)")
    run_worker(settings.replace(redis_url=redis_url), threads=args.threads)
    return 0


def run_worker(settings: Settings, threads: int = 0, name: str | None = None) -> None:
    """Serve frames from ``settings.redis_url`` until SIGTERM or SIGINT, with /metrics, /healthz, /readyz."""
    import redis

    from emostream import redis_client
    from emostream.metrics import Metrics
    from emostream.status_server import StatusServer
    from workers.classify import LiveModel
    from workers.detection import make_detector
    from workers.worker import Worker

    client = redis_client.connect(settings.require_redis_url("workers serve a shared Redis"))
    metrics = Metrics()
    with logs.quiet_native_start():
        model = LiveModel(settings.model_store(), settings.runtime, threads)
        detector = make_detector(
            settings, threads, on_pass=lambda kind: metrics.detection_passes.labels(kind=kind).inc()
        )

    def ready() -> str | None:
        try:
            client.ping()
        except redis.RedisError as err:
            return f"redis unreachable: {err}"
        return None

    status = StatusServer(metrics, ready, settings.metrics_host, settings.metrics_port).start()
    worker = Worker(
        settings,
        client,
        detector,
        model,
        name,
        metrics,
        settings.advertised(status.address),
    )
    log.info("worker %s: metrics on http://%s/metrics", worker.name, status.address)

    def on_signal(signum: int, _frame: object) -> None:
        if worker.stopping.is_set():  # a second signal: cold shutdown, the batch in hand is left pending
            log.warning("worker %s: second %s, exiting at once", worker.name, signal.Signals(signum).name)
            os._exit(128 + signum)
        log.info("worker %s: finishing the batch in hand (signal again to exit at once)", worker.name)
        worker.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        worker.run()
    finally:
        status.stop()


def _cmd_predict(args: argparse.Namespace, settings: Settings) -> int:
    import cv2

    from workers.analysis import analyse
    from workers.classify import load_classifier
    from workers.detection import make_detector

    paths, grays, failed = [], [], 0
    for path in args.images:
        if not Path(path).is_file():
            print(f"emostream predict: error: {path}: no such file", file=sys.stderr)
            failed += 1
            continue
        image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        if image is None:
            print(f"emostream predict: error: {path}: not a readable image", file=sys.stderr)
            failed += 1
            continue
        paths.append(path)
        grays.append(image)
    settings = settings.replace(detector=args.detector, detect_width=args.detect_width)
    with logs.quiet_native_start():
        classifier = load_classifier(settings.model_store(), args.model, settings.runtime)
        detector = make_detector(settings, track=False)
    analysis = analyse(grays, [1.0] * len(grays), detector, classifier)
    report = [
        {"image": p, "model_version": classifier.version, "faces": [vars(f) for f in faces]}
        for p, faces in zip(paths, analysis.faces, strict=True)
    ]
    if args.json:
        print(json.dumps(report))
    else:
        for entry in report:
            labels = ", ".join(f"{f['label']} {f['score']:.2f} at {f['box']}" for f in entry["faces"]) or "no face"
            print(f"{entry['image']}: {labels}")
    return 2 if failed else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    defaults = Settings()
    p = sub.add_parser("worker", help="serve frames from REDIS_URL: detect, classify in batches, answer")
    p.add_argument("--batch-frames", type=int, help=f"frames per read (default {defaults.batch_frames})")
    p.add_argument("--batch-wait-ms", type=int, help=f"wait to fill a batch (default {defaults.batch_wait_ms})")
    p.add_argument("--max-frame-age", type=float, help=f"latency budget in s (default {defaults.max_frame_age})")
    p.add_argument("--detector", choices=sorted(DETECTORS), help=f"face detector (default {defaults.detector})")
    p.add_argument(
        "--detect-tiles", type=int, help=f"BlazeFace: N x N tiles for small faces (default {defaults.detect_tiles})"
    )
    p.add_argument("--detect-width", type=int, help=f"Haar: detection width (default {defaults.detect_width})")
    p.add_argument(
        "--track-refresh",
        type=int,
        help=f"search whole frames at least every N frames of a stream, follow faces between (0: every frame; "
        f"default {defaults.track_refresh})",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=os.environ.get("EMOSTREAM_THREADS", "0"),  # converted (and refused by name) by argparse
        help="inference threads (0: all cores)",
    )
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser("predict", help="label the faces of image files in-process")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--model", help="model version (default: the live one)")
    p.add_argument("--detector", choices=sorted(DETECTORS), help="face detector (default: EMOSTREAM_DETECTOR)")
    p.add_argument("--detect-width", type=int, help="Haar: detection width (default: EMOSTREAM_DETECT_WIDTH)")
    p.add_argument("--json", action="store_true", help="print one JSON array")
    p.set_defaults(func=_cmd_predict)
