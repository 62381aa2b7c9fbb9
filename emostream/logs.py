"""Logging setup: human-readable text, or one JSON object per line for log shippers; and quiet
native libraries: TensorFlow's and LiteRT's C++ start-up lines reach a terminal only when debugging."""

import importlib.util
import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


THIRD_PARTY = ("aioice", "aiortc", "rq", "tensorflow", "absl", "h5py", "matplotlib", "PIL")
"""Libraries whose INFO lines (ICE candidates, RQ's job chatter) drown ours: WARNING unless debugging."""


NATIVE_CHATTER = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"
    r"|[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "  # absl's INFO and WARNING lines
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] "  # TensorFlow's own INFO and WARNING lines
    r"|To enable the following instructions: .* rebuild TensorFlow"  # the CPU-feature note's second line
    r"|INFO: "  # LiteRT's INFO lines ("Created TensorFlow Lite XNNPACK delegate for CPU.")
)
"""Lines TensorFlow and LiteRT print while they start: absl's banner, oneDNN and CPU-feature notes, XNNPACK's
delegate. Errors (``E...``) are not among them."""


def setup(level: str, fmt: str) -> None:
    if level.upper() != "DEBUG":
        # TensorFlow's C++ INFO lines (e.g. each epoch's end-of-data note), read when TensorFlow loads
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING)


@contextmanager
def quiet_native_start() -> Iterator[None]:
    """Hide the :data:`NATIVE_CHATTER` that native libraries print while they load or start inside the
    block (``import tensorflow``, a LiteRT interpreter's first creation), unless logging at DEBUG.

    Those lines are written to file descriptor 2 directly, past Python's logging, and
    ``TF_CPP_MIN_LOG_LEVEL`` does not reach them (absl prints them before TensorFlow sets it up).
    So meanwhile descriptor 2 is a temporary file, and afterwards every other line in it (an
    error, our own log) is written to stderr after all.
    """
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    sys.stderr.flush()
    stderr = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(stderr, 2)
            os.close(stderr)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not NATIVE_CHATTER.match(line)))
            sys.stderr.flush()


class MissingTraining(LookupError):
    """TensorFlow is not installed: serving needs none, training and evaluation do."""


def can_train() -> bool:
    """Whether TensorFlow can be imported here (looked up, not imported: that takes seconds)."""
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):  # a broken or blocked installation
        return False


def require_training(what: str) -> None:
    """:class:`MissingTraining` naming ``what`` and the install that brings TensorFlow, unless it is here."""
    if not can_train():
        raise MissingTraining(f"{what} needs TensorFlow, which a serving install leaves out: pip install -e '.[train]'")


def start_tensorflow() -> None:
    """Import TensorFlow now, its start-up lines hidden unless debugging (see :func:`quiet_native_start`);
    :class:`MissingTraining` when it is not installed."""
    require_training("this command")
    with quiet_native_start():
        import tensorflow  # noqa: F401
