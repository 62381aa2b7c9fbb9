"""The package layout is the architecture: which package may import which, and a gateway without TensorFlow.

A frame's path is gateway or ingest source -> Redis -> worker -> Redis -> gateway. ``ingest`` is the
base both sides stand on (wire format, keys, crop, tracks), so it imports neither, and its own
application (``ingest.app``: ``emostream ingest``) is nobody's base; the gateway never runs worker
code, and reaches training only through its job client (aiortc and TensorFlow in one process
crash); the model store serves training, never the reverse.
"""

import json
import subprocess
import urllib.error
import urllib.request

from gateway_helpers import REPO, GatewayProcess
from processes import loads_tensorflow, modules_at_exit

PACKAGES = ("emostream", "gateway", "ingest", "model_store", "training", "workers")
FORBIDDEN = {
    "gateway": lambda module: (
        module.startswith(("workers", "ingest.app")) or (module.startswith("training") and module != "training.client")
    ),
    "model_store": lambda module: module.startswith("training"),
    "ingest": lambda module: module.startswith(("gateway", "workers")),
    "workers": lambda module: module.startswith("ingest.app"),
}
"""Per package, the project modules it must never import (top-level or inside a function)."""


def project_imports(package: str) -> list[tuple[str, str]]:
    """``(file:line, module)`` for every import of a project module in ``package``'s files, tracked or new."""
    pattern = rf"^\s*(from|import)\s+({'|'.join(PACKAGES)})\b"
    found = subprocess.run(
        ["git", "grep", "--untracked", "-n", "-P", pattern, "--", f"{package}/*.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode in (0, 1), found.stderr  # 1: nothing found
    imports = []
    for line in found.stdout.splitlines():
        path, number, code = line.split(":", 2)
        code = code.strip()
        if code.startswith("from "):
            modules = [code.split()[1]]
        else:  # import a.b, c as d
            modules = [name.split()[0] for name in code.removeprefix("import ").split(",")]
        imports += [(f"{path}:{number}", module) for module in modules if module.split(".")[0] in PACKAGES]
    return imports


def test_the_search_sees_imports():
    """The check below means something: it finds the imports that do exist, lazy ones too."""
    found = {(where.split(":")[0], module) for package in PACKAGES for where, module in project_imports(package)}
    assert {
        ("gateway/retraining.py", "training.client"),
        ("gateway/command.py", "gateway.app"),  # inside a function
        ("workers/analysis.py", "ingest.crop"),
    } <= found


def test_no_package_imports_what_it_must_not():
    wrong = [
        f"{where} imports {module}"
        for package, forbidden in FORBIDDEN.items()
        for where, module in project_imports(package)
        if forbidden(module)
    ]
    assert wrong == []


def test_the_shared_contract_does_not_import_the_ingest_application():
    contract = [(where, module) for where, module in project_imports("ingest") if not where.startswith("ingest/app/")]
    assert (
        contract
        and [f"{where} imports {module}" for where, module in contract if module.startswith("ingest.app")] == []
    )


def request(method: str, url: str, body: object = None) -> int:
    """The status of one JSON request."""
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, method=method), timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_a_gateway_process_loads_neither_tensorflow_nor_keras(redis_server, tmp_path):
    env, report = modules_at_exit(tmp_path / "probe")
    with GatewayProcess(redis_server.url, EMOSTREAM_MODEL_STORE=str(tmp_path / "store"), **env) as gateway:
        answers = {
            f"{method} {path}": request(method, f"{gateway.url}{path}", body)
            for method, path, body in (
                ("GET", "/", None),
                ("GET", "/api/models", None),
                ("GET", "/api/models/live/card", None),
                ("GET", "/api/training-jobs", None),
                ("POST", "/api/training-jobs", {"epochs": 1}),
                ("POST", "/api/feedback", {}),
                ("GET", "/api/targets", None),
                ("GET", "/metrics", None),
            )
        }
        tensorflow = loads_tensorflow(gateway.process.pid)
    assert gateway.process.returncode == 0, "a gateway stopped by SIGTERM exits normally (and reports its modules)"
    imported = json.loads(report.read_text())
    assert answers == {
        "GET /": 200,
        "GET /api/models": 200,
        "GET /api/models/live/card": 200,
        "GET /api/training-jobs": 200,
        "POST /api/training-jobs": 503,  # no trainer
        "POST /api/feedback": 403,  # capture is off
        "GET /api/targets": 200,
        "GET /metrics": 200,
    }
    assert "training.client" in imported and "gateway.retraining" in imported, "the probe saw the gateway's modules"
    assert [m for m in imported if m.split(".")[0] in ("tensorflow", "keras", "tf_keras")] == []
    assert not tensorflow, "TensorFlow's library is not even mapped"
