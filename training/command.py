"""``emostream trainer``, ``emostream retrain`` and ``emostream jobs``: retraining through RQ."""

import argparse
import json
import sys
import time

from emostream.config import Settings


def _client(settings: Settings):
    import redis

    return redis.Redis.from_url(settings.require_redis_url("retraining jobs live in the shared Redis"))


def _cmd_trainer(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from training.jobs import run_trainer

    _client(settings).ping()
    if args.nice:
        os.nice(args.nice)  # training yields the CPU to serving on a shared machine
    run_trainer(settings, burst=args.burst)
    return 0


def _progress_line(view: dict, epochs: int) -> str:
    done = len(view["progress"])
    last = view["progress"][-1] if view["progress"] else {}
    bar = "#" * round(30 * done / epochs) + "." * (30 - round(30 * done / epochs))
    acc = f" val_accuracy {last['val_accuracy']:.4f}" if "val_accuracy" in last else ""
    return f"\r[{bar}] epoch {done}/{epochs} {view['status']}{acc}"


def follow(client, job_id: str, epochs: int) -> dict:
    """Print a progress bar until the job ends; returns its final view."""
    from rq.job import Job

    from training.client import describe

    job = Job.fetch(job_id, connection=client)
    while True:
        view = describe(job)
        print(_progress_line(view, epochs), end="", file=sys.stderr, flush=True)
        if view["status"] in ("finished", "failed", "canceled", "stopped"):
            print(file=sys.stderr)
            return view
        time.sleep(1.0)


def _cmd_retrain(args: argparse.Namespace, settings: Settings) -> int:
    from training.client import RetrainSpec, check_data, enqueue, offers

    spec = RetrainSpec(
        data=args.data,
        architecture=args.arch,
        epochs=args.epochs,
        limit=args.limit,
        extra_train=args.extra_train,
        init_from_live=args.init_from_live,
        promotion=args.promotion,
        shadow=args.shadow,
        timeout_s=args.timeout,
    )
    client = _client(settings)
    job = enqueue(client, check_data(spec, offers(client, settings)))
    print(job.id)
    if not args.wait:
        return 0
    view = follow(client, job.id, spec.epochs)
    print(_outcome(view))
    return 0 if view["status"] == "finished" else 1


def _outcome(view: dict) -> str:
    """A finished job in one line (``jobs show ID`` gives all of it as JSON)."""
    if view["status"] != "finished":
        return f"job {view['id']} {view['status']}: {view.get('error') or 'no reason recorded'}"
    last = view["progress"][-1] if view["progress"] else {}
    accuracy = f", last val_accuracy {last['val_accuracy']:.4f}" if "val_accuracy" in last else ""
    promoted = "promoted (live)" if view["promoted"] else "published, not promoted"
    return f"job {view['id']} finished: version {view['version']} {promoted}{accuracy}"


def _cmd_jobs(args: argparse.Namespace, settings: Settings) -> int:
    from rq.job import Job

    from training.client import cancel, describe, list_jobs

    client = _client(settings)
    if args.action == "list":
        print(json.dumps(list_jobs(client)))
    elif args.action == "show":
        print(json.dumps(describe(Job.fetch(args.id, connection=client))))
    else:
        print(json.dumps(describe(cancel(client, settings, args.id))))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trainer", help="run an RQ worker (non-forking) for retraining jobs")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.add_argument("--nice", type=int, default=0, help="lower this process's CPU priority by N (0-19)")
    p.set_defaults(func=_cmd_trainer)

    p = sub.add_parser("retrain", help="queue a retraining job (see `emostream trainer`)")
    p.add_argument("--data", default="", help="dataset root or Kaggle CSV (default: the trainer's EMOSTREAM_DATA)")
    p.add_argument("--arch", default="emonet", help="architecture (default emonet)")
    p.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    p.add_argument("--limit", type=int, help="at most N images per split")
    p.add_argument("--extra-train", action="append", default=[], help="extra <class>/ folder (e.g. feedback)")
    p.add_argument("--init-from-live", action="store_true", help="fine-tune the live model")
    p.add_argument(
        "--promotion",
        default="auto",
        choices=("auto", "manual"),
        help="auto: promote if better than live on validation",
    )
    p.add_argument("--timeout", type=int, default=6 * 3600, help="job timeout in seconds")
    p.add_argument("--shadow", action="store_true", help="compare with the live model on live faces first")
    p.add_argument("--wait", action="store_true", help="follow progress until the job ends")
    p.set_defaults(func=_cmd_retrain)

    p = sub.add_parser("jobs", help="list, show and cancel retraining jobs")
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every job, newest first (JSON)")
    for name, about in (("show", "one job's status and progress (JSON)"), ("cancel", "cancel a queued or running job")):
        actions.add_parser(name, help=about).add_argument("id", help="the job id `retrain` printed")
    p.set_defaults(func=_cmd_jobs)
