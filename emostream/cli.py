"""The ``emostream`` command: each subcommand wires one package's work to flags and settings."""

import argparse
import sys
from collections.abc import Sequence

import redis
from pydantic import ValidationError

from emostream import logs
from emostream.config import Settings
from emostream.up import add_parser as add_up
from emostream.validation import explain
from gateway.command import add_parser as add_gateway
from ingest.app.command import add_parser as add_ingest
from model_store.command import add_parser as add_models
from model_store.errors import ModelStoreError
from training.command import add_model_actions, add_retraining
from training.command import add_parser as add_training
from workers.command import add_parser as add_workers


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emostream",
        description="Real-time facial-expression recognition: `emostream up` runs everything on this machine; "
        "the other commands run one part (gateway, worker, ingest, trainer) or manage models and training.",
    )
    parser.add_argument("--log-level", help="default: EMOSTREAM_LOG_LEVEL or INFO")
    parser.add_argument("--log-format", choices=("text", "json"), help="default: EMOSTREAM_LOG_FORMAT or text")
    sub = parser.add_subparsers(dest="command", required=True)
    add_training(sub)
    add_model_actions(add_models(sub))
    add_workers(sub)
    add_ingest(sub)
    add_gateway(sub)
    add_up(sub)
    add_retraining(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:  # the flags go into the settings, which the processes `up` and `ingest` start inherit
        settings = Settings.from_env().replace(log_level=args.log_level, log_format=args.log_format)
    except ValueError as err:
        print(f"emostream: error: {err}", file=sys.stderr)
        return 2
    try:
        logs.setup(settings.log_level, settings.log_format)
    except ValueError as err:  # an unknown level, from --log-level or EMOSTREAM_LOG_LEVEL
        print(f"emostream: error: --log-level (EMOSTREAM_LOG_LEVEL): {err}", file=sys.stderr)
        return 2
    try:
        return args.func(args, settings)
    except ValidationError as err:  # options checked by a request model (e.g. the retraining spec)
        print(f"emostream {args.command}: error: {explain(err)}", file=sys.stderr)
        return 2
    except (ValueError, OSError, LookupError, ModelStoreError) as err:
        print(f"emostream {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (redis.ConnectionError, redis.TimeoutError) as err:
        where = f"REDIS_URL={settings.redis_shown()}" if settings.redis_url else "Redis"
        print(
            f"emostream {args.command}: error: cannot reach {where} ({err}): start it or fix REDIS_URL "
            "(`emostream up` runs its own when REDIS_URL is unset)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
