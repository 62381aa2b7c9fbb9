"""The client side of retraining: queue, follow and cancel jobs on RQ's ``training`` queue.

Everything an enqueuer needs (the gateway's API, ``emostream retrain`` and ``emostream jobs``):
the job's spec, what live trainers offer, and RQ's view of each job. It
imports neither TensorFlow nor the job body: a job is queued by the dotted name of
:func:`training.jobs.run_job`, which only a trainer (``emostream trainer``) imports and runs.
"""

import json
from pathlib import Path
from typing import Literal

import redis
from pydantic import BaseModel, ConfigDict, Field
from rq import Queue
from rq.exceptions import AbandonedJobError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

from emostream.config import Settings

QUEUE = "training"
Policy = Literal["auto", "manual"]
"""What happens to a finished job's model: see :attr:`RetrainSpec.promotion`."""
JOB_FUNCTION = "training.jobs.run_job"
"""What a trainer runs for each job (imported there, by name, never here)."""


class RetrainSpec(BaseModel):
    """What to train: the options of ``emostream train`` a user may set remotely.

    The one definition of a job's spec: ``emostream retrain`` builds it from flags, the gateway's
    ``POST /api/training-jobs`` validates a request body with it (and the API's OpenAPI schema is
    generated from it), and a job carries it as a plain dict (:meth:`model_dump`) that the trainer
    validates again (:meth:`model_validate`).
    """

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, allow_inf_nan=False, use_attribute_docstrings=True
    )

    data: str = ""
    """The dataset (default: the trainer's ``EMOSTREAM_DATA``); it must lie under ``EMOSTREAM_DATA_ROOTS``."""
    architecture: str | None = None
    """Default: the live model's with ``init_from_live``, else ``emonet``."""
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    limit: int | None = Field(None, ge=1)
    """At most this many images per split."""
    extra_train: list[str] = []
    """Extra ``<class>/`` folders to train on (e.g. feedback), also under ``EMOSTREAM_DATA_ROOTS``."""
    init_from_live: bool = False
    """Fine-tune from the live model (its version becomes the parent) instead of from scratch."""
    shadow: bool = False
    """Before promotion, compare the candidate with the live model on the workers' live face sample."""
    promotion: Policy = "auto"
    """auto: promote when more accurate than live on validation; manual: publish only."""
    timeout_s: int = Field(6 * 3600, ge=1)


class NoTrainer(ValueError):
    """No ``emostream trainer`` is alive to run a job."""


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
    named = spec.data
    # absolute, as here: the trainer runs elsewhere, in another folder, maybe as another user
    spec.data = _absolute(spec.data or offers[0]["data"], "data")
    spec.extra_train = [_absolute(extra, "extra_train") for extra in spec.extra_train]
    check_roots(spec, sorted({Path(root) for o in offers for root in o["roots"]}), "trainers")
    if not any(spec.data in o["datasets"] for o in offers):
        default = "" if named else " (the trainer's EMOSTREAM_DATA: see the README on getting FER2013)"
        raise ValueError(
            f"no dataset at {spec.data}{default}: a trainer expects train/ and validation/ folders or a Kaggle CSV"
        )
    return spec


def _absolute(path: str, kind: str) -> str:
    try:
        return str(Path(path).expanduser().resolve())
    except (RuntimeError, OSError) as err:  # an unknown ~user, a loop of symbolic links
        raise ValueError(f"{kind} {path!r} cannot be resolved: {err}") from None


def check_roots(spec: RetrainSpec, roots: list[Path], who: str) -> None:
    """``ValueError`` naming the first path of ``spec`` outside ``roots`` (the folders ``who`` may read)."""
    for path, kind in [(spec.data, "data"), *((extra, "extra_train") for extra in spec.extra_train)]:
        resolved = Path(_absolute(path, kind))
        if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
            raise ValueError(
                f"{kind} {path!r} is outside the folders {who} may read "
                f"(EMOSTREAM_DATA_ROOTS: {', '.join(map(str, roots))})"
            )


def offers(client: redis.Redis, settings: Settings) -> list[dict]:
    """The offers of every live trainer (each refreshes its own at every RQ heartbeat)."""
    keys = list(client.scan_iter(settings.keys.trainer()))
    return [json.loads(raw) for raw in client.mget(keys) if raw] if keys else []


def cancel_key(settings: Settings, job_id: str) -> str:
    return f"{settings.key_prefix}:training-cancel:{job_id}"


def enqueue(client: redis.Redis, spec: RetrainSpec) -> Job:
    """Queue a retraining job with an explicit timeout; failures stay in RQ's failed registry."""
    queue = Queue(QUEUE, connection=client)
    return queue.enqueue_call(
        JOB_FUNCTION,
        args=(spec.model_dump(),),  # the spec only: the trainer uses its own settings, and no secret enters Redis
        timeout=spec.timeout_s + 600,
        result_ttl=7 * 86400,
        failure_ttl=7 * 86400,
        meta={"progress": [], "spec": spec.model_dump()},
        description=f"retrain {spec.architecture or ('the live model' if spec.init_from_live else 'emonet')} "
        f"for {spec.epochs} epochs",
    )


ENDED = ("finished", "failed", "canceled", "stopped")
"""Job statuses after which nothing more happens to a job."""


class UnknownJob(LookupError):
    """No training job has this id (never, or its record expired)."""


class JobEnded(ValueError):
    """The job has ended: there is nothing left to cancel."""


def fetch(client: redis.Redis, job_id: str) -> Job:
    """The job ``job_id``, or :class:`UnknownJob`."""
    try:
        return Job.fetch(job_id, connection=client)
    except (NoSuchJobError, ValueError):  # ValueError: not even a valid job id
        raise UnknownJob(f"no training job {job_id!r}") from None


def cancel(client: redis.Redis, settings: Settings, job_id: str) -> Job:
    """Cancel a queued job, or stop a running one at its next check (within a second or two);
    :class:`UnknownJob` or :class:`JobEnded` when there is none to cancel."""
    job = fetch(client, job_id)
    status = describe(job)["status"]  # as the job's view names it: "canceled" once a cancel stopped it
    if status in ENDED:
        raise JobEnded(f"job {job_id} has already ended ({status})")
    client.set(cancel_key(settings, job_id), "1", ex=86400)
    if status in ("queued", "scheduled", "deferred"):
        job.cancel()
    return job


def describe(job: Job) -> dict:
    """The JSON view of a job for the API and the CLI."""
    status = job.get_status()  # before the rest: all a job saved before it ended is then read below
    if status == JobStatus.STARTED:  # RQ ends the job of a dead trainer only when its registry is cleaned
        StartedJobRegistry(job.origin, connection=job.connection).cleanup()
        status = job.get_status()
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
        "not_promoted": job.meta.get("not_promoted"),
        "shadow": job.meta.get("shadow"),
        "error": job.meta.get("error") or _failure(failure.exc_string if failure else None),
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


ABANDONED = (
    "its trainer stopped while the job ran (killed, or cut off from Redis); "
    "a version it had published by then stays in the model store, not promoted"
)


def _failure(text: str | None) -> str | None:
    """The last line of a failed job's exception, or what RQ's word for a lost job means."""
    if not text or not text.strip():
        return None
    return ABANDONED if AbandonedJobError.__name__ in text else text.strip().splitlines()[-1]
