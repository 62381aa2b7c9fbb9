"""Retraining and the model store through the gateway's API: a real gateway process, Redis and RQ trainer."""

import json
import time
import urllib.error
import urllib.request

import pytest
import redis
from factories import fer_dataset, publish_brightness, trainer_process
from gateway_helpers import GatewayProcess
from processes import loads_tensorflow

from emostream.config import Settings
from model_store import ModelStore

JOB_S = 600.0
"""Budget for a one-epoch job on a busy two-core machine (TensorFlow start included)."""


def call(method: str, url: str, body: object = None) -> tuple[int, dict | list]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        assert err.headers["Content-Type"].startswith("application/json"), err
        return err.code, json.load(err)


def publish(store: ModelStore, accuracy: float, live: bool = False) -> str:
    version = publish_brightness(store, accuracy)
    if live:
        store.promote(version, force=True)
    return version


@pytest.fixture(scope="module")
def tiny_fer(tmp_path_factory):
    return fer_dataset(tmp_path_factory.mktemp("fer"), train_per_class=20, val_per_class=8)


@pytest.fixture
def env(redis_server, tmp_path, tiny_fer) -> dict[str, str]:
    return {
        "REDIS_URL": redis_server.url,
        "EMOSTREAM_MODEL_STORE": str(tmp_path / "store"),
        "EMOSTREAM_RUNS": str(tmp_path / "runs"),
        "EMOSTREAM_FEEDBACK_DIR": str(tmp_path / "feedback"),
        "EMOSTREAM_DATA": str(tiny_fer),
    }


@pytest.fixture
def trainer(env):
    """``emostream trainer``: RQ's non-forking worker on the training queue."""
    with trainer_process(env) as process:
        yield process


def wait_for(url: str, done, what: str, timeout: float = JOB_S) -> dict:
    """GET ``url`` until ``done(body)``; returns the body."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = call("GET", url)
        assert status == 200, body
        if done(body):
            return body
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {body}"
        time.sleep(1)


@pytest.mark.slow
def test_a_job_started_through_the_api_reports_progress_publishes_and_promotes(env, trainer, tiny_fer):
    store = ModelStore(env["EMOSTREAM_MODEL_STORE"])
    seeded = publish(store, accuracy=0.0, live=True)
    spec = {"epochs": 1}  # nothing else: the data is the trainer's EMOSTREAM_DATA
    with GatewayProcess(env["REDIS_URL"], **env) as gateway:
        jobs = f"{gateway.url}/api/training-jobs"
        status, queued = call("POST", jobs, spec)
        assert status == 201, queued
        status, behind = call("POST", jobs, {**spec, "epochs": 5})  # waits behind the first: one trainer
        assert status == 201 and behind["status"] == "queued"
        cancelled = call("DELETE", f"{jobs}/{behind['id']}")
        progressed = wait_for(f"{jobs}/{queued['id']}", lambda job: job["progress"], "an epoch's progress")
        finished = wait_for(f"{jobs}/{queued['id']}", lambda job: job["status"] in ("finished", "failed"), "the end")
        listed = call("GET", jobs)
        models = call("GET", f"{gateway.url}/api/models")
        ended_cancel = call("DELETE", f"{jobs}/{queued['id']}")
        tensorflow = loads_tensorflow(gateway.process.pid)

    # the trainer may already have taken it by the time the API describes it
    assert (
        queued["status"] in ("queued", "started")
        and queued["spec"]["epochs"] == 1
        and queued["spec"]["data"] == env["EMOSTREAM_DATA"]
    )
    assert cancelled[0] == 200 and cancelled[1]["status"] == "canceled"
    assert progressed["progress"][0]["epoch"] == 1 and "val_accuracy" in progressed["progress"][0]
    assert finished["status"] == "finished", finished["error"]
    assert finished["promoted"] is True and finished["version"] not in (None, seeded)
    assert store.live_version() == finished["version"], "auto promotion: it beats the live model"
    assert listed[0] == 200
    assert {job["id"]: job["status"] for job in listed[1]["jobs"]} == {
        queued["id"]: "finished",
        behind["id"]: "canceled",
    }
    assert models[0] == 200 and models[1]["live"] == finished["version"]
    by_version = {version["version"]: version for version in models[1]["versions"]}
    assert set(by_version) == {seeded, finished["version"]}
    assert by_version[finished["version"]]["live"] and not by_version[seeded]["live"]
    assert by_version[finished["version"]]["metrics"]["validation_accuracy"] > 0
    assert ended_cancel[0] == 409
    assert not tensorflow, "the gateway process never loads TensorFlow"


def test_promotion_refusal_force_and_rollback(env):
    store = ModelStore(env["EMOSTREAM_MODEL_STORE"])
    better = publish(store, accuracy=0.6, live=True)
    worse = publish(store, accuracy=0.3)
    notices = redis.Redis.from_url(env["REDIS_URL"]).pubsub(ignore_subscribe_messages=True)
    notices.subscribe(Settings().keys.model_channel)
    with GatewayProcess(env["REDIS_URL"], **env) as gateway:
        models = f"{gateway.url}/api/models"
        refused = call("POST", f"{models}/{worse}/promote", {})
        unknown = call("POST", f"{models}/no-such-version/promote")
        bad_body = call("POST", f"{models}/{worse}/promote", {"force": "yes"})
        forced = call("POST", f"{models}/{worse}/promote", {"force": True})
        live_after_force = call("GET", models)[1]["live"]
        can_roll_back = call("GET", models)[1]["rollback_to"]
        rolled_back = call("POST", f"{models}/rollback")
        nothing_left = call("POST", f"{models}/rollback")
        cannot_roll_back = call("GET", models)[1]["rollback_to"]
    announced = []
    deadline = time.monotonic() + 30
    while len(announced) < 2 and time.monotonic() < deadline:
        message = notices.get_message(timeout=1)
        if message:
            announced.append(json.loads(message["data"])["version"])
    notices.close()

    assert refused[0] == 409 and "below live" in refused[1]["error"] and '{"force": true}' in refused[1]["error"]
    assert unknown[0] == 404 and bad_body[0] == 400
    assert forced == (200, {"live": worse, "previous": better}) and live_after_force == worse
    assert rolled_back == (200, {"live": better, "previous": worse})
    assert nothing_left[0] == 409 and "nothing to roll back" in nothing_left[1]["error"]
    assert (can_roll_back, cannot_roll_back) == (better, None), "the page disables Roll back with nothing behind"
    assert store.live_version() == better
    assert announced == [worse, better], "workers are told at once"
    log = json.loads(store.history_file.read_text())["log"]
    assert [(e["action"], e["reason"]) for e in log[-2:]] == [
        ("promote", "gateway API, operator at 127.0.0.1"),
        ("rollback", "gateway API, operator at 127.0.0.1"),
    ], "who changed the live model, and from where"


def test_invalid_specs_and_unknown_jobs_are_refused_with_clear_messages(env, trainer):
    with GatewayProcess(env["REDIS_URL"], **env) as gateway:
        jobs = f"{gateway.url}/api/training-jobs"
        answers = {
            "unknown field": call("POST", jobs, {"epochs": 1, "learning_rat": 0.1}),
            "wrong type": call("POST", jobs, {"epochs": "3"}),
            "boolean as number": call("POST", jobs, {"epochs": True}),
            "zero epochs": call("POST", jobs, {"epochs": 0}),
            "bad policy": call("POST", jobs, {"promotion": "sometimes"}),
            "extra_train not a list": call("POST", jobs, {"extra_train": "dir"}),
            "not an object": call("POST", jobs, [1, 2]),
            "no feedback yet": call("POST", jobs, {"include_feedback": True}),
            "data outside the roots": call("POST", jobs, {"data": "/etc", "epochs": 1}),
            "extra_train outside the roots": call("POST", jobs, {"extra_train": ["/root"], "epochs": 1}),
        }
        unknown = call("GET", f"{jobs}/no-such-job"), call("DELETE", f"{jobs}/no-such-job")
        listed = call("GET", jobs)
    for name, (status, body) in answers.items():
        assert status == 400 and body["error"], name
    assert "learning_rat" in answers["unknown field"][1]["error"]
    assert answers["wrong type"][1]["error"] == "epochs must be int, not '3'"
    assert "promotion must be one of" in answers["bad policy"][1]["error"]
    assert "no feedback stored yet" in answers["no feedback yet"][1]["error"]
    assert "EMOSTREAM_DATA_ROOTS" in answers["data outside the roots"][1]["error"]
    assert "EMOSTREAM_DATA_ROOTS" in answers["extra_train outside the roots"][1]["error"]
    assert [status for status, _ in unknown] == [404, 404]
    assert listed == (200, {"jobs": [], "trainers": 1}), "nothing was queued"


def test_with_no_trainer_alive_a_job_is_refused_and_the_listing_says_so(env):
    with GatewayProcess(env["REDIS_URL"], **env) as gateway:
        jobs = f"{gateway.url}/api/training-jobs"
        refused = call("POST", jobs, {"epochs": 1})
        listed = call("GET", jobs)
    assert refused[0] == 503 and "no trainer is running" in refused[1]["error"]
    assert listed == (200, {"jobs": [], "trainers": 0})
