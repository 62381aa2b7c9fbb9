"""Label corrections from the page: ``POST /api/feedback`` stores the face as training data.

Body: :class:`gateway.bodies.Correction`, the result the user marked wrong (its stream, seq, box in
source pixels and predicted label, and model version) and the right label. The
face is cut from the frame it was seen in (kept by the stream's sampler: the last
:data:`~gateway.sampler.FRAMES_KEPT`, and those ``POST /api/feedback/hold`` asked it to keep while
the user picks) the way workers cut faces (:func:`ingest.crop.crop_face`),
and stored by :class:`FeedbackStore` as 48x48 crops in FER2013's ``<class>/`` folder layout, which a
retraining job can add beside FER2013 (``emostream retrain --extra-train DIR``, or
``"include_feedback"``): training reads the folder, never this module.

Only while the operator's switch (``settings.feedback``) is on: otherwise every correction is
answered 403 and nothing is stored; the samplers do not even keep frames.
"""

import asyncio
import json
import math
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
from aiohttp import web

from emostream.labels import EMOTIONS, FACE_SIZE
from gateway import access
from gateway.api import HUB, ApiError, read_body
from gateway.bodies import Correction, Held
from gateway.sampler import FRAMES_KEPT, TrackSampler
from gateway.session import Session
from ingest.crop import crop_face
from ingest.wire import Frame

routes = web.RouteTableDef()
HeldOrCorrection = TypeVar("HeldOrCorrection", Held, Correction)
OFF = "feedback capture is off (the operator's EMOSTREAM_FEEDBACK switch); nothing was stored"
ADDING = threading.Lock()
"""Faces are added one at a time (in threads off the event loop), so that the folder's limit holds."""
BOX_SLACK = 2
"""Frame pixels a box may reach past the frame's edges (boxes are rounded to source pixels)."""


class FeedbackDisabled(PermissionError):
    """Feedback capture is switched off: nothing is stored."""


class FeedbackFull(Exception):
    """The feedback folder holds as many faces as the operator allows: nothing more is stored."""


@dataclass(frozen=True)
class FeedbackStore:
    """Corrected faces under ``root``: ``<class>/feedback_*.png``, and ``feedback.jsonl`` saying what each
    replaced; :meth:`add` refuses unless ``enabled`` (the operator's consent switch), and once ``root``
    holds ``limit`` faces (0: no limit)."""

    root: Path
    enabled: bool = False
    limit: int = 0

    def add(self, face: np.ndarray, label: str, predicted: str, model_version: str) -> Path:
        """Store one corrected face; returns the image's path."""
        if not self.enabled:
            raise FeedbackDisabled("feedback capture is off (the operator's EMOSTREAM_FEEDBACK switch)")
        if label not in EMOTIONS:
            raise ValueError(f"unknown label {label!r}; expected one of {list(EMOTIONS)}")
        if face.shape != (FACE_SIZE, FACE_SIZE) or face.dtype != np.uint8:
            raise ValueError(f"a feedback face is a {FACE_SIZE}x{FACE_SIZE} uint8 crop, got {face.dtype} {face.shape}")
        with ADDING:
            return self._add(face, label, predicted, model_version)

    def _add(self, face: np.ndarray, label: str, predicted: str, model_version: str) -> Path:
        if self.limit and sum(self.count().values()) >= self.limit:
            raise FeedbackFull(
                f"the feedback folder holds {self.limit} faces, the most EMOSTREAM_FEEDBACK_MAX allows; "
                "nothing was stored until an operator trains on them and clears it"
            )
        folder = self.root / label
        folder.mkdir(parents=True, exist_ok=True)
        for name in EMOTIONS:  # the training loader wants every class folder, even empty
            (self.root / name).mkdir(exist_ok=True)
        name = f"feedback_{time.strftime('%Y%m%dT%H%M%S')}_{uuid.uuid4().hex[:8]}"
        path = folder / f"{name}.png"
        tmp = folder / f".{name}.png.tmp"
        ok, data = cv2.imencode(".png", face)
        if not ok:
            raise ValueError("could not encode the face as PNG")
        tmp.write_bytes(data.tobytes())
        tmp.rename(path)
        with (self.root / "feedback.jsonl").open("a") as log:
            log.write(
                json.dumps(
                    {
                        "file": str(path.relative_to(self.root)),
                        "label": label,
                        "predicted": predicted,
                        "model_version": model_version,
                        "at": time.time(),
                    }
                )
                + "\n"
            )
        return path

    def count(self) -> dict[str, int]:
        return {
            name: len(list((self.root / name).glob("*.png"))) if (self.root / name).is_dir() else 0 for name in EMOTIONS
        }


def decode(fields: dict[str, bytes | str]) -> Frame:
    """A frame from the fields the sampler queued."""
    return Frame.decode(fields)


def face_of(frame: Frame, box: Sequence[float]) -> np.ndarray:
    """The 48x48 face in ``box`` (source pixels) of ``frame``; :class:`ApiError` 400 if it is not in the frame."""
    x, y, w, h = (v / frame.scale for v in box)
    height, width = frame.image.shape
    if x < -BOX_SLACK or y < -BOX_SLACK or x + w > width + BOX_SLACK or y + h > height + BOX_SLACK:
        raise ApiError(
            400,
            f"box {list(box)} is not inside the {round(width * frame.scale)}x{round(height * frame.scale)} frame",
        )
    return crop_face(frame.image, (x, y, w, h))


def store(fields: dict[str, bytes | str], correction: Correction, feedback: FeedbackStore) -> Path:
    face = face_of(decode(fields), correction.box)
    return feedback.add(face, correction.label, correction.predicted, correction.model_version)


async def _read(request: web.Request, body: type[HeldOrCorrection]) -> HeldOrCorrection:
    """The request's body, once capture is on (else 403, whatever the body)."""
    if not request.app[HUB].settings.feedback:
        raise ApiError(403, OFF)
    return await read_body(request, body)


def _kept(request: web.Request, frame: Held) -> tuple[Session, TrackSampler, dict[str, bytes | str]]:
    """The session and sampler keeping ``frame``, and the frame's wire fields, once the request proves it
    owns the stream; 404 when the frame is no longer kept."""
    session = request.app[HUB].sessions.get(frame.stream)
    if session is not None:
        access.check_stream_key(request, session.key)
    sampler = session.sampler if session else None
    fields = sampler.kept(frame.seq) if sampler else None
    if session is None or sampler is None or fields is None:
        raise ApiError(
            404,
            f"frame {frame.seq} of stream {frame.stream!r} is no longer kept (only the last {FRAMES_KEPT} "
            "of an open stream, and those held for a correction, are); mark a newer result",
        )
    return session, sampler, fields


@routes.post("/api/feedback/hold")
async def hold(request: web.Request) -> web.Response:
    """Keep a frame while the user picks a correction of a face in it (the page asks when a picker opens)."""
    frame = await _read(request, Held)
    _, sampler, _ = _kept(request, frame)
    sampler.hold(frame.seq)
    return web.json_response({"stream": frame.stream, "seq": frame.seq, "held": True})


@routes.post("/api/feedback")
async def feedback(request: web.Request) -> web.Response:
    settings = request.app[HUB].settings
    correction = await _read(request, Correction)
    session, sampler, fields = _kept(request, correction)
    limit = session.corrections
    if limit.repeated(correction.seq, correction.box):
        raise ApiError(409, f"this face of frame {correction.seq} was corrected already; nothing more was stored")
    wait = limit.acquire()
    if wait:
        raise ApiError(429, "too many corrections from this stream", headers={"Retry-After": str(math.ceil(wait))})
    # remembered before it is stored: the same face sent twice at once is a repeat
    limit.record(correction.seq, correction.box, kept=sampler.kept_seqs())
    feedback_store = FeedbackStore(settings.feedback_dir, enabled=True, limit=settings.feedback_max)
    try:
        path = await asyncio.to_thread(store, fields, correction, feedback_store)
    except Exception as err:
        limit.forget(correction.seq, correction.box)
        if isinstance(err, FeedbackFull):
            raise ApiError(507, str(err)) from None
        raise
    return web.json_response({"stored": str(path), "label": correction.label}, status=201)
