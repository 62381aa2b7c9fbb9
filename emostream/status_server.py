"""``/metrics``, ``/healthz`` and ``/readyz`` over HTTP for processes without a web app (workers, trainer)."""

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from emostream.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger(__name__)


class StatusServer:
    """Serves in a daemon thread; ``ready()`` returns ``None`` when ready, else the reason it is not."""

    def __init__(
        self, metrics: Metrics, ready: Callable[[], str | None], host: str = "127.0.0.1", port: int = 0
    ) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, server.metrics.render(), CONTENT_TYPE)
                elif self.path == "/healthz":
                    self._send(200, b"ok\n")
                elif self.path == "/readyz":
                    reason = server.ready()
                    self._send(503, f"not ready: {reason}\n".encode()) if reason else self._send(200, b"ready\n")
                else:
                    self._send(404, b"not found\n")

            def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.metrics = metrics
        self.ready = ready
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="status-server", daemon=True)

    @property
    def address(self) -> str:
        host, port = self.httpd.socket.getsockname()[:2]  # what server_address holds once bound
        return f"{host}:{port}"

    def start(self) -> "StatusServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
