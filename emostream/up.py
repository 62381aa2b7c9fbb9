"""``emostream up``: everything on this machine (Redis unless ``REDIS_URL``, gateway, workers, a trainer)
as one supervised :class:`~emostream.stack.EmbeddedStack`, until Ctrl-C."""

import argparse
import json
import os
import sys
from contextlib import ExitStack
from pathlib import Path

from emostream import logs
from emostream.config import UP_RECORD, Settings


def _record(settings: Settings, redis_url: str) -> Path:
    """Tell commands run on this host without REDIS_URL (``retrain``, ``jobs``) which Redis this ``up`` runs."""
    settings.redis_dir.mkdir(parents=True, exist_ok=True)
    path = settings.redis_dir / UP_RECORD
    staged = path.with_name(f".{UP_RECORD}.{os.getpid()}")
    with os.fdopen(os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:  # this user's only
        json.dump({"redis_url": redis_url, "pid": os.getpid()}, out)
    staged.replace(path)
    return path


def _cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    import signal
    import threading

    from emostream.stack import EmbeddedStack
    from gateway.access import check_exposure
    from gateway.command import check_port

    settings = settings.replace(host=args.host, port=args.port)
    check_exposure(settings)  # before starting anything
    settings.ice_server_list()  # TURN without credentials, which the gateway would refuse
    check_port(settings)
    trains = logs.can_train()  # a trainer without TensorFlow would take jobs and fail every one
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        with (
            EmbeddedStack(
                settings, workers=args.workers or 0, gateway=True, trainer=trains, persist=not args.ephemeral
            ) as stack,
            ExitStack() as extras,
        ):
            if not settings.redis_url and stack.settings.redis_url:  # its own Redis: say where it is
                try:
                    extras.callback(_record(settings, stack.settings.redis_url).unlink, missing_ok=True)
                except OSError as err:  # a convenience: commands beside it then need REDIS_URL
                    print(
                        f"emostream up: warning: cannot record its Redis in {settings.redis_dir}: {err}",
                        file=sys.stderr,
                    )
            workers = sum(name.startswith("worker-") for name in stack.children)
            page = f"http://{settings.host}:{settings.port}/"
            print(
                f"emostream is up: open {page}  (Redis {stack.settings.redis_shown()}, "
                f"{workers} worker(s), "
                + (
                    f"a trainer for retraining jobs on {settings.data}"
                    if trains
                    else "no trainer: retraining needs TensorFlow, pip install -e '.[train]'"
                )
                + "; Ctrl-C stops)",
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
                stack.supervise()
    except RuntimeError as err:  # a part that cannot start, or keeps dying: everything is stopped by now
        print(f"emostream up: error: {err}; stopped", file=sys.stderr)
        return 1
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
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
