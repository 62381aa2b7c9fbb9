"""``emostream gateway``: serve the page and WebRTC against REDIS_URL until SIGINT or SIGTERM."""

import argparse
import errno
import logging
import socket

from emostream.config import Settings

log = logging.getLogger(__name__)


def run(settings: Settings) -> None:
    """Serve ``settings.host:settings.port`` until SIGINT or SIGTERM (blocking); needs ``settings.redis_url``.

    ``emostream up`` runs this in-process, or starts ``python -m emostream.cli gateway`` with
    ``settings.to_env()``.
    """
    from aiohttp import web

    from emostream.metrics import Metrics
    from gateway.app import create_app

    app = create_app(settings, Metrics())  # with the process and Python collectors
    log.info("gateway listening on http://%s:%d/ (Redis %s)", settings.host, settings.port, settings.redis_shown())
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None, shutdown_timeout=5)


def check_port(settings: Settings) -> None:
    """A clear error, before anything starts, when the gateway's address is taken."""
    try:
        with socket.create_server((settings.host, settings.port)):
            pass
    except OSError as err:
        if err.errno != errno.EADDRINUSE:
            raise
        raise ValueError(
            f"port {settings.port} on {settings.host} is in use: stop what listens there, "
            "or choose another with --port (EMOSTREAM_PORT)"
        ) from None


def _cmd_gateway(args: argparse.Namespace, settings: Settings) -> int:
    settings = settings.replace(
        host=args.host,
        port=args.port,
        sample_fps=args.sample_fps,
        frame_width=args.frame_width,
        ice_servers=args.ice_servers,
        max_streams=args.max_streams,
    )
    redis_url = settings.require_redis_url("`emostream gateway` needs a shared Redis (or use `emostream up`)")
    settings = settings.replace(redis_url=redis_url)
    check_port(settings)
    run(settings)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    defaults = Settings()
    p = sub.add_parser("gateway", help="serve the web page and WebRTC: camera frames to REDIS_URL, labels back")
    p.add_argument("--host", help=f"address to listen on (default {defaults.host})")
    p.add_argument("--port", type=int, help=f"port to listen on (default {defaults.port})")
    p.add_argument("--sample-fps", type=float, help=f"frames sampled per second per camera ({defaults.sample_fps})")
    p.add_argument("--frame-width", type=int, help=f"frames are downscaled to this width ({defaults.frame_width})")
    p.add_argument("--ice-servers", help="comma-separated STUN/TURN URLs (default: host candidates only)")
    p.add_argument("--max-streams", type=int, help=f"camera streams served at once ({defaults.max_streams})")
    p.set_defaults(func=_cmd_gateway)
