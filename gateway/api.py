"""What the gateway's route modules share: the application keys, API errors and JSON bodies."""

from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis
from aiohttp import web
from pydantic import BaseModel, ValidationError

from emostream.validation import explain
from gateway.hub import Hub

HUB = web.AppKey("hub", Hub)
SYNC_REDIS = web.AppKey("sync_redis", redis.Redis)
"""A blocking client for the synchronous libraries (RQ); use it only through ``asyncio.to_thread``."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Model = TypeVar("Model", bound=BaseModel)
MAX_BODY = 64 * 1024
"""Largest request body accepted (an offer is a few kilobytes); larger ones get 413."""


class ApiError(Exception):
    """Answered as ``{"error": message}`` with ``status`` (and ``headers``, e.g. Retry-After)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


async def read_body(request: web.Request, model: type[Model]) -> Model:
    """The request's JSON body validated by ``model`` (strictly: no ``"3"`` for 3, no ``true`` for 1);
    :class:`ApiError` 400 names each wrong field otherwise. An empty body is ``{}``."""
    raw = await request.read()
    try:
        return model.model_validate_json(raw if raw.strip() else b"{}", strict=True)
    except ValidationError as err:
        raise ApiError(400, explain(err)) from None
