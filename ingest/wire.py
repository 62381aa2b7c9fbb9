"""The wire format of frames and results in Redis: the one module every producer and consumer imports.

A frame is one entry of the frames stream (see :mod:`ingest.keys`); its fields are::

    v       wire version (WIRE_VERSION)
    stream  the camera stream's id
    seq     index of the frame among those sent on its stream (0-based, consecutive: workers
            read a gap as frames another worker took, and search the next frame whole)
    ts      capture time, seconds since the epoch (float)
    scale   source pixels per frame pixel (the frame may be downscaled before sending)
    enc     "jpeg" (grayscale JPEG) or "gray" (raw 8-bit grayscale, row-major)
    w, h    frame size in pixels
    reply   the results stream the worker answers on
    data    the encoded pixels

A result is one entry of a reply stream with fields ``v`` and ``json``; the JSON object is
exactly one line of ``emostream ingest --out``::

    {"stream", "seq", "ts", "model_version", "faces": [{"box": [x, y, w, h], "label", "score",
     "scores": {class: p}, "track", "smoothed"}], "worker", "timings": {"detect_s", "classify_s",
     "queue_s", "batch_faces", "batch_frames"}, "size": [w, h]}

with boxes in pixels of the source frame, whose size is ``size``. Workers answer each frame alone, so their faces have
``track`` and ``smoothed`` null; the reader of a stream's results in order (the gateway,
``emostream ingest``) sets them with :class:`ingest.tracks.StreamTracks`.
"""

import json
import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, cast

import cv2
import numpy as np

from emostream.labels import EMOTIONS

WIRE_VERSION = 1
MAX_SIDE = 4096
"""Largest frame side accepted on the wire."""
MAX_SCALE = 1024.0
"""Most source pixels per frame pixel (``frame_width`` may be as low as 32 for an 8K source): boxes
times it stay far from any integer's limit."""


def wire_size(width: int, height: int, max_width: int) -> tuple[int, int]:
    """The size a ``width`` x ``height`` source is sent at: at most ``max_width`` wide and no side over
    :data:`MAX_SIDE`, its aspect kept, never enlarged."""
    shrink = max(1.0, width / max_width, width / MAX_SIDE, height / MAX_SIDE)
    return max(1, round(width / shrink)), max(1, round(height / shrink))


class WireError(ValueError):
    """A frame or result entry that cannot be decoded."""


class Encoding(StrEnum):
    JPEG = "jpeg"
    GRAY = "gray"


@dataclass(frozen=True)
class Frame:
    """One grayscale frame of one stream, as workers receive it."""

    stream: str
    seq: int
    ts: float
    image: np.ndarray
    reply: str
    scale: float = 1.0

    def encode(self, encoding: Encoding = Encoding.JPEG, quality: int = 85) -> dict[str, bytes | str]:
        """Redis stream fields for this frame (CPU work: run it off the event loop)."""
        image = self.image
        if image.ndim != 2 or image.dtype != np.uint8:
            raise WireError(f"frames are 2-D uint8 grayscale, got {image.dtype} {image.shape}")
        if encoding is Encoding.JPEG:
            ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise WireError("JPEG encoding failed")
            data = buffer.tobytes()
        else:
            data = np.ascontiguousarray(image).tobytes()
        return {
            "v": str(WIRE_VERSION),
            "stream": self.stream,
            "seq": str(self.seq),
            "ts": repr(self.ts),
            "scale": repr(self.scale),
            "enc": encoding.value,
            "w": str(image.shape[1]),
            "h": str(image.shape[0]),
            "reply": self.reply,
            "data": data,
        }

    @classmethod
    def decode(cls, fields: dict) -> "Frame":
        """Parse and validate a frames-stream entry, as Redis returns it (bytes keys) or as
        :meth:`encode` made it (str keys); raises :class:`WireError` naming the problem."""
        get = _getter(fields)
        if get("v") != str(WIRE_VERSION):
            raise WireError(f"unsupported wire version {get('v')!r} (this side speaks {WIRE_VERSION})")
        width, height = _int(get("w"), "w"), _int(get("h"), "h")
        if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
            raise WireError(f"frame size {width}x{height} outside 1..{MAX_SIDE}")
        data = fields.get(b"data", fields.get("data", b""))
        encoding = get("enc")
        if encoding == Encoding.JPEG:
            size = jpeg_size(data)  # checked before decoding: a small file may claim a huge image
            if size is None:
                raise WireError("frame data is not a JPEG")
            if size != (width, height):
                raise WireError(f"JPEG is {size[0]}x{size[1]}, header says {width}x{height}")
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
            if image is None:
                raise WireError("JPEG data does not decode")
        elif encoding == Encoding.GRAY:
            if len(data) != width * height:
                raise WireError(f"raw frame has {len(data)} bytes, expected {width * height}")
            image = np.frombuffer(data, np.uint8).reshape(height, width)
        else:
            raise WireError(f"unknown encoding {encoding!r}")
        scale = _float(get("scale"), "scale")
        if not 0 < scale <= MAX_SCALE:
            raise WireError(f"scale must be within 0..{MAX_SCALE} (source pixels per frame pixel), got {scale}")
        return cls(get("stream"), _int(get("seq"), "seq"), _float(get("ts"), "ts"), image, get("reply"), scale)


@dataclass
class Face:
    """One labelled face; ``box`` is ``[x, y, w, h]`` in source-frame pixels."""

    box: list[int]
    label: str
    score: float
    scores: dict[str, float]
    track: int | None = None
    """Same for the same face from result to result of a stream (set by :mod:`ingest.tracks`)."""
    smoothed: dict | None = None
    """``{"label", "score", "scores"}`` of the face's track, smoothed over time (set by :mod:`ingest.tracks`)."""

    @property
    def shown(self) -> tuple[str, float]:
        """The label and score to show: the smoothed ones when the face has a track."""
        if self.smoothed:
            return self.smoothed["label"], self.smoothed["score"]
        return self.label, self.score

    @classmethod
    def from_json(cls, raw: object) -> "Face":
        """A face as a worker wrote it; :class:`WireError` names the first field of the wrong shape."""
        raw = _object(raw, "a face")
        box, scores = raw.get("box"), _object(raw.get("scores"), "a face's scores")
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
            raise WireError(f"a face's box must be 4 numbers [x, y, w, h], got {box!r}")
        if not all(_is_number(v) for v in scores.values()):
            raise WireError(f"a face's scores must be numbers, got {scores!r}")
        if not isinstance(raw.get("label"), str) or not _is_number(raw.get("score")):
            raise WireError(f"a face needs a label (text) and a score (number), got {raw.get('label')!r}")
        track, smoothed = raw.get("track"), raw.get("smoothed")
        if not (track is None or (isinstance(track, int) and not isinstance(track, bool))):
            raise WireError(f"a face's track must be an integer, got {track!r}")
        smoothed = None if smoothed is None else _object(smoothed, "a face's smoothed label")
        return cls([int(v) for v in box], raw["label"], float(raw["score"]), scores, track, smoothed)

    @classmethod
    def from_scores(cls, box: list[int], probabilities: np.ndarray) -> "Face":
        best = int(np.argmax(probabilities))
        scores = {name: round(float(p), 4) for name, p in zip(EMOTIONS, probabilities, strict=True)}
        return cls([int(v) for v in box], EMOTIONS[best], scores[EMOTIONS[best]], scores)


@dataclass
class Result:
    """The labels of one frame."""

    stream: str
    seq: int
    ts: float
    model_version: str
    faces: list[Face] = field(default_factory=list)
    worker: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    size: list[int] | None = None
    """``[width, height]`` of the source frame the boxes are in pixels of (a drawer scales by it)."""

    def to_json(self) -> dict:
        return asdict(self)

    def encode(self) -> dict[str, str]:
        return {"v": str(WIRE_VERSION), "json": json.dumps(self.to_json(), separators=(",", ":"))}

    @classmethod
    def from_json(cls, raw: object) -> "Result":
        """A result as a worker wrote it; anything of another shape is a :class:`WireError`."""
        raw = _object(raw, "a result")
        faces, size = raw.get("faces", []), raw.get("size")
        if not isinstance(faces, list):
            raise WireError(f"a result's faces must be a list, got {type(faces).__name__}")
        if size is not None and not (isinstance(size, list) and len(size) == 2 and all(map(_is_number, size))):
            raise WireError(f"a result's size must be [width, height], got {size!r}")
        stream, model_version, worker = (raw.get(name, "") for name in ("stream", "model_version", "worker"))
        if not (stream and model_version and all(isinstance(t, str) for t in (stream, model_version, worker))):
            raise WireError(f"a result needs a stream and a model_version (text), got {stream!r}, {model_version!r}")
        seq, ts = raw.get("seq"), raw.get("ts")
        if not (isinstance(seq, int) and not isinstance(seq, bool) and _is_number(ts)):
            raise WireError(f"a result needs a seq (integer) and a ts (number), got {seq!r}, {ts!r}")
        timings = _object(raw.get("timings", {}), "a result's timings")
        return cls(
            stream, seq, float(raw["ts"]), model_version, [Face.from_json(f) for f in faces], worker, timings, size
        )

    @classmethod
    def decode(cls, fields: dict[bytes, bytes]) -> "Result":
        get = _getter(fields)
        if get("v") != str(WIRE_VERSION):
            raise WireError(f"unsupported wire version {get('v')!r} (this side speaks {WIRE_VERSION})")
        try:
            raw = json.loads(get("json"))
        except (ValueError, RecursionError) as err:  # not JSON, an integer too long, nesting too deep
            raise WireError(f"result is not JSON that can be read: {err}") from None
        return cls.from_json(raw)


Entry = tuple[bytes, dict[bytes, bytes]]
"""A stream entry as read from Redis: its id and its fields (bytes: clients here do not decode replies)."""


def read_entries(reply: object) -> list[Entry]:
    """The entries of an XREAD or XREADGROUP reply on one stream: ``[[stream, entries]]``, or nothing (``None``
    or empty) when the read timed out. redis-py types the reply for RESP3 too (a dict); clients here speak RESP2."""
    return cast(list[list[Any]], reply)[0][1] if reply else []


SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
"""JPEG start-of-frame markers (baseline, progressive, ...), the segment holding the image's size."""


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame segment, without decoding; None if ``data`` is no JPEG."""
    if data[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 9 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in SOF_MARKERS:
            height, width = int.from_bytes(data[at + 5 : at + 7], "big"), int.from_bytes(data[at + 7 : at + 9], "big")
            return width, height
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return None


def _getter(fields: dict[bytes, bytes]):
    def get(name: str) -> str:
        value = fields.get(name.encode(), fields.get(name))  # type: ignore[call-overload]
        if value is None:
            raise WireError(f"missing field {name!r}")
        try:
            return value.decode() if isinstance(value, bytes) else str(value)
        except UnicodeDecodeError:
            raise WireError(f"field {name!r} is not UTF-8 text") from None

    return get


def _object(value: object, what: str) -> dict:
    if not isinstance(value, dict):
        raise WireError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _is_number(value: object) -> bool:
    """A JSON number a float can hold: not a bool, not infinite, not an integer beyond a float's range."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise WireError(f"field {name!r} is not an integer: {text!r}") from None


def _float(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise WireError(f"field {name!r} is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise WireError(f"field {name!r} is not finite")
    return value
