"""The far ends of a frame's path, speaking the real protocols: workers on a real Redis, an HTTP camera.

``StubbedWorker`` is the real :class:`workers.worker.Worker` (consumer-group reads, batching, the
publish-and-ack script, heartbeats) in a thread, with its two models stubbed: ``ScriptedFaces``
finds the faces a test names in every frame and scores them as the test says, without TensorFlow
or LiteRT. ``MjpegCamera`` is an IP camera serving Motion-JPEG over HTTP, which OpenCV reads like
any network stream.
"""

import http.server
import itertools
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np
import redis

from emostream.config import Settings
from emostream.labels import EMOTIONS
from ingest.wire import Face, Frame, Result
from workers.detect import Box, FrameKey
from workers.worker import Batch, Worker

MODEL = "stand-in"
"""The model version every :class:`ScriptedFaces` answer names."""

FacesOf = Callable[[np.ndarray, FrameKey | None], list[Face]]
"""A frame's faces (boxes in frame pixels) from its grayscale image and its (stream, seq)."""


def read_results(client: redis.Redis, key: str, count: int, timeout: float = 60.0) -> list[Result]:
    """The results on reply stream ``key`` once ``count`` are in, or whatever came by ``timeout``
    seconds (read in short blocks: redis-py 8 gives clients a 5 s socket timeout by default)."""
    out: list[Result] = []
    last, deadline = "0", time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        for _, entries in client.xread({key: last}, block=500) or []:
            for entry_id, fields in entries:
                out.append(Result.decode(fields))
                last = entry_id
    return out


def whole_frame(gray: np.ndarray, key: FrameKey | None = None) -> list[Face]:
    """One happy face filling the frame (the worker maps its box back to source pixels)."""
    height, width = gray.shape
    scores = np.full(len(EMOTIONS), 0.01)
    scores[EMOTIONS.index("happy")] = 0.94
    return [Face.from_scores([0, 0, width, height], scores)]


class ScriptedFaces:
    """Detector and classifier in one: each frame holds ``faces`` (a list, or a :data:`FacesOf`), and
    each face is scored with the scores it names.

    The worker detects every frame of a batch in order, then classifies all their crops in one call
    (:func:`workers.analysis.analyse`); detection queues each face's scores, classification hands the
    queue back. ``delay`` seconds per frame make a slow detector.
    """

    version = MODEL
    architecture = "scripted"

    def __init__(self, faces: list[Face] | FacesOf, delay: float = 0.0) -> None:
        self.faces_of: FacesOf = faces if callable(faces) else lambda gray, key: faces
        self.delay = delay
        self._scores: list[list[float]] = []

    def detect(self, gray: np.ndarray, key: FrameKey | None = None) -> list[Box]:
        time.sleep(self.delay)
        faces = self.faces_of(gray, key)
        self._scores += [[face.scores[name] for name in EMOTIONS] for face in faces]
        return [tuple(face.box) for face in faces]

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        scores, self._scores = self._scores, []
        if len(scores) != len(crops):
            raise AssertionError(f"{len(crops)} crops to classify for {len(scores)} scripted faces")
        return np.array(scores, np.float32).reshape(len(crops), len(EMOTIONS))


class FixedModel:
    """What a worker asks of :class:`workers.classify.LiveModel`, with one version that never changes."""

    def __init__(self, classifier: ScriptedFaces) -> None:
        self.classifier = classifier
        self.refusals = 0

    def refresh(self, force: bool = False) -> bool:
        return False


_names = itertools.count()


class StubbedWorker(Worker):
    """The real worker answering every frame with ``faces`` (see :class:`ScriptedFaces`), in a thread
    that ``with`` starts and stops; an error that stopped it is raised on leaving the ``with``.

    ``lose`` maps a seq to how many of its deliveries to acknowledge unanswered, as the worker does
    with a frame too old to label: the producer must send it again.
    """

    def __init__(
        self,
        url: str,
        settings: Settings,
        faces: list[Face] | FacesOf = whole_frame,
        lose: dict[int, int] | None = None,
        delay: float = 0.0,
    ) -> None:
        scripted = ScriptedFaces(faces, delay)
        name = f"stubbed-{next(_names)}"
        super().__init__(settings, redis.Redis.from_url(url), scripted, FixedModel(scripted), name=name)
        self.lose = dict(lose or {})
        self.delivered: list[Frame] = []
        """Every fresh frame delivered, answered or lost."""
        self.answered = 0
        self.max_backlog = 0
        """Most entries in the frames stream (queued or in work) when a batch was in hand."""
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.run()
        except BaseException as err:
            self.error = err

    def process(self, batch: Batch) -> list[Result]:
        self.max_backlog = max(self.max_backlog, self.redis.xlen(self.keys.frames))
        self.delivered += batch.frames
        kept = [(i, frame) for i, frame in zip(batch.frame_ids, batch.frames, strict=True) if not self._loses(frame)]
        batch.frame_ids, batch.frames = [i for i, _ in kept], [frame for _, frame in kept]  # the rest: acked unanswered
        results = super().process(batch)
        self.answered += len(results)
        return results

    def _loses(self, frame: Frame) -> bool:
        if self.lose.get(frame.seq, 0) > 0:
            self.lose[frame.seq] -= 1
            return True
        return False

    def __enter__(self) -> "StubbedWorker":
        self.ensure_group()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._thread.join(10)
        self.redis.close()
        if self.error:
            raise self.error


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
