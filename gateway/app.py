"""The gateway's HTTP side: the page, the JSON API and health checks, every error answered as JSON.

Routes::

    GET    /                    the page (gateway/static/index.html); /?autostart=1 starts the default camera
    GET    /static/...          its scripts and styles
    GET    /api/config          ICE servers, sampling settings and the feedback switch for the page
    POST   /api/offer           {"sdp", "type": "offer", "return_video"?} -> {"sdp", "type": "answer", "stream",
                                "key", "return_video"}
    GET    /api/streams         this gateway's open streams and their counters
    DELETE /api/streams/{id}    close one stream
    GET    /api/targets         metrics endpoints of this gateway and every live worker (Prometheus HTTP SD)
    GET    /healthz             alive (with the gateway's clock, for the page's latency)
    GET    /readyz              Redis reachable
    GET    /metrics             Prometheus metrics (emostream.metrics)
    GET    /api/openapi.json    the OpenAPI 3 description of these routes (gateway.openapi)

    /api/training-jobs..., /api/models...   retraining and the model store (gateway.retraining)
    POST   /api/feedback                    a user's label correction (gateway.feedback)
    POST   /api/feedback/hold               keep a frame while its user picks a correction

With ``settings.token`` set, every route but the health, metrics and targets ones needs it
(:mod:`gateway.access`); CORS headers are sent only for ``settings.cors_origins``.
"""

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path

import redis
import redis.asyncio as aioredis
from aiohttp import web
from aiortc import RTCSessionDescription
from aiortc.sdp import SessionDescription

from emostream import redis_client
from emostream.config import Settings
from emostream.metrics import CONTENT_TYPE, Metrics
from gateway import access, feedback, retraining
from gateway.api import HUB, MAX_BODY, SYNC_REDIS, ApiError, Handler, read_body
from gateway.bodies import Answer, Error, Offer
from gateway.hub import ClientLimit, GatewayFull, Hub
from gateway.openapi import document
from gateway.overlay import css_colors
from gateway.session import OfferError
from ingest import tracks
from ingest.keys import live_heartbeats

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
STATIC_FILES = frozenset(path.name for path in STATIC.iterdir() if path.is_file())
OFFER_TIMEOUT = 20.0
"""Seconds to answer an offer (ICE gathering included) before giving up with 504."""
READY_TIMEOUT = 2.0
WORKER_MAX_AGE = 5.0
"""Seconds since its last heartbeat (one a second) after which a worker is no longer listed in /api/targets."""
__all__ = ["HUB", "ApiError", "create_app"]  # HUB and ApiError live in gateway.api


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a JSON error response; unexpected ones are logged as 500."""
    headers: dict[str, str] = {}
    try:
        return await handler(request)
    except ApiError as err:
        status, message, headers = err.status, err.message, err.headers
    except web.HTTPException as err:
        if err.status < 400:
            raise
        status, message = err.status, err.reason
        headers = {k: v for k, v in err.headers.items() if k not in ("Content-Type", "Content-Length")}  # Allow
    except asyncio.CancelledError:
        raise
    except redis.RedisError as err:  # the gateway is fine; what the request needs is not there
        log.warning("%s %s: Redis: %s", request.method, request.path, err)
        status, message, headers = 503, "Redis is unavailable; try again later", {"Retry-After": "5"}
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        status, message = 500, "internal error"
    if HUB in request.app:
        request.app[HUB].metrics.gateway_http_errors.labels(status=str(status)).inc()
    return web.json_response(Error(error=message).model_dump(), status=status, headers=headers)


def check_offer(offer: Offer) -> tuple[RTCSessionDescription, bool]:
    """The offer's session description and whether to send labelled video back; :class:`ApiError` 400
    says what is wrong with its SDP. A camera offered send-only gets no video back, as with
    ``"return_video": false`` (the browser then draws the labels itself)."""
    try:
        media = SessionDescription.parse(offer.sdp).media
    except Exception as err:  # aiortc's parser raises whatever the text trips over
        raise ApiError(400, f"malformed SDP: {err!r}") from None
    kinds = [m.kind for m in media]
    if kinds.count("video") != 1 or not set(kinds) <= {"video", "application"}:
        raise ApiError(400, f"the offer must have one video track and may have a data channel, not {kinds}")
    video = next(m for m in media if m.kind == "video")
    return RTCSessionDescription(offer.sdp, "offer"), offer.return_video and video.direction != "sendonly"


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def static(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise ApiError(404, f"no static file {name!r}")
    return web.FileResponse(STATIC / name)


async def config(request: web.Request) -> web.Response:
    settings = request.app[HUB].settings
    return web.json_response(
        {
            "ice_servers": settings.ice_server_list(),
            "sample_fps": settings.sample_fps,
            "result_max_age": settings.result_max_age,
            "feedback": bool(settings.feedback),
            "operator": request.get(access.ROLE) == access.OPERATOR,
            "colors": css_colors(),
            "track_keep_s": tracks.KEEP_S,
        }
    )


async def offer(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    client = access.limited_as(access.client_address(request, access.trusted_networks(hub.settings)))
    wait = hub.offers.acquire(client)
    if wait:
        raise ApiError(429, "too many offers: try again later", headers={"Retry-After": str(math.ceil(wait))})
    description, return_video = check_offer(await read_body(request, Offer))
    try:
        session, answer = await asyncio.wait_for(hub.open(description, client, return_video), OFFER_TIMEOUT)
    except GatewayFull as err:
        raise ApiError(503, str(err)) from None
    except ClientLimit as err:
        retry = {"Retry-After": str(err.retry_after)} if err.retry_after else {}
        raise ApiError(429, str(err), headers=retry) from None
    except OfferError as err:
        raise ApiError(400, str(err)) from None
    except TimeoutError:
        raise ApiError(504, "timed out answering the offer") from None
    return web.json_response(
        Answer(
            sdp=answer.sdp, type="answer", stream=session.stream, key=session.key, return_video=session.return_video
        ).model_dump()
    )


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())


async def streams(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    return web.json_response({"gateway": hub.id, "streams": [s.describe() for s in hub.sessions.values()]})


async def close_stream(request: web.Request) -> web.Response:
    session = request.app[HUB].sessions.get(request.match_info["stream"])
    if session is None:
        raise ApiError(404, "no such stream")
    access.check_stream_key(request, session.key)
    await session.close()
    return web.json_response({"closed": session.stream})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"alive": True, "time": time.time()})


async def readyz(request: web.Request) -> web.Response:
    try:
        await asyncio.wait_for(request.app[HUB].redis.ping(), READY_TIMEOUT)
    except (aioredis.RedisError, OSError, TimeoutError) as err:
        raise _unreachable(request, err) from None
    return web.json_response({"ready": True})


def _unreachable(request: web.Request, err: BaseException) -> ApiError:
    """503 for an open route whose Redis does not answer: the cause (addresses) goes to the log only."""
    log.warning("%s %s: Redis unreachable: %r", request.method, request.path, err)
    return ApiError(503, "Redis unreachable; try again later", headers={"Retry-After": "5"})


async def serve_metrics(request: web.Request) -> web.Response:
    response = web.Response(body=request.app[HUB].metrics.render())
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


async def targets(request: web.Request) -> web.Response:
    """This gateway and every worker with a fresh heartbeat, as Prometheus HTTP service discovery wants them."""
    hub = request.app[HUB]
    settings = hub.settings
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    port = sockname[1] if isinstance(sockname, tuple) else settings.port
    try:
        address = await asyncio.to_thread(settings.advertised, f"{settings.host}:{port}")  # may resolve a host name
    except ValueError as err:  # no address to give: Prometheus keeps its last list
        raise ApiError(503, str(err)) from None
    listed = [{"targets": [address], "labels": {"role": "gateway", "gateway": hub.id}}]
    try:
        beats = await asyncio.wait_for(hub.redis.hgetall(settings.keys.workers), READY_TIMEOUT)
        seconds, micros = await asyncio.wait_for(hub.redis.time(), READY_TIMEOUT)
    except (aioredis.RedisError, OSError, TimeoutError) as err:
        raise _unreachable(request, err) from None  # Prometheus keeps its last list
    now = seconds + micros / 1e6  # heartbeats are stamped by Redis's clock: hosts' clocks may differ
    for beat in live_heartbeats(beats, now, WORKER_MAX_AGE).values():
        if beat.get("role", "worker") == "worker" and beat.get("metrics"):
            listed.append({"targets": [beat["metrics"]], "labels": {"role": "worker", "worker": str(beat["name"])}})
    return web.json_response(listed)


def create_app(settings: Settings, metrics: Metrics | None = None) -> web.Application:
    """The gateway as an aiohttp application; its hub starts and stops with the app.

    ``metrics`` defaults to a private registry without process collectors (several apps may share
    a test process); :func:`gateway.command.run` passes the process's own.
    """
    redis_url = settings.redis_url
    if not redis_url:
        raise ValueError("the gateway needs settings.redis_url (REDIS_URL)")
    if settings.max_streams < 1:
        raise ValueError("max_streams must be >= 1")
    access.check_exposure(settings)
    settings.ice_server_list()  # TURN without credentials is refused before serving

    async def hub_context(app: web.Application) -> AsyncIterator[None]:
        client = redis_client.connect_async(redis_url)
        sync = redis.Redis.from_url(redis_url, socket_connect_timeout=READY_TIMEOUT, socket_timeout=30)
        hub = Hub(settings, client, metrics)
        await hub.start()
        app[HUB] = hub
        app[SYNC_REDIS] = sync
        yield
        await hub.stop()
        await client.aclose()
        sync.close()

    middlewares = [json_errors]
    middlewares.append(access.access_middleware(settings))
    if settings.cors_origins.strip():
        middlewares.insert(0, access.cors_middleware(settings))
    app = web.Application(client_max_size=MAX_BODY, middlewares=middlewares)
    app.cleanup_ctx.append(hub_context)
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/config", config)
    app.router.add_get("/api/openapi.json", openapi)
    app.router.add_post("/api/offer", offer)
    app.router.add_get("/api/streams", streams)
    app.router.add_delete("/api/streams/{stream}", close_stream)
    app.router.add_get("/api/targets", targets)
    app.router.add_routes(retraining.routes)
    app.router.add_routes(feedback.routes)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", serve_metrics)
    return app
