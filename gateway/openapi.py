"""The OpenAPI 3.1 document of the gateway's HTTP API, served at ``GET /api/openapi.json``.

Each route is described once, in :data:`ROUTES`: its summary, its answer and the errors only it
gives. The rest follows from the code that decides it: the bodies' schemas are generated from the
models that validate them (:mod:`gateway.bodies`); which routes are open without a token, and which
are an operator's, come from :mod:`gateway.access`; a route with a body may answer 400 and 413.
"""

from dataclasses import dataclass, field
from functools import cache

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway.access import OPEN_PATHS, TOKEN_COOKIE
from gateway.api import MAX_BODY
from gateway.bodies import Answer, Correction, Error, Held, Offer, Promotion, TrainingRequest

OBJECT = {"type": "object"}
TEXT = {"type": "string"}
SCHEMAS = "#/components/schemas/{model}"
ERROR = {"$ref": "#/components/responses/Error"}


def in_path(name: str, description: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": TEXT, "description": description}


def in_query(name: str, schema: dict) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema}


STREAM_KEY = {
    "name": "X-Stream-Key",
    "in": "header",
    "required": False,
    "schema": TEXT,
    "description": "the stream's key from the offer's answer (not needed with operator rights)",
}
JOB = in_path("id", "a job id")
VERSION = in_path("version", "a model version")


@dataclass(frozen=True)
class Operation:
    summary: str
    answer: str
    """What the successful answer holds."""
    status: int = 200
    returns: dict | type[BaseModel] = field(default_factory=lambda: OBJECT)
    """The successful answer's schema, or the model it is generated from."""
    media: str = "application/json"
    errors: tuple[int, ...] = ()
    """The error statuses of this route besides those :func:`describe` adds."""
    parameters: tuple[dict, ...] = ()
    body: type[BaseModel] | None = None
    body_required: bool = True
    redirects: dict[int, str] = field(default_factory=dict)


ROUTES: dict[str, dict[str, Operation]] = {
    "/": {
        "get": Operation(
            "The page; ?token=TOKEN sets the token cookie and redirects without it; ?autostart=1 starts the "
            "default camera",
            "the page",
            returns=TEXT,
            media="text/html",
            parameters=(in_query("token", TEXT), in_query("autostart", {"type": "string", "enum": ["1"]})),
            redirects={303: "token accepted, cookie set"},
        )
    },
    "/static/{name}": {
        "get": Operation(
            "The page's scripts and style",
            "the file",
            returns=TEXT,
            media="*/*",
            errors=(404,),
            parameters=(in_path("name", "index.html, style.css or one of the page's modules (main.js, ...)"),),
        )
    },
    "/api/config": {
        "get": Operation(
            "ICE servers, sampling rate, result age, how long a face track outlives its face, the feedback "
            "switch and whether the caller is an operator, for the page",
            "the configuration",
        )
    },
    "/api/openapi.json": {"get": Operation("This document", "the document")},
    "/api/offer": {
        "post": Operation(
            "Answer one camera's WebRTC offer",
            "the answer, the stream id, the stream's key (X-Stream-Key closes it or sends feedback on it) and "
            "whether labelled video comes back",
            returns=Answer,
            errors=(429, 503, 504),
            body=Offer,
        )
    },
    "/api/streams": {"get": Operation("This gateway's open streams and their counters", "the streams")},
    "/api/streams/{stream}": {
        "delete": Operation(
            "Close one stream", "closed", errors=(403, 404), parameters=(in_path("stream", "a stream id"), STREAM_KEY)
        )
    },
    "/api/targets": {
        "get": Operation(
            "Metrics endpoints of this gateway and every live worker (Prometheus HTTP service discovery)",
            "targets",
            returns={"type": "array", "items": OBJECT},
            errors=(503,),
        )
    },
    "/api/training-jobs": {
        "get": Operation("Every retraining job, newest first", "the jobs", errors=(503,)),
        "post": Operation(
            "Queue a retraining job (503: no trainer is running)",
            "the job",
            status=201,
            errors=(503,),
            body=TrainingRequest,
            body_required=False,
        ),
    },
    "/api/training-jobs/{id}": {
        "get": Operation(
            "One job: status, progress, metrics, the resulting version",
            "the job",
            errors=(404, 503),
            parameters=(JOB,),
        ),
        "delete": Operation("Cancel a job", "the job", errors=(404, 409, 503), parameters=(JOB,)),
    },
    "/api/models": {"get": Operation("Every model version with its metrics, and the live one", "the versions")},
    "/api/models/rollback": {
        "post": Operation("Make the previously live version live again", "the live version", errors=(409,))
    },
    "/api/models/{version}/promote": {
        "post": Operation(
            "Make a version live",
            "the live version",
            errors=(404, 409),
            parameters=(VERSION,),
            body=Promotion,
            body_required=False,
        )
    },
    "/api/models/{version}/card": {
        "get": Operation(
            "A version's model card (Markdown): what its labels mean, how well, for what not to use it",
            "the model card",
            returns=TEXT,
            media="text/markdown",
            errors=(404, 409),
            parameters=(in_path("version", 'a model version, or "live"'),),
        )
    },
    "/api/feedback": {
        "post": Operation(
            "A user's label correction of one face (stored only while EMOSTREAM_FEEDBACK=1)",
            "stored",
            status=201,
            errors=(403, 404, 409, 429, 507),
            parameters=(STREAM_KEY,),
            body=Correction,
        )
    },
    "/api/feedback/hold": {
        "post": Operation(
            "Keep a frame past the last few while its user picks a correction of a face in it",
            "held",
            errors=(403, 404),
            parameters=(STREAM_KEY,),
            body=Held,
        )
    },
    "/healthz": {"get": Operation("Alive, with the gateway's clock", "alive")},
    "/readyz": {"get": Operation("Redis reachable", "ready", errors=(503,))},
    "/metrics": {"get": Operation("Prometheus metrics", "metrics", returns=TEXT, media="text/plain")},
}
"""Every route of the gateway (tests/test_gateway_fuzz.py checks it against the application's router)."""


def schema(of: dict | type[BaseModel]) -> dict:
    return {"$ref": SCHEMAS.format(model=of.__name__)} if isinstance(of, type) else of


def describe(path: str, operation: Operation) -> dict:
    """One operation as OpenAPI has it."""
    errors = set(operation.errors)
    if path not in OPEN_PATHS:
        errors |= {401, 403}  # no token; an operator's route, another site's page or a name not loopback
    if operation.body:
        errors |= {400, 413}
    answers = {
        operation.status: {
            "description": operation.answer,
            "content": {operation.media: {"schema": schema(operation.returns)}},
        },
        **{status: {"description": text} for status, text in operation.redirects.items()},
        **dict.fromkeys(errors, ERROR),
    }
    described: dict = {"summary": operation.summary, "responses": {str(s): answers[s] for s in sorted(answers)}}
    if operation.parameters:
        described["parameters"] = list(operation.parameters)
    if operation.body:
        described["requestBody"] = {
            "required": operation.body_required,
            "content": {"application/json": {"schema": schema(operation.body)}},
        }
    if path in OPEN_PATHS:
        described["security"] = []
    return described


@cache
def document() -> dict:
    """The whole document (built once)."""
    operations = [operation for item in ROUTES.values() for operation in item.values()]
    models = {of for o in operations for of in (o.body, o.returns) if isinstance(of, type)} | {Error}
    _, generated = models_json_schema(
        [(model, "validation") for model in sorted(models, key=lambda model: model.__name__)], ref_template=SCHEMAS
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "emostream gateway",
            "version": "1",
            "description": 'The gateway\'s HTTP API (gateway/app.py). Every error is a JSON object {"error": '
            "message}. With EMOSTREAM_TOKEN set, every operation but the health, metrics and targets ones needs "
            f"the token, as a bearer token or the page's {TOKEN_COOKIE} cookie. Request bodies are limited to "
            f"{MAX_BODY // 1024} KiB (413).",
        },
        "security": [{"bearer": []}, {"cookie": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": TOKEN_COOKIE},
            },
            "schemas": generated["$defs"],
            "responses": {
                "Error": {"description": "an error", "content": {"application/json": {"schema": schema(Error)}}}
            },
        },
        "paths": {path: {method: describe(path, o) for method, o in item.items()} for path, item in ROUTES.items()},
    }
