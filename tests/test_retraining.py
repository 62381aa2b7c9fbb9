"""Retraining through RQ with a real Redis and a real (non-forking) RQ worker; hot reload in a running worker."""

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import redis
from factories import brightness, brightness_store, fer_dataset, publish_brightness, run_cli, trainer_process
from rq.job import Job

from emostream.config import Settings
from ingest.wire import Frame, Result
from model_store.announcement import announce
from training.client import ABANDONED, RetrainSpec, enqueue, offers
from training.data import load_folder
from training.jobs import find_datasets
from workers.classify import LiveModel
from workers.haar import HaarDetector
from workers.worker import Worker

pytestmark = pytest.mark.slow  # most tests start TensorFlow and train, here or in a child process


@pytest.fixture(scope="module")
def tiny_fer(tmp_path_factory):
    return fer_dataset(tmp_path_factory.mktemp("fer"), train_per_class=20, val_per_class=8)


@pytest.fixture
def retrain_env(redis_server, tmp_path, tiny_fer) -> dict[str, str]:
    return {
        "REDIS_URL": redis_server.url,
        "EMOSTREAM_MODEL_STORE": str(tmp_path / "store"),
        "EMOSTREAM_RUNS": str(tmp_path / "runs"),
        "EMOSTREAM_DATA": str(tiny_fer),
        "EMOSTREAM_DATA_ROOTS": f"{tiny_fer},{tmp_path / 'data'}",
        "EMOSTREAM_TRAINER_HEARTBEAT": "1",  # a job outliving 3 s outlives it only if its trainer keeps beating
    }


@pytest.fixture
def trainer_env(retrain_env):
    with trainer_process(retrain_env):
        yield retrain_env


def test_retrain_job_reports_progress_publishes_and_promotes(trainer_env, tiny_fer):
    store = brightness_store(trainer_env["EMOSTREAM_MODEL_STORE"], accuracy=0.0)
    before = store.live_version()
    live_faces = load_folder(tiny_fer / "validation").images[:12]  # what workers sample with shadow_sample on
    redis.Redis.from_url(trainer_env["REDIS_URL"]).lpush(
        Settings().keys.face_sample, *[f.tobytes() for f in live_faces]
    )
    done = run_cli(
        "retrain", "--data", str(tiny_fer), "--epochs", "2", "--limit", "140", "--shadow", "--wait", env=trainer_env
    )
    assert done.returncode == 0, done.stderr
    view = job_view(done, trainer_env)
    assert view["status"] == "finished" and view["promoted"] is True
    shadow = view["shadow"]
    assert shadow["faces"] == 12 and shadow["reference"] == before and shadow["candidate"] == view["version"]
    assert 0.0 <= shadow["agreement"] <= 1.0
    assert sum(shadow["candidate_scores"]["label_share"].values()) == pytest.approx(1.0, abs=1e-3)
    assert [p["epoch"] for p in view["progress"]] == [1, 2]
    assert all("val_accuracy" in p for p in view["progress"])
    assert "epoch 2/2" in done.stderr
    assert store.live_version() == view["version"] != before
    manifest = store.manifest(view["version"])
    assert manifest.training_config["epochs"] == 2 and manifest.datasets["train"]["n"] == 140
    listed = json.loads(run_cli("jobs", "list", env=trainer_env).stdout)
    assert [j["id"] for j in listed] == [view["id"]]


def test_manual_policy_publishes_without_promoting(trainer_env, tiny_fer):
    store = brightness_store(trainer_env["EMOSTREAM_MODEL_STORE"], accuracy=0.0)
    live = store.live_version()
    done = run_cli(
        "retrain",
        "--data",
        str(tiny_fer),
        "--epochs",
        "1",
        "--limit",
        "70",
        "--promotion",
        "manual",
        "--wait",
        env={**trainer_env, "EMOSTREAM_TOKEN": SECRET},  # the enqueuer's secret must not travel with the job
    )
    view = job_view(done, trainer_env)
    assert view["status"] == "finished" and view["promoted"] is False
    assert store.live_version() == live and view["version"] in store.versions()
    assert not redis_values_containing(redis.Redis.from_url(trainer_env["REDIS_URL"]), SECRET.encode())


def test_a_model_auto_promotion_refuses_says_why(trainer_env, tiny_fer):
    store = brightness_store(trainer_env["EMOSTREAM_MODEL_STORE"], accuracy=1.0)
    live = store.live_version()
    done = run_cli("retrain", "--data", str(tiny_fer), "--epochs", "1", "--limit", "70", "--wait", env=trainer_env)
    view = job_view(done, trainer_env)
    assert view["status"] == "finished" and view["promoted"] is False and store.live_version() == live
    assert f"below live {live} (1.0000)" in view["not_promoted"] and "--force" not in view["not_promoted"]
    assert view["not_promoted"] in done.stdout.splitlines()[-1]
    assert f"`emostream models promote {view['version']} --force` promotes it" in done.stdout, "not a retrain flag"


SECRET = "tok-9f1c2e7d5b3a"


def job_view(done, env: dict[str, str]) -> dict:
    """The JSON view of the job a ``retrain --wait`` run queued (its first line is the job id), checked
    against the one-line outcome it printed last."""
    job_id, outcome = done.stdout.splitlines()[0], done.stdout.splitlines()[-1]
    view = json.loads(run_cli("jobs", "show", job_id, env=env).stdout)
    assert outcome.startswith(f"job {job_id} {view['status']}")
    if view["status"] == "finished":
        assert view["version"] in outcome and ("promoted (live)" in outcome) == view["promoted"]
    return view


def redis_values_containing(client: redis.Redis, needle: bytes) -> list[bytes]:
    """Every key whose name or any value holds ``needle``, RQ's zlib-compressed job data unpacked too."""
    found = []
    for key in client.scan_iter():
        kind = client.type(key)
        if kind == b"string":
            values = [client.get(key)]
        elif kind == b"hash":
            values = list(client.hgetall(key).values())
        elif kind == b"list":
            values = client.lrange(key, 0, -1)
        elif kind in (b"set", b"zset"):
            values = list(client.smembers(key)) if kind == b"set" else client.zrange(key, 0, -1)
        else:  # streams
            values = [v for _, fields in client.xrange(key) for v in fields.values()]
        unpacked = []
        for value in values:
            with contextlib.suppress(zlib.error):
                unpacked.append(zlib.decompress(value))
        if any(needle in v for v in [key, *values, *unpacked]):
            found.append(key)
    return found


def test_failed_job_lands_in_the_failed_registry_and_publishes_nothing(trainer_env, tmp_path):
    store = brightness_store(trainer_env["EMOSTREAM_MODEL_STORE"], accuracy=0.0)
    broken = fer_dataset(tmp_path / "data" / "broken", train_per_class=2, val_per_class=1)
    (broken / "train" / "sad" / "x.png").write_bytes(b"garbage")  # found only once training reads it
    client, deadline = redis.Redis.from_url(trainer_env["REDIS_URL"]), time.monotonic() + 60
    while str(broken) not in offers(client, Settings())[0]["datasets"]:  # offered at the trainer's next heartbeat
        assert time.monotonic() < deadline, "the trainer never offered the new dataset"
        time.sleep(0.5)
    done = run_cli("retrain", "--data", str(broken), "--epochs", "1", "--wait", env=trainer_env)
    assert done.returncode == 1
    view = job_view(done, trainer_env)
    assert view["status"] == "failed"
    assert "x.png: unreadable image" in view["error"]
    assert len(store.versions()) == 1


def listing(roots: list[Path]) -> dict:
    try:
        return {"found": find_datasets(roots)}
    except OSError as err:
        return {"error": repr(err)}


def as_service_user(roots: list[Path]) -> dict:
    """:func:`listing` by a user without root's rights (a forked child that drops them, under root)."""
    if os.geteuid() != 0:
        return listing(roots)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nothing but the listing, then out
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, json.dumps(listing(roots)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        found = answer.read()
    os.waitpid(pid, 0)
    return json.loads(found)


def test_datasets_are_offered_past_a_folder_the_trainer_may_not_enter():
    root = Path(tempfile.mkdtemp())
    try:
        root.chmod(0o755)
        (root / "fer" / "train").mkdir(parents=True)
        (root / "faces.csv").write_text("emotion,pixels,Usage\n")
        (root / "lost+found" / "old" / "train").mkdir(parents=True)  # a mounted disk's, root's alone
        (root / "lost+found").chmod(0o700 if os.geteuid() == 0 else 0o000)
        assert as_service_user([root]) == {"found": [str(root / "faces.csv"), str(root / "fer")]}
    finally:
        (root / "lost+found").chmod(0o700)
        shutil.rmtree(root)


def test_data_outside_the_allowed_roots_or_missing_is_refused_before_queueing(trainer_env, tmp_path):
    for data, message in (
        ("/etc", "outside the folders trainers may read (EMOSTREAM_DATA_ROOTS"),
        (str(tmp_path / "data" / "nothing-here"), "no dataset at"),
        ("~no-such-user-here/fer2013", "data '~no-such-user-here/fer2013' cannot be resolved"),
    ):
        done = run_cli("retrain", "--data", data, "--epochs", "1", env=trainer_env)
        assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not redis.Redis.from_url(trainer_env["REDIS_URL"]).keys("rq:job:*"), "nothing was queued"


def test_a_trainer_refuses_a_queued_job_whose_data_is_outside_its_own_folders(trainer_env):
    """The enqueuer checks against every trainer's folders; the trainer that takes the job, against its own."""
    client = redis.Redis.from_url(trainer_env["REDIS_URL"])
    job = enqueue(client, RetrainSpec(epochs=1, data="/etc"))  # as an enqueuer trusting another trainer would
    view = ended(job.id, trainer_env, time.monotonic() + 120, "the job did not end")
    assert view["status"] == "failed" and "'/etc' is outside the folders this trainer may read" in view["error"]


def test_jobs_commands_name_an_unknown_or_ended_job_in_one_line(redis_server, tmp_path):
    env = {"REDIS_URL": redis_server.url, "EMOSTREAM_MODEL_STORE": str(tmp_path)}
    job = enqueue(redis.Redis.from_url(redis_server.url), RetrainSpec(epochs=1))  # queued: no trainer takes it
    assert run_cli("jobs", "cancel", job.id, env=env).returncode == 0
    answers = {
        "show unknown": run_cli("jobs", "show", "no-such-job", env=env),
        "cancel unknown": run_cli("jobs", "cancel", "no-such-job", env=env),
        "cancel ended": run_cli("jobs", "cancel", job.id, env=env),
        "bad log level": run_cli("--log-level", "loud", "jobs", "list", env=env),
    }
    for name, done in answers.items():
        assert done.returncode == 2 and "Traceback" not in done.stderr, (name, done.stderr)
    assert answers["show unknown"].stderr.strip() == "emostream jobs: error: no training job 'no-such-job'"
    assert answers["cancel ended"].stderr.strip() == f"emostream jobs: error: job {job.id} has already ended (canceled)"
    assert "Unknown level: 'LOUD'" in answers["bad log level"].stderr


def test_with_no_trainer_alive_a_job_is_refused_with_the_reason(redis_server, tiny_fer, tmp_path):
    env = {"REDIS_URL": redis_server.url, "EMOSTREAM_DATA": str(tiny_fer), "EMOSTREAM_MODEL_STORE": str(tmp_path)}
    done = run_cli("retrain", "--epochs", "1", env=env)
    assert done.returncode == 2 and "no trainer is running" in done.stderr


def ended(job_id: str, env: dict, deadline: float, why: str) -> dict:
    """The job's view (``emostream jobs show``) once it has ended; fails with ``why`` past ``deadline``."""
    while (view := json.loads(run_cli("jobs", "show", job_id, env=env).stdout))["status"] not in (
        "canceled",
        "failed",
        "finished",
    ):
        assert time.monotonic() < deadline, why
        time.sleep(1)
    return view


def test_cancelled_job_stops_training_and_publishes_nothing(trainer_env, tiny_fer):
    store = brightness_store(trainer_env["EMOSTREAM_MODEL_STORE"], accuracy=0.0)
    job_id = run_cli(
        "retrain", "--data", str(tiny_fer), "--epochs", "200", "--limit", "70", env=trainer_env
    ).stdout.strip()
    deadline = time.monotonic() + 300
    while json.loads(run_cli("jobs", "show", job_id, env=trainer_env).stdout)["progress"] == []:
        assert time.monotonic() < deadline, "training never reported an epoch"
        time.sleep(1)
    run_cli("jobs", "cancel", job_id, env=trainer_env)
    view = ended(job_id, trainer_env, deadline, "cancel did not stop the job")
    assert view["status"] == "canceled" and "nothing was published" in view["error"]
    assert len(view["progress"]) < 200
    assert len(store.versions()) == 1


def test_a_job_cancelled_after_training_publishes_but_does_not_promote(trainer_env, tiny_fer):
    store = brightness_store(trainer_env["EMOSTREAM_MODEL_STORE"], accuracy=0.0)
    before = store.live_version()
    client = redis.Redis.from_url(trainer_env["REDIS_URL"])
    job_id = run_cli(
        "retrain", "--data", str(tiny_fer), "--epochs", "1", "--limit", "70", "--shadow", env=trainer_env
    ).stdout.strip()
    deadline = time.monotonic() + 300
    while Job.fetch(job_id, connection=client).get_meta().get("phase") != "shadow":  # the shadow run starts TF
        assert time.monotonic() < deadline, "the job never reached its shadow run"
        time.sleep(0.1)
    run_cli("jobs", "cancel", job_id, env=trainer_env)
    view = ended(job_id, trainer_env, deadline, "the job did not end")
    assert view["status"] == "canceled" and "was published, not promoted" in view["error"], view
    assert len(store.versions()) == 2 and store.live_version() == before


def training_children(job_id: str) -> list[int]:
    """Pids of ``emostream train`` processes working for job ``job_id`` (its run directory names it)."""
    pids = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            if b"train" in cmdline and any(f"job-{job_id}".encode() in part for part in cmdline):
                pids.append(int(proc.name))
    return pids


def training_long_job(env: dict[str, str]) -> str:
    """The id of a 200-epoch job queued now, once its training child runs."""
    job_id = run_cli("retrain", "--epochs", "200", "--limit", "70", env=env).stdout.strip()
    deadline = time.monotonic() + 300
    while not training_children(job_id):
        assert time.monotonic() < deadline, "the job never started training"
        time.sleep(0.2)
    return job_id


def test_a_trainer_killed_mid_job_takes_its_child_with_it_and_its_job_fails_within_three_heartbeats(retrain_env):
    env = retrain_env
    store = brightness_store(env["EMOSTREAM_MODEL_STORE"], accuracy=0.0)
    with trainer_process(env) as trainer:
        job_id = training_long_job(env)
        trainer.kill()  # as the OOM killer, or a supervisor out of patience, would
        trainer.wait()
        deadline = time.monotonic() + 180
        try:
            while training_children(job_id):
                assert time.monotonic() < deadline, "the training child outlived its trainer"
                time.sleep(0.2)
        finally:
            for pid in training_children(job_id):  # an orphan left by a failure here trains on, for hours
                os.kill(pid, signal.SIGKILL)
    # an orphan trains on unwatched, stops early on this tiny set and publishes
    assert len(store.versions()) == 1, "the training child went with its trainer, before publishing anything"
    # RQ alone would call the job "started" until its 6-hour timeout ran out, and offer the dead trainer that long
    view = ended(job_id, env, time.monotonic() + 60, "the dead trainer's job still looks alive")
    assert view["status"] == "failed" and view["error"] == ABANDONED
    client, deadline = redis.Redis.from_url(env["REDIS_URL"]), time.monotonic() + 30
    while offers(client, Settings()):  # its offer lapses within the same three beats (to the second)
        assert time.monotonic() < deadline, "the dead trainer is still offered"
        time.sleep(0.2)
    refused = run_cli("retrain", "--epochs", "1", env=env)
    assert refused.returncode == 2 and "no trainer is running" in refused.stderr


def test_a_trainer_stopped_mid_job_ends_the_job_and_its_training_and_exits(retrain_env):
    """A supervisor's SIGTERM: RQ alone would wait for the job (hours of training) until the grace ran out."""
    store = brightness_store(retrain_env["EMOSTREAM_MODEL_STORE"], accuracy=0.0)
    with trainer_process(retrain_env) as trainer:
        job_id = training_long_job(retrain_env)
        trainer.terminate()
        exited = trainer.wait(50)  # inside a 60 s grace: up to 30 s of it for the child to stop
        children = training_children(job_id)
    view = json.loads(run_cli("jobs", "show", job_id, env=retrain_env).stdout)
    assert exited == 0 and children == []
    assert (
        view["status"] == "failed"
        and view["error"] == f"job {job_id} ended: its trainer was stopped; nothing was published"
    )
    assert len(store.versions()) == 1


def test_running_worker_switches_versions_mid_stream_without_losing_frames(redis_server, redis_client, tmp_path):
    settings = Settings(redis_url=redis_server.url, model_store_root=tmp_path / "store", max_frame_age=60.0)
    store = brightness_store(settings.model_store_root, accuracy=0.5)
    old = store.live_version()
    worker = Worker(settings, redis_client, HaarDetector(320), LiveModel(store, check_interval=3600))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    keys, reply = settings.keys, settings.keys.results("cam")
    face = np.full((96, 96), brightness(2), np.uint8)
    newer = publish_brightness(store, 0.9)
    seen: list[Result] = []
    last = "0"
    for seq in range(40):
        redis_client.xadd(keys.frames, Frame("cam", seq, time.time(), face, reply).encode())
        if seq == 20:
            store.promote(newer)
            announce(redis_client, settings, newer)
        for _, entries in redis_client.xread({reply: last}, block=50) or []:
            for entry_id, fields in entries:
                seen.append(Result.decode(fields))
                last = entry_id
        time.sleep(0.02)
    deadline = time.monotonic() + 60
    while len(seen) < 40 and time.monotonic() < deadline:
        for _, entries in redis_client.xread({reply: last}, block=500) or []:
            for entry_id, fields in entries:
                seen.append(Result.decode(fields))
                last = entry_id
    worker.stop()
    thread.join(10)
    assert [r.seq for r in seen] == list(range(40))
    versions = [r.model_version for r in seen]
    assert versions[0] == old and versions[-1] == newer
    switch = versions.index(newer)
    assert set(versions[:switch]) == {old} and set(versions[switch:]) == {newer}


def test_a_bad_retraining_option_is_one_line_naming_it_before_anything_is_queued(redis_server):
    done = run_cli("retrain", "--epochs", "0", "--promotion", "auto", env={"REDIS_URL": redis_server.url})
    assert done.returncode == 2
    assert done.stderr.strip() == "emostream retrain: error: epochs must be greater than or equal to 1, not 0"
    assert redis.Redis.from_url(redis_server.url).keys("rq:*") == [], "nothing queued"


def test_a_job_trains_the_architecture_it_names_or_else_the_one_it_starts_from(tmp_path):
    from training.client import RetrainSpec
    from training.jobs import _train_command

    fine_tune = _train_command(RetrainSpec(init_from_live=True), tmp_path, "emonet_pair-20261202T000000-abcdef")
    assert "--arch" not in fine_tune  # `train --init-from` takes that version's architecture
    named = _train_command(RetrainSpec(architecture="emonet_wide"), tmp_path, None)
    assert named[named.index("--arch") + 1] == "emonet_wide"
