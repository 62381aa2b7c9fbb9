"""The wire format: frames and results round-trip, and every malformed entry is named."""

import numpy as np
import pytest

from ingest.wire import WIRE_VERSION, Encoding, Face, Frame, Result, WireError


def _as_redis(fields: dict) -> dict[bytes, bytes]:
    """Fields as redis-py returns them: bytes keys and values."""
    return {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}


@pytest.mark.parametrize("encoding", list(Encoding))
def test_frames_round_trip_from_redis_or_straight_from_encode(encoding):
    image = (np.arange(48 * 64) % 256).astype(np.uint8).reshape(48, 64)
    fields = Frame("cam", 7, 123.25, image, "reply", scale=2.5).encode(encoding, quality=100)
    for entry in (fields, _as_redis(fields)):
        frame = Frame.decode(entry)
        assert (frame.stream, frame.seq, frame.ts, frame.reply, frame.scale) == ("cam", 7, 123.25, "reply", 2.5)
        assert frame.image.shape == (48, 64)
        assert np.abs(frame.image.astype(int) - image).max() <= (0 if encoding is Encoding.GRAY else 8)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"v": "99"}, "unsupported wire version '99'"),
        ({"w": "x"}, "field 'w' is not an integer"),
        ({"w": "0"}, "outside 1..4096"),
        ({"enc": "png"}, "unknown encoding 'png'"),
        ({"data": b"short"}, "raw frame has 5 bytes, expected 64"),
        ({"scale": "-1"}, "scale must be positive"),
        ({"ts": "nan"}, "field 'ts' is not finite"),
    ],
)
def test_malformed_frames_are_named(change, message):
    fields = Frame("cam", 0, 1.0, np.zeros((8, 8), np.uint8), "r").encode(Encoding.GRAY)
    with pytest.raises(WireError, match=message):
        Frame.decode(_as_redis({**fields, **change}))


def test_missing_fields_and_undecodable_jpeg_are_named():
    fields = Frame("cam", 0, 1.0, np.zeros((8, 8), np.uint8), "r").encode(Encoding.JPEG)
    with pytest.raises(WireError, match="missing field 'reply'"):
        Frame.decode(_as_redis({k: v for k, v in fields.items() if k != "reply"}))
    with pytest.raises(WireError, match="JPEG data does not decode"):
        Frame.decode(_as_redis({**fields, "data": b"not a jpeg"}))
    with pytest.raises(WireError, match="2-D uint8 grayscale"):
        Frame("cam", 0, 1.0, np.zeros((8, 8, 3), np.uint8), "r").encode()


def test_results_round_trip_and_name_bad_entries():
    face = Face.from_scores([1, 2, 3, 4], np.array([0.1, 0.0, 0.0, 0.7, 0.1, 0.05, 0.05]))
    assert face.label == "happy" and face.score == 0.7
    result = Result("cam", 3, 9.5, "v1", [face], "w", {"detect_s": 0.01}, [640, 480])
    assert Result.decode(_as_redis(result.encode())) == result
    with pytest.raises(WireError, match="result is not JSON"):
        Result.decode({b"v": str(WIRE_VERSION).encode(), b"json": b"{"})
    with pytest.raises(WireError, match="malformed result"):
        Result.decode({b"v": str(WIRE_VERSION).encode(), b"json": b'{"stream": "x"}'})
