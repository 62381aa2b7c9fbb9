"""What the gateway's route modules share: the application keys, API errors and JSON bodies."""

import json
from collections.abc import Awaitable, Callable

import redis
from aiohttp import web

from gateway.hub import Hub

HUB = web.AppKey("hub", Hub)
SYNC_REDIS = web.AppKey("sync_redis", redis.Redis)
"""A blocking client for the synchronous libraries (RQ); use it only through ``asyncio.to_thread``."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """Answered as ``{"error": message}`` with ``status`` (and ``headers``, e.g. Retry-After)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


async def json_object(request: web.Request) -> dict:
    """The request body as a JSON object; :class:`ApiError` 400 otherwise (an empty body is ``{}``)."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body
