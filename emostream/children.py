"""How the processes this project starts are tied to the process that starts them.

Each child gets its own session (``start_new_session``), so a terminal's Ctrl-C, which goes to the
whole foreground process group, reaches only the parent, which then stops its children in order
(``up``: the gateway first, Redis last; ``ingest``: after the frames in flight); and on Linux each
asks the kernel for SIGTERM when its parent dies, however it dies (SIGKILL by a supervisor or the
OOM killer included, or a closed terminal), so none outlives it unwatched.
"""

import ctypes
import signal
import sys
from typing import Any

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before it runs (the parent is the thread that started it)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def tied() -> dict[str, Any]:
    """``subprocess.Popen`` keyword arguments for a child tied so."""
    return {"start_new_session": True, "preexec_fn": _die_with_parent if sys.platform == "linux" else None}
