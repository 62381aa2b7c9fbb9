"""The trainer's side of retraining: the RQ worker on the ``training`` queue and the job it runs.

Jobs are queued, followed and cancelled through :mod:`training.client`. The RQ worker
(``emostream trainer``) is a non-forking :class:`rq.SimpleWorker`, and the job itself never
imports TensorFlow: it spawns ``emostream train --publish`` as a child process and follows it.
So TensorFlow never runs after a ``fork()``, a cancel or a timeout is a plain ``SIGTERM`` to
the child, and a crash of the training process cannot take the worker down.

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
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis
from rq import Queue, SimpleWorker, get_current_job
from rq.executions import Execution
from rq.job import Job

from emostream.children import tied
from emostream.config import Settings
from model_store.announcement import announce
from model_store.errors import PromotionRefused
from training.client import QUEUE, RetrainSpec, cancel_key, check_roots
from training.history import read_history

log = logging.getLogger(__name__)


class JobCancelled(RuntimeError):
    """The job was cancelled: nothing published, or (cancelled after training) nothing promoted."""


class TrainerStopped(RuntimeError):
    """The trainer running the job was asked to stop: the job ended as a cancelled one does."""


STOPPING = threading.Event()
"""Set when this process's trainer is asked to stop: its running job ends at its next check."""


def find_datasets(roots: list[Path], depth: int = 2) -> list[str]:
    """Datasets under ``roots`` (folders with ``train/``, or ``.csv`` files), at most ``depth`` levels down.

    A folder this process may not enter (``lost+found`` on a mounted disk) is passed over.
    """
    found: list[Path] = []
    level = list(roots)
    for left in range(depth, -1, -1):
        datasets = [p for p in level if _is_dataset(p)]
        found += datasets
        if not left:
            break
        # a dataset's own folders (thousands of images) are never listed
        level = [child for p in level if p not in datasets for child in _children(p)]
    return [str(p) for p in found]


def _is_dataset(path: Path) -> bool:
    try:
        return (path.suffix == ".csv" and path.is_file()) or (path / "train").is_dir()
    except OSError:
        return False


def _children(path: Path) -> list[Path]:
    try:
        return sorted(path.iterdir()) if path.is_dir() else []
    except OSError:
        return []


def offer(settings: Settings) -> dict:
    """What a trainer tells enqueuers: its default dataset, the folders it may read and the datasets there."""
    roots = settings.allowed_data()
    return {"data": str(settings.data.resolve()), "roots": [str(r) for r in roots], "datasets": find_datasets(roots)}


class Trainer(SimpleWorker):
    """RQ's non-forking worker that, at every heartbeat, tells enqueuers which data it can read (a
    dataset added under a root is offered at the next one), and keeps beating while a job runs."""

    settings: Settings

    @property
    def liveness(self) -> int:
        """Seconds without a heartbeat after which this trainer and its running job are taken for dead."""
        return 3 * self.settings.trainer_heartbeat

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
        super().heartbeat(timeout, pipeline)
        self.connection.set(self.settings.keys.trainer(self.name), json.dumps(offer(self.settings)), ex=self.liveness)

    def request_stop(self, signum: int, frame: object) -> None:
        """RQ's warm stop waits for the running job, which may train for hours (past any supervisor's
        grace): the job is told to end at its next check (a second), stopping its training child."""
        STOPPING.set()
        super().request_stop(signum, frame)

    def unsubscribe(self) -> None:
        """RQ's, without then waiting for its pub/sub thread: redis-py's can be waiting up to a minute for a
        subscription the unsubscribe just ended, past the grace a supervisor gives a stopping process
        (a daemon thread, it ends with the process)."""
        if self.pubsub_thread:
            self.pubsub.unsubscribe()

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """How long a running job's entry in RQ's started registry lasts unrenewed (RQ's own: the job's
        whole timeout, hours, so a job whose trainer died would stay "started" that long)."""
        return self.liveness

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        """Run the job while a thread renews this trainer's and the job's heartbeats (RQ's
        non-forking worker renews neither while a job runs)."""
        stop = threading.Event()
        beats = threading.Thread(target=self._beat, args=(job, execution, stop), name="trainer-heartbeat", daemon=True)
        beats.start()
        try:
            return super().perform_job(job, queue, execution)
        finally:
            stop.set()
            beats.join(self.liveness)

    def _beat(self, job: Job, execution: Execution, stop: threading.Event) -> None:
        while not stop.wait(self.settings.trainer_heartbeat):
            try:
                with self.connection.pipeline() as pipeline:
                    self.heartbeat(self.liveness, pipeline)
                    execution.heartbeat(job.started_job_registry, self.liveness, pipeline)
                    pipeline.execute()
            except Exception:  # the next beat tries again (three missed and the job counts as lost)
                log.exception("trainer heartbeat failed")

    def register_death(self) -> None:
        self.connection.delete(self.settings.keys.trainer(self.name))
        super().register_death()


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
    if spec.architecture:  # else train's default: the --init-from version's architecture, or emonet
        command += ["--arch", spec.architecture]
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
    spec = RetrainSpec.model_validate(raw_spec)
    settings = Settings.from_env()
    spec.data = spec.data or str(settings.data)
    # the enqueuer checked the union of every trainer's folders: this one reads only its own
    check_roots(spec, settings.allowed_data(), "this trainer")
    env = dict(os.environ)
    job = get_current_job()
    job_id = job.id if job else f"local-{int(time.time())}"
    client = job.connection if job else redis.Redis.from_url(settings.require_redis_url("a job reports to Redis"))
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
            **tied(),
        )
        try:
            _follow(child, job, client, settings, run_dir, log_path)
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
    version = _published(output)
    if version is None:
        raise RuntimeError(f"training ended without publishing: {output[-1] if output else '(no output)'}")
    manifest = store.manifest(version)
    after_training = _left_behind(version)
    if spec.shadow:
        _check_go_on(job, client, settings, after_training)
        _set_meta(job, phase="shadow")
        _set_meta(job, shadow=_shadow(version, env, lambda: _check_go_on(job, client, settings, after_training)))
    _check_go_on(job, client, settings, after_training)
    promoted = False
    if spec.promotion == "auto":
        try:
            store.promote(version, reason=f"retraining job {job_id}")
            promoted = True
            announce(client, settings, version)
        except PromotionRefused as err:
            log.info("job %s: %s", job_id, err)
            _set_meta(job, not_promoted=err.reason)  # the page and `retrain --wait` each say how to force it
    _set_meta(job, phase="done", version=version, promoted=promoted)
    return {"version": version, "promoted": promoted, "metrics": manifest.metrics}


SHADOW_TIMEOUT_S = 600


def _shadow(version: str, env: dict[str, str], go_on: Callable[[], None]) -> dict:
    """Run ``emostream models shadow`` in a child (TensorFlow stays out of this process), calling ``go_on``
    every second: what it raises (a cancel, the trainer stopping) stops the child too."""
    child = subprocess.Popen(
        [sys.executable, "-m", "emostream.cli", "models", "shadow", version],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **tied(),
    )
    deadline = time.monotonic() + SHADOW_TIMEOUT_S
    try:
        while True:
            try:
                out, err = child.communicate(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                go_on()
                if time.monotonic() > deadline:
                    return {"error": f"the shadow run took over {SHADOW_TIMEOUT_S} s"}
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    if child.returncode != 0:
        return {"error": err.strip().splitlines()[-1] if err.strip() else "shadow run failed"}
    return json.loads(out)


def _published(output: list[str]) -> str | None:
    """The version a ``train --publish`` child says it published, from its output lines."""
    return next((line.split()[1] for line in reversed(output) if line.startswith("published ")), None)


def _left_behind(version: str | None) -> str:
    """How the reason of a job cancelled or stopped ends: with the version it published, if any."""
    return f" after training: {version} was published, not promoted" if version else "; nothing was published"


def _follow(
    child: subprocess.Popen, job: Job | None, client: redis.Redis, settings: Settings, run_dir: Path, log_path: Path
) -> None:
    _set_meta(job, phase="training")
    seen = 0
    while child.poll() is None:
        time.sleep(1.0)
        if child.poll() is not None:
            break  # ended: the caller reads what it published
        # the child publishes, then takes seconds to exit: what it left is read if the job is stopped
        _check_go_on(job, client, settings, lambda: _left_behind(_published(log_path.read_text().splitlines())))
        history = read_history(run_dir / "history.csv")
        epochs = len(history.get("loss", []))
        if epochs > seen:
            seen = epochs
            progress = [{"epoch": i + 1, **{k: v[i] for k, v in history.items()}} for i in range(epochs)]
            _set_meta(job, progress=progress)


def _check_go_on(
    job: Job | None, client: redis.Redis, settings: Settings, consequence: str | Callable[[], str]
) -> None:
    """Raise :class:`JobCancelled` if the job was cancelled, :class:`TrainerStopped` if its trainer is
    stopping; the reason (readable before RQ records the failure) ends with ``consequence`` (or what it
    returns, asked only then)."""
    name = f"job {job.id}" if job else "the job"
    cancelled = bool(job and client.exists(cancel_key(settings, job.id)))
    if not cancelled and not STOPPING.is_set():
        return
    told = consequence() if callable(consequence) else consequence
    if cancelled:
        reason = f"{name} was cancelled{told}"
        _set_meta(job, phase="cancelled", error=reason)
        raise JobCancelled(reason)
    reason = f"{name} ended: its trainer was stopped{told}"
    _set_meta(job, phase="stopped", error=reason)
    raise TrainerStopped(reason)


def _set_meta(job: Job | None, **values: object) -> None:
    if job is not None:
        job.meta.update(values)
        job.save_meta()


def run_trainer(settings: Settings, burst: bool = False) -> None:
    """``emostream trainer``: a non-forking RQ worker on the training queue."""
    client = redis.Redis.from_url(settings.require_redis_url("trainers take jobs from the shared Redis"))
    # RQ blocks for a job worker_ttl - 15 seconds at a time and beats in between
    trainer = Trainer([Queue(QUEUE, connection=client)], connection=client, worker_ttl=settings.trainer_heartbeat + 15)
    trainer.settings = settings
    trainer.work(burst=burst, with_scheduler=False)
