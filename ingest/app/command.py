"""``emostream ingest``: label the faces of a video file, an RTSP/HTTP camera or a local camera.

With ``REDIS_URL`` unset the run starts its own embedded stack (a private redis-server and workers).
Heavy imports wait until the command runs, so that ``emostream --help`` stays fast.
"""

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from emostream.config import Settings

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help="label the faces of a video file, RTSP/HTTP camera or local camera",
        description="Writes one JSON line per processed frame, in seq order: "
        '{"stream", "seq", "ts", "model_version", "faces": [{"box": [x, y, w, h], "label", "score", "scores"}]}, '
        "boxes in source pixels. seq: the frame's index in its source. "
        "ts: capture time (live) or queueing time (file), epoch seconds.",
    )
    p.add_argument(
        "--source",
        required=True,
        help="video file, rtsp:// or http:// URL (a recording of known length is read like a file), or camera "
        "index (0, 1...)",
    )
    p.add_argument(
        "--fps", type=float, help="frames sampled per second (live default: EMOSTREAM_SAMPLE_FPS; file: every frame)"
    )
    p.add_argument("--out", default="-", help="results file, JSON lines (default: stdout)")
    p.add_argument("--workers", type=int, help="worker processes of the embedded stack (with REDIS_URL unset)")
    p.set_defaults(func=_cmd_ingest)


def _cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    import cv2

    from ingest.app.run import IngestRun
    from ingest.app.sources import open_source

    if args.fps is not None and not args.fps > 0:
        raise ValueError(f"--fps must be positive, got {args.fps}")
    settings = settings.replace(workers=args.workers)
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        with contextlib.ExitStack() as stack:
            stop = stack.enter_context(_stop_on_signals())
            source = open_source(args.source, settings, args.fps)
            stack.enter_context(source)
            out = sys.stdout if args.out == "-" else stack.enter_context(open(args.out, "w"))
            settings = stack.enter_context(_queue(settings))
            client = stack.enter_context(_connect(settings))
            summary = IngestRun(source, client, settings, out, stop).run()
    except RuntimeError as err:  # workers stalled, or the embedded stack failed to start
        print(f"emostream ingest: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("emostream ingest: interrupted", file=sys.stderr)
        return 130
    print(f"emostream ingest: {source.name}: {summary}", file=sys.stderr)
    return 0


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event the first SIGINT or SIGTERM sets, for a clean stop; a second one acts as usual."""
    stop = threading.Event()
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}

    def handle(signum: int, _frame: object) -> None:
        log.warning("%s: stopping after the frames in flight", signal.Signals(signum).name)
        stop.set()
        for number, handler in previous.items():
            signal.signal(number, handler)

    for signum in previous:
        signal.signal(signum, handle)
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def _queue(settings: Settings) -> Iterator[Settings]:
    """``settings`` with a Redis that workers read: ``REDIS_URL``, or an embedded stack for this run."""
    if settings.redis_url:
        yield settings
        return
    from emostream.stack import EmbeddedStack

    with EmbeddedStack(settings, workers=settings.workers) as embedded:
        yield embedded.settings


@contextlib.contextmanager
def _connect(settings: Settings) -> Iterator["redis.Redis"]:
    import redis

    from emostream import redis_client

    client = redis_client.connect(settings.require_redis_url("workers read frames from Redis"))
    try:
        client.ping()
    except redis.RedisError as err:
        client.close()
        raise ConnectionError(f"cannot reach Redis (REDIS_URL): {err}") from None
    try:
        yield client
    finally:
        client.close()
