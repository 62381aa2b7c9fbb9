"""Retraining and the model store over HTTP, for the page and for scripts.

Routes::

    GET    /api/training-jobs               every job (queued, started, finished, failed, canceled), newest first,
                                            and how many trainers are alive
    POST   /api/training-jobs               a retraining spec (gateway.bodies.TrainingRequest: the fields of
                                            training.client.RetrainSpec, plus "include_feedback": true to train
                                            on the feedback dataset too) -> 201;
                                            400 for data outside EMOSTREAM_DATA_ROOTS or missing, 503 with no trainer
    GET    /api/training-jobs/{id}          status, per-epoch progress and metrics, the resulting version
    DELETE /api/training-jobs/{id}          cancel (a running job stops within a second or two)
    GET    /api/models                      every version with its metrics, and which one is live
    GET    /api/models/{version}/card       the version's model card, Markdown ("live": the live version)
    POST   /api/models/{version}/promote    {"force": false}; 409 with the reason when refused
    POST   /api/models/rollback             back to the previously live version

Jobs are RQ jobs run by ``emostream trainer`` (see :mod:`training.client`); RQ and the model store
are synchronous, so every call runs in a thread. Neither imports TensorFlow, which the gateway
never may (aiortc and TensorFlow in one process crash).
"""

import asyncio
import logging

import redis
from aiohttp import web

from emostream.config import Settings
from gateway.access import client_address, trusted_networks
from gateway.api import HUB, SYNC_REDIS, ApiError, read_body
from gateway.bodies import Promotion, TrainingRequest
from gateway.feedback import FeedbackStore
from model_store.announcement import announce
from model_store.card import model_card
from model_store.errors import ModelStoreError, PromotionRefused, UnknownVersion
from model_store.store import ModelStore
from training.client import (
    JobEnded,
    NoTrainer,
    RetrainSpec,
    UnknownJob,
    cancel,
    check_data,
    describe,
    enqueue,
    fetch,
    list_jobs,
    offers,
)

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


def parse_spec(request: TrainingRequest, settings: Settings, live: list[dict]) -> RetrainSpec:
    """The requested spec, checked against the ``live`` trainers' offers; :class:`ApiError` 400 says
    what is wrong with its data or feedback, 503 that no trainer is alive."""
    spec = request.spec()
    if request.include_feedback:
        if not sum(FeedbackStore(settings.feedback_dir).count().values()):
            raise ApiError(400, f"include_feedback: no feedback stored yet in {settings.feedback_dir}")
        spec.extra_train = [*spec.extra_train, str(settings.feedback_dir)]
    try:
        return check_data(spec, live)
    except NoTrainer as err:
        raise ApiError(503, str(err)) from None
    except ValueError as err:
        raise ApiError(400, str(err)) from None


def _job(client: redis.Redis, job_id: str) -> dict:
    try:
        return describe(fetch(client, job_id))
    except UnknownJob as err:
        raise ApiError(404, str(err)) from None


def _cancel(client: redis.Redis, settings: Settings, job_id: str) -> dict:
    try:
        return describe(cancel(client, settings, job_id))
    except UnknownJob as err:
        raise ApiError(404, str(err)) from None
    except JobEnded as err:
        raise ApiError(409, str(err)) from None


@routes.get("/api/training-jobs")
async def jobs(request: web.Request) -> web.Response:
    client, settings = request.app[SYNC_REDIS], request.app[HUB].settings
    listed, live = await asyncio.gather(
        asyncio.to_thread(list_jobs, client), asyncio.to_thread(offers, client, settings)
    )
    return web.json_response({"jobs": listed, "trainers": len(live)})


@routes.post("/api/training-jobs")
async def start_job(request: web.Request) -> web.Response:
    settings = request.app[HUB].settings
    body, client = await read_body(request, TrainingRequest), request.app[SYNC_REDIS]
    spec = await asyncio.to_thread(lambda: parse_spec(body, settings, offers(client, settings)))
    job = await asyncio.to_thread(enqueue, client, spec)
    log.info("retraining job %s queued: %s", job.id, spec)
    return web.json_response(await asyncio.to_thread(describe, job), status=201)


@routes.get("/api/training-jobs/{id}")
async def job(request: web.Request) -> web.Response:
    return web.json_response(await asyncio.to_thread(_job, request.app[SYNC_REDIS], request.match_info["id"]))


@routes.delete("/api/training-jobs/{id}")
async def cancel_job(request: web.Request) -> web.Response:
    settings = request.app[HUB].settings
    view = await asyncio.to_thread(_cancel, request.app[SYNC_REDIS], settings, request.match_info["id"])
    return web.json_response(view)


def list_models(store: ModelStore) -> dict:
    live = store.live_version()
    versions = []
    for version in store.versions():
        try:
            manifest = store.manifest(version).to_json()
        except ModelStoreError as err:
            versions.append({"version": version, "live": version == live, "error": str(err)})
            continue
        versions.append({**manifest, "live": version == live})
    return {"live": live, "versions": versions, "rollback_to": store.rollback_target()}


def _promote(settings: Settings, client: redis.Redis, version: str, force: bool, who: str) -> dict:
    store = settings.model_store()
    previous = store.live_version()
    try:
        store.promote(version, force=force, reason=f"gateway API, {who}")
    except UnknownVersion as err:
        raise ApiError(404, str(err)) from None
    except PromotionRefused as err:
        raise ApiError(409, f'{err.reason}; send {{"force": true}} to promote it anyway') from None
    except ModelStoreError as err:  # corrupt or incompatible: it cannot be served
        raise ApiError(409, str(err)) from None
    log.info("%s promoted %s (live was %s)", who, version, previous)
    announce(client, settings, version)
    return {"live": version, "previous": previous}


def _rollback(settings: Settings, client: redis.Redis, who: str) -> dict:
    store = settings.model_store()
    previous = store.live_version()
    try:
        version = store.rollback(reason=f"gateway API, {who}")
    except ModelStoreError as err:
        raise ApiError(409, str(err)) from None
    log.info("%s rolled back from %s to %s", who, previous, version)
    announce(client, settings, version)
    return {"live": version, "previous": previous}


def _who(request: web.Request) -> str:
    """The operator's address, for the history and the log."""
    return f"operator at {client_address(request, trusted_networks(request.app[HUB].settings))}"


@routes.get("/api/models")
async def models(request: web.Request) -> web.Response:
    settings = request.app[HUB].settings
    return web.json_response(await asyncio.to_thread(lambda: list_models(settings.model_store())))


@routes.get("/api/models/{version}/card")
async def card(request: web.Request) -> web.Response:
    settings = request.app[HUB].settings
    version = request.match_info["version"]
    try:
        text = await asyncio.to_thread(
            lambda: model_card(settings.model_store(), None if version == "live" else version)
        )
    except UnknownVersion as err:
        raise ApiError(404, str(err)) from None
    except ModelStoreError as err:
        raise ApiError(409, str(err)) from None
    return web.Response(text=text, content_type="text/markdown", charset="utf-8")


@routes.post("/api/models/rollback")
async def rollback(request: web.Request) -> web.Response:
    settings = request.app[HUB].settings
    return web.json_response(await asyncio.to_thread(_rollback, settings, request.app[SYNC_REDIS], _who(request)))


@routes.post("/api/models/{version}/promote")
async def promote(request: web.Request) -> web.Response:
    force = (await read_body(request, Promotion)).force
    settings = request.app[HUB].settings
    version = request.match_info["version"]
    view = await asyncio.to_thread(_promote, settings, request.app[SYNC_REDIS], version, force, _who(request))
    return web.json_response(view)
