"""What the gateway's route modules share: the application keys, API errors and JSON bodies."""

import reprlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis
from aiohttp import web
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from gateway.hub import Hub

HUB = web.AppKey("hub", Hub)
SYNC_REDIS = web.AppKey("sync_redis", redis.Redis)
"""A blocking client for the synchronous libraries (RQ); use it only through ``asyncio.to_thread``."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Model = TypeVar("Model", bound=BaseModel)
MAX_BODY = 64 * 1024
"""Largest request body accepted (an offer is a few kilobytes); larger ones get 413."""
TYPES = {
    "int_type": "int",
    "float_type": "float",
    "string_type": "str",
    "bool_type": "true or false",
    "list_type": "a list",
}
"""How an error names the JSON type a field wants (pydantic's own words for the rest)."""
SAID = 5
"""Problems named in one error message at most."""


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
        problems = [_problem(error) for error in err.errors()]
        more = f" (and {len(problems) - SAID} more)" if len(problems) > SAID else ""
        raise ApiError(400, "; ".join(problems[:SAID]) + more) from None


def _problem(error: ErrorDetails) -> str:
    """One validation error in words, naming the field: ``epochs must be int, not '3'``."""
    kind, where, given = error["type"], error["loc"], reprlib.repr(error["input"])
    if kind == "json_invalid":
        return "the body is not valid JSON"
    if not where:
        return "the body must be a JSON object"
    field = str(where[0]) + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in where[1:])
    if kind == "missing":
        return f"{field} is required"
    if kind == "extra_forbidden":
        return f"unknown field {field!r}"
    context = error.get("ctx", {})
    if kind == "value_error":
        expected = str(context["error"])
    elif kind == "literal_error":
        expected = f"one of {context['expected']}" if " or " in context["expected"] else context["expected"]
    elif kind in TYPES:
        expected = TYPES[kind]
    elif error["msg"].startswith("Input should be "):
        expected = error["msg"].removeprefix("Input should be ")
    else:  # e.g. "List should have at least 4 items after validation, not 3"
        return f"{field}: {error['msg'][:1].lower()}{error['msg'][1:]}"
    return f"{field} must be {expected}, not {given}"
