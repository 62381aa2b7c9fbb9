"""Retraining as RQ jobs on the ``training`` queue.

The RQ worker (``emostream trainer``) is a non-forking :class:`rq.SimpleWorker`, and the
job itself never imports TensorFlow: it spawns ``emostream train --publish`` as a child
process and follows it. So TensorFlow never runs after a ``fork()``, a cancel or a timeout
is a plain ``SIGTERM`` to the child, and a crash of the training process cannot take the
worker down.

Progress (epoch, metrics) is copied from the run's ``history.csv`` into ``job.meta``. The
child publishes only after training finished, and a store version appears atomically, so a
failed, cancelled or timed-out job never publishes anything; promotion happens here, after.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis
from rq import Queue, SimpleWorker, get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Job

from emostream.config import Settings
from model_store.errors import PromotionRefused
from training.history import read_history

log = logging.getLogger(__name__)

QUEUE = "training"
POLICIES = ("auto", "manual")


class JobCancelled(RuntimeError):
    """The job was cancelled; nothing was published."""


@dataclass
class RetrainSpec:
    """What to train; the options of ``emostream train`` a user may set remotely."""

    data: str = ""
    """The dataset (default: the trainer's ``EMOSTREAM_DATA``); it must lie under ``EMOSTREAM_DATA_ROOTS``."""
    architecture: str = "emonet"
    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 3e-3
    limit: int | None = None
    extra_train: list[str] = field(default_factory=list)
    init_from_live: bool = False
    """Fine-tune from the live model (its version becomes the parent) instead of from scratch."""
    shadow: bool = False
    """Before promotion, compare the candidate with the live model on the workers' live face sample."""
    promotion: str = "auto"
    """auto: promote when more accurate than live on validation; manual: publish only."""
    timeout_s: int = 6 * 3600

    def validate(self) -> None:
        if self.promotion not in POLICIES:
            raise ValueError(f"promotion must be one of {POLICIES}, not {self.promotion!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0 or self.timeout_s < 1:
            raise ValueError("epochs, batch_size, learning_rate and timeout_s must be positive")
        if self.limit is not None and self.limit < 1:
            raise ValueError("limit must be positive")

    @classmethod
    def from_json(cls, raw: dict) -> "RetrainSpec":
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown retraining option(s) {sorted(unknown)}")
        try:
            spec = cls(**raw)
        except TypeError as err:
            raise ValueError(str(err)) from None
        spec.validate()
        return spec


def find_datasets(roots: list[Path], depth: int = 2) -> list[str]:
    """Datasets under ``roots`` (folders with ``train/``, or ``.csv`` files), at most ``depth`` levels down."""
    found: list[Path] = []
    level = [root for root in roots if root.exists()]
    for left in range(depth, -1, -1):
        datasets = [p for p in level if (p.is_dir() and (p / "train").is_dir()) or p.suffix == ".csv"]
        found += datasets
        if not left:
            break
        # a dataset's own folders (thousands of images) are never listed
        level = [child for p in level if p.is_dir() and p not in datasets for child in sorted(p.iterdir())]
    return [str(p) for p in found]


def offer(settings: Settings) -> dict:
    """What a trainer tells enqueuers: its default dataset, the folders it may read and the datasets there."""
    roots = settings.allowed_data()
    return {"data": str(settings.data.resolve()), "roots": [str(r) for r in roots], "datasets": find_datasets(roots)}


def check_data(spec: RetrainSpec, offers: list[dict]) -> RetrainSpec:
    """``spec`` with its dataset filled in, once a live trainer can read every path it names.

    ``offers`` are the live trainers' :func:`offer` s (the enqueuer need not see the data itself).
    Raises ``ValueError`` naming the setting to change, so a bad path is refused when the job is
    queued rather than failing later; with no trainer alive, says how to start one.
    """
    if not offers:
        raise NoTrainer(
            "no trainer is running, so a job would wait forever: start `emostream trainer` on a host "
            "that has the dataset (`emostream up` runs one)"
        )
    named, spec.data = spec.data, spec.data or offers[0]["data"]
    roots = sorted({Path(root) for o in offers for root in o["roots"]})
    resolved = {path: Path(path).expanduser().resolve() for path in [spec.data, *spec.extra_train]}
    for path, kind in [(spec.data, "data"), *((extra, "extra_train") for extra in spec.extra_train)]:
        if not any(resolved[path] == root or resolved[path].is_relative_to(root) for root in roots):
            raise ValueError(
                f"{kind} {path!r} is outside the folders trainers may read "
                f"(EMOSTREAM_DATA_ROOTS: {', '.join(map(str, roots))})"
            )
    if not any(str(resolved[spec.data]) in o["datasets"] for o in offers):
        default = "" if named else " (the trainer's EMOSTREAM_DATA: see the README on getting FER2013)"
        raise ValueError(
            f"no dataset at {spec.data}{default}: a trainer expects train/ and validation/ folders or a Kaggle CSV"
        )
    return spec


class NoTrainer(ValueError):
    """No ``emostream trainer`` is alive to run a job."""


def offers(client: redis.Redis, settings: Settings) -> list[dict]:
    """The offers of every live trainer (each refreshes its own at every RQ heartbeat)."""
    keys = list(client.scan_iter(settings.keys.trainer()))
    return [json.loads(raw) for raw in client.mget(keys) if raw] if keys else []


OFFER_EVERY_S = 15
"""A trainer's heartbeat (and offer) interval: a dataset added under a root is offered within this."""


class Trainer(SimpleWorker):
    """RQ's non-forking worker that, at every heartbeat, tells enqueuers which data it can read."""

    settings: Settings

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
        super().heartbeat(timeout, pipeline)
        self.connection.set(
            self.settings.keys.trainer(self.name), json.dumps(offer(self.settings)), ex=max(60, (timeout or 0) + 30)
        )

    def register_death(self) -> None:
        self.connection.delete(self.settings.keys.trainer(self.name))
        super().register_death()


def cancel_key(settings: Settings, job_id: str) -> str:
    return f"{settings.key_prefix}:training-cancel:{job_id}"


def enqueue(client: redis.Redis, spec: RetrainSpec) -> Job:
    """Queue a retraining job with an explicit timeout; failures stay in RQ's failed registry."""
    spec.validate()
    queue = Queue(QUEUE, connection=client)
    return queue.enqueue_call(
        run_job,
        args=(asdict(spec),),  # the spec only: the trainer uses its own settings, and no secret enters Redis
        timeout=spec.timeout_s + 600,
        result_ttl=7 * 86400,
        failure_ttl=7 * 86400,
        meta={"progress": [], "spec": asdict(spec)},
        description=f"retrain {spec.architecture} for {spec.epochs} epochs",
    )


def cancel(client: redis.Redis, settings: Settings, job_id: str) -> Job:
    """Cancel a queued job, or stop a running one at its next check (within a second or two)."""
    job = Job.fetch(job_id, connection=client)
    client.set(cancel_key(settings, job_id), "1", ex=86400)
    if job.get_status() in ("queued", "scheduled", "deferred"):
        job.cancel()
    return job


def describe(job: Job) -> dict:
    """The JSON view of a job for the API and the CLI."""
    status = job.get_status()  # before the rest: all a job saved before it ended is then read below
    job.refresh()
    cancelled = job.meta.get("phase") == "cancelled"
    failure = job.latest_result() if job.is_failed else None  # one fetch of the stored exception
    return {
        "id": job.id,
        "status": "canceled" if cancelled else str(status.value if hasattr(status, "value") else status),
        "description": job.description,
        "enqueued_at": job.enqueued_at.isoformat() if job.enqueued_at else None,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "ended_at": job.ended_at.isoformat() if job.ended_at else None,
        "spec": job.meta.get("spec"),
        "progress": job.meta.get("progress", []),
        "phase": job.meta.get("phase"),
        "version": job.meta.get("version"),
        "promoted": job.meta.get("promoted"),
        "shadow": job.meta.get("shadow"),
        "error": job.meta.get("error") or _last_line(failure.exc_string if failure else None),
    }


def list_jobs(client: redis.Redis) -> list[dict]:
    """Every job RQ still knows of on the training queue, newest first."""
    queue = Queue(QUEUE, connection=client)
    ids = list(
        dict.fromkeys(
            queue.job_ids
            + queue.started_job_registry.get_job_ids()
            + queue.finished_job_registry.get_job_ids()
            + queue.failed_job_registry.get_job_ids()
            + queue.canceled_job_registry.get_job_ids()
        )
    )
    views = []
    for job in Job.fetch_many(ids, connection=client):
        if job is None:
            continue
        try:
            views.append(describe(job))
        except NoSuchJobError:  # expired meanwhile
            continue
    return sorted(views, key=lambda view: view["enqueued_at"] or "", reverse=True)


def _last_line(text: str | None) -> str | None:
    return text.strip().splitlines()[-1] if text and text.strip() else None


def _train_command(spec: RetrainSpec, run_dir: Path, init_from: str | None) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "emostream.cli",
        "--log-level",
        "WARNING",
        "train",
        "--data",
        spec.data,
        "--arch",
        spec.architecture,
        "--epochs",
        str(spec.epochs),
        "--batch-size",
        str(spec.batch_size),
        "--lr",
        str(spec.learning_rate),
        "--run-dir",
        str(run_dir),
        "--publish",
    ]
    if spec.limit:
        command += ["--limit", str(spec.limit)]
    for extra in spec.extra_train:
        command += ["--extra-train", extra]
    if init_from:
        command += ["--init-from", init_from]
    return command


def run_job(raw_spec: dict) -> dict:
    """The job body: train in a child process, follow it, publish, apply the promotion policy.

    It runs in the trainer's process, with the trainer's own settings and environment.
    """
    spec = RetrainSpec.from_json(raw_spec)
    settings = Settings.from_env()
    spec.data = spec.data or str(settings.data)
    env = dict(os.environ)
    job = get_current_job()
    job_id = job.id if job else f"local-{int(time.time())}"
    client = job.connection if job else redis.Redis.from_url(settings.redis_url)
    store = settings.model_store()
    parent = store.live_version() if spec.init_from_live else None
    run_dir = settings.runs_dir / f"job-{job_id}"
    log_path = run_dir.with_suffix(".log")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log_file:
        child = subprocess.Popen(
            _train_command(spec, run_dir, parent),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        try:
            _follow(child, job, client, settings, run_dir)
        finally:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(30)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
    output = log_path.read_text().strip().splitlines()
    if child.returncode != 0:
        errors = [line for line in output if "error" in line.lower()] or output[-1:] or ["(no output)"]
        raise RuntimeError(f"training exited with status {child.returncode}: {errors[-1]}")
    version = next(line.split()[1] for line in reversed(output) if line.startswith("published "))
    manifest = store.manifest(version)
    if spec.shadow:
        _set_meta(job, phase="shadow", shadow=_shadow(version, env))
    promoted = False
    if spec.promotion == "auto":
        try:
            store.promote(version, reason=f"retraining job {job_id}")
            promoted = True
            announce(client, settings, version)
        except PromotionRefused as err:
            log.info("job %s: %s", job_id, err)
    _set_meta(job, phase="done", version=version, promoted=promoted)
    return {"version": version, "promoted": promoted, "metrics": manifest.metrics}


def _shadow(version: str, env: dict[str, str]) -> dict:
    """Run ``emostream models shadow`` in a child (TensorFlow stays out of this process)."""
    done = subprocess.run(
        [sys.executable, "-m", "emostream.cli", "models", "shadow", version],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "shadow run failed"}
    return json.loads(done.stdout)


def _follow(child: subprocess.Popen, job: Job | None, client: redis.Redis, settings: Settings, run_dir: Path) -> None:
    _set_meta(job, phase="training")
    seen = 0
    while child.poll() is None:
        time.sleep(1.0)
        if job and client.exists(cancel_key(settings, job.id)):
            reason = f"job {job.id} was cancelled; nothing was published"
            _set_meta(job, phase="cancelled", error=reason)  # readable before RQ records the failure
            raise JobCancelled(reason)
        history = read_history(run_dir / "history.csv")
        epochs = len(history.get("loss", []))
        if epochs > seen:
            seen = epochs
            progress = [{"epoch": i + 1, **{k: v[i] for k, v in history.items()}} for i in range(epochs)]
            _set_meta(job, progress=progress)


def _set_meta(job: Job | None, **values: object) -> None:
    if job is not None:
        job.meta.update(values)
        job.save_meta()


def announce(client: redis.Redis, settings: Settings, version: str) -> None:
    """Tell running workers a new version is live (they also poll the live pointer)."""
    client.publish(settings.keys.model_channel, json.dumps({"version": version}))


def run_trainer(settings: Settings, burst: bool = False) -> None:
    """``emostream trainer``: a non-forking RQ worker on the training queue."""
    client = redis.Redis.from_url(settings.redis_url)
    trainer = Trainer([Queue(QUEUE, connection=client)], connection=client, worker_ttl=OFFER_EVERY_S + 15)
    trainer.settings = settings
    trainer.work(burst=burst, with_scheduler=False)
