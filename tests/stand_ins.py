"""The far ends of an ingest run, speaking the real protocols: a worker on a real Redis, an HTTP camera.

``StandInWorker`` reads the frames stream through the consumer group and answers on each frame's reply
stream exactly as workers do, without TensorFlow: every frame gets one face whose box is the whole frame
mapped back to source pixels (frame size times the frame's ``scale``). ``MjpegCamera`` is an IP camera
serving Motion-JPEG over HTTP, which OpenCV reads like any network stream.
"""

import http.server
import threading
import time

import cv2
import numpy as np
import redis

from emostream.config import Settings
from ingest.wire import Face, Frame, Result

MODEL = "stand-in"


class StandInWorker:
    """Context manager; ``ignore`` maps a seq to how many deliveries of it to drop unanswered."""

    def __init__(self, url: str, settings: Settings, ignore: dict[int, int] | None = None, delay: float = 0.0):
        self.client = redis.Redis.from_url(url)
        self.keys = settings.keys
        self.ignore = dict(ignore or {})
        self.delay = delay
        self.frames: list[Frame] = []
        """Every frame delivered, answered or not."""
        self.answered = 0
        self.max_backlog = 0
        """Most entries seen in the frames stream (queued or in work) at one read."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "StandInWorker":
        try:
            self.client.xgroup_create(self.keys.frames, self.keys.group, id="0", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self.max_backlog = max(self.max_backlog, self.client.xlen(self.keys.frames))
            read = self.client.xreadgroup(self.keys.group, "stand-in", {self.keys.frames: ">"}, count=1, block=50)
            for entry_id, fields in read[0][1] if read else []:
                frame = Frame.decode(fields)
                self.frames.append(frame)
                time.sleep(self.delay)
                pipe = self.client.pipeline(transaction=True)  # answer and dequeue at once: backlog stays exact
                if self.ignore.get(frame.seq, 0) > 0:
                    self.ignore[frame.seq] -= 1
                else:
                    pipe.xadd(frame.reply, self.answer(frame).encode())
                    self.answered += 1
                pipe.xack(self.keys.frames, self.keys.group, entry_id)
                pipe.xdel(self.keys.frames, entry_id)
                pipe.execute()

    @staticmethod
    def answer(frame: Frame) -> Result:
        height, width = frame.image.shape
        box = [0, 0, round(width * frame.scale), round(height * frame.scale)]
        scores = np.full(7, 0.01)
        scores[3] = 0.94  # happy
        return Result(frame.stream, frame.seq, frame.ts, MODEL, [Face.from_scores(box, scores)], "stand-in")


class MjpegCamera:
    """An HTTP Motion-JPEG camera on a free loopback port; each connection gets ``per_connection`` frames
    (then the camera hangs up, as a flaky one does), or frames until the camera stops."""

    def __init__(self, frames: list[np.ndarray], fps: float = 25.0, per_connection: int | None = None) -> None:
        jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in frames]
        stopped = self.stopped = threading.Event()
        self.connections = 0
        camera = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                camera.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                sent = 0
                while not stopped.is_set() and (per_connection is None or sent < per_connection):
                    jpeg = jpegs[sent % len(jpegs)]
                    head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                    try:
                        self.wfile.write(head + jpeg + b"\r\n")
                        self.wfile.flush()
                    except OSError:
                        return
                    sent += 1
                    time.sleep(1 / fps)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/video.mjpg"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "MjpegCamera":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()
