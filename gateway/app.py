"""The gateway's HTTP side: the page, the JSON API and health checks, every error answered as JSON.

Routes::

    GET    /                    the page (gateway/static/index.html); /?autostart=1 starts the default camera
    GET    /static/...          its scripts and styles
    GET    /api/config          ICE servers and sampling settings for the page
    POST   /api/offer           {"sdp", "type": "offer"} -> {"sdp", "type": "answer", "stream"}
    GET    /api/streams         this gateway's open streams and their counters
    DELETE /api/streams/{id}    close one stream
    GET    /healthz             alive (with the gateway's clock, for the page's latency)
    GET    /readyz              Redis reachable
    GET    /metrics             Prometheus metrics
"""

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp import web
from aiortc import RTCSessionDescription
from aiortc.sdp import SessionDescription

from emostream.config import Settings
from gateway.hub import GatewayFull, Hub
from gateway.session import OfferError

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
STATIC_FILES = frozenset(path.name for path in STATIC.iterdir() if path.is_file())
MAX_BODY = 64 * 1024
"""Largest request body accepted (an offer is a few kilobytes); larger ones get 413."""
OFFER_TIMEOUT = 20.0
"""Seconds to answer an offer (ICE gathering included) before giving up with 504."""
READY_TIMEOUT = 2.0
HUB = web.AppKey("hub", Hub)


class ApiError(Exception):
    """Answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a JSON error response; unexpected ones are logged as 500."""
    try:
        return await handler(request)
    except ApiError as err:
        status, message = err.status, err.message
    except web.HTTPException as err:
        if err.status < 400:
            raise
        status, message = err.status, err.reason
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        status, message = 500, "internal error"
    if HUB in request.app:
        request.app[HUB].metrics.http_errors.labels(str(status)).inc()
    return web.json_response({"error": message}, status=status)


def check_offer(body: object) -> RTCSessionDescription:
    """The offer in a request body; :class:`ApiError` 400 names what is wrong with it."""
    if not isinstance(body, dict) or body.get("type") != "offer" or not isinstance(body.get("sdp"), str):
        raise ApiError(400, 'expected a JSON object {"sdp": "...", "type": "offer"}')
    try:
        kinds = [media.kind for media in SessionDescription.parse(body["sdp"]).media]
    except Exception as err:  # aiortc's parser raises whatever the text trips over
        raise ApiError(400, f"malformed SDP: {err!r}") from None
    if kinds.count("video") != 1 or not set(kinds) <= {"video", "application"}:
        raise ApiError(400, f"the offer must have one video track and may have a data channel, not {kinds}")
    return RTCSessionDescription(body["sdp"], "offer")


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def static(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise ApiError(404, f"no static file {name!r}")
    return web.FileResponse(STATIC / name)


async def config(request: web.Request) -> web.Response:
    settings = request.app[HUB].settings
    urls = [url.strip() for url in settings.ice_servers.split(",") if url.strip()]
    return web.json_response(
        {
            "ice_servers": [{"urls": url} for url in urls],
            "sample_fps": settings.sample_fps,
            "result_max_age": settings.result_max_age,
        }
    )


async def offer(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "the body is not valid JSON") from None
    description = check_offer(body)
    try:
        session, answer = await asyncio.wait_for(request.app[HUB].open(description), OFFER_TIMEOUT)
    except GatewayFull as err:
        raise ApiError(503, str(err)) from None
    except OfferError as err:
        raise ApiError(400, str(err)) from None
    except TimeoutError:
        raise ApiError(504, "timed out answering the offer") from None
    return web.json_response({"sdp": answer.sdp, "type": answer.type, "stream": session.stream})


async def streams(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    return web.json_response({"gateway": hub.id, "streams": [s.describe() for s in hub.sessions.values()]})


async def close_stream(request: web.Request) -> web.Response:
    session = request.app[HUB].sessions.get(request.match_info["stream"])
    if session is None:
        raise ApiError(404, "no such stream")
    await session.close()
    return web.json_response({"closed": session.stream})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"alive": True, "time": time.time()})


async def readyz(request: web.Request) -> web.Response:
    try:
        await asyncio.wait_for(request.app[HUB].redis.ping(), READY_TIMEOUT)
    except (aioredis.RedisError, OSError, TimeoutError) as err:
        raise ApiError(503, f"Redis unreachable: {err!r}") from None
    return web.json_response({"ready": True})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[HUB].metrics.render(), content_type="text/plain")


def create_app(settings: Settings) -> web.Application:
    """The gateway as an aiohttp application; its hub starts and stops with the app."""
    if not settings.redis_url:
        raise ValueError("the gateway needs settings.redis_url (REDIS_URL)")

    async def hub_context(app: web.Application) -> AsyncIterator[None]:
        redis = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=READY_TIMEOUT)
        hub = Hub(settings, redis)
        await hub.start()
        app[HUB] = hub
        yield
        await hub.stop()
        await redis.aclose()

    app = web.Application(client_max_size=MAX_BODY, middlewares=[json_errors])
    app.cleanup_ctx.append(hub_context)
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/config", config)
    app.router.add_post("/api/offer", offer)
    app.router.add_get("/api/streams", streams)
    app.router.add_delete("/api/streams/{stream}", close_stream)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
