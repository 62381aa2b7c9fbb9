"""A local Prometheus with the shipped configuration (deploy/prometheus/) for ``emostream up --prometheus``.

The shipped ``prometheus.yml`` discovers its targets at the compose gateway
(``http://gateway:8080/api/targets``); :func:`render_config` points it at another gateway and
:func:`start_prometheus` runs the ``prometheus`` binary on it.
"""

import shutil
import subprocess
from pathlib import Path

from emostream.children import tied

CONFIG_DIR = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
"""The shipped configuration: prometheus.yml and rules/ (present in a source checkout)."""
COMPOSE_GATEWAY = "http://gateway:8080"
COMPOSE_SELF = "localhost:9090"
INSTALL_HINT = (
    "prometheus not found on PATH: install it (Debian/Ubuntu: `sudo apt-get install prometheus`, "
    "macOS: `brew install prometheus`, or a release from prometheus.io/download)"
)


def render_config(gateway_url: str, port: int, config_dir: Path = CONFIG_DIR) -> str:
    """The shipped prometheus.yml with its targets discovered at ``gateway_url`` and itself on ``port``."""
    source = config_dir / "prometheus.yml"
    if not source.is_file():
        raise FileNotFoundError(f"{source} not found: --prometheus needs a source checkout of emostream")
    text = source.read_text()
    if COMPOSE_GATEWAY not in text:
        raise ValueError(f"{source} no longer names {COMPOSE_GATEWAY}; cannot point it at {gateway_url}")
    return text.replace(COMPOSE_GATEWAY, gateway_url.rstrip("/")).replace(COMPOSE_SELF, f"127.0.0.1:{port}")


def start_prometheus(gateway_url: str, port: int, data_dir: str | Path) -> subprocess.Popen:
    """Run ``prometheus`` on ``127.0.0.1:port``, scraping what ``gateway_url``/api/targets lists.

    ``data_dir`` receives the rendered configuration, a copy of the rules and the TSDB. Raises
    :class:`FileNotFoundError` with an install hint when the binary is missing.
    """
    binary = shutil.which("prometheus")
    if binary is None:
        raise FileNotFoundError(INSTALL_HINT)
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "prometheus.yml"
    config.write_text(render_config(gateway_url, port))
    shutil.copytree(CONFIG_DIR / "rules", data_dir / "rules", dirs_exist_ok=True)  # rule_files are relative
    return subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={data_dir / 'tsdb'}",
            "--storage.tsdb.retention.time=1d",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        **tied(),
    )
