"""The wire format: frames and results round-trip, and every malformed entry is named."""

import json

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
        ({"scale": "-1"}, "scale must be within 0..1024"),
        ({"scale": "1e306"}, "scale must be within 0..1024"),  # boxes times it would overflow an integer
        ({"ts": "nan"}, "field 'ts' is not finite"),
        ({"stream": b"\xff"}, "field 'stream' is not UTF-8 text"),
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
    with pytest.raises(WireError, match="frame data is not a JPEG"):
        Frame.decode(_as_redis({**fields, "data": b"not a jpeg"}))
    with pytest.raises(WireError, match="JPEG data does not decode"):
        Frame.decode(_as_redis({**fields, "data": fields["data"][: fields["data"].index(b"\xff\xc4")]}))
    # a small file claiming a huge picture is refused by its header, before anything is decoded
    bomb = (
        Frame("cam", 0, 1.0, np.zeros((8, 8), np.uint8), "r")
        .encode(Encoding.JPEG)["data"]
        .replace(b"\xff\xc0\x00\x0b\x08\x00\x08\x00\x08", b"\xff\xc0\x00\x0b\x08\x40\x00\x40\x00")
    )
    with pytest.raises(WireError, match="JPEG is 16384x16384, header says 8x8"):
        Frame.decode(_as_redis({**fields, "data": bomb}))
    with pytest.raises(WireError, match="2-D uint8 grayscale"):
        Frame("cam", 0, 1.0, np.zeros((8, 8, 3), np.uint8), "r").encode()


def test_results_round_trip_and_name_bad_entries():
    face = Face.from_scores([1, 2, 3, 4], np.array([0.1, 0.0, 0.0, 0.7, 0.1, 0.05, 0.05]))
    assert face.label == "happy" and face.score == 0.7
    result = Result("cam", 3, 9.5, "v1", [face], "w", {"detect_s": 0.01}, [640, 480])
    assert Result.decode(_as_redis(result.encode())) == result
    for unreadable in (b"{", b"[" * 100_000, b"1" * 5_000):  # not JSON, nested too deep, an integer too long
        with pytest.raises(WireError, match="result is not JSON that can be read"):
            Result.decode({b"v": str(WIRE_VERSION).encode(), b"json": unreadable})
    with pytest.raises(WireError, match="field 'json' is not UTF-8 text"):
        Result.decode({b"v": str(WIRE_VERSION).encode(), b"json": b'{"stream": "\xff"}'})
    with pytest.raises(WireError, match="needs a stream and a model_version"):
        Result.decode({b"v": str(WIRE_VERSION).encode(), b"json": b'{"stream": "x"}'})


GOOD_RESULT = {"stream": "cam", "seq": 3, "ts": 9.5, "model_version": "v1", "faces": [], "size": [640, 480]}
GOOD_FACE = {"box": [1, 2, 3, 4], "label": "happy", "score": 0.7, "scores": {"happy": 0.7}}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "a result must be a JSON object, got list"),
        (None, "a result must be a JSON object, got NoneType"),
        ({**GOOD_RESULT, "seq": "3"}, "seq"),
        ({**GOOD_RESULT, "ts": None}, "ts"),
        ({**GOOD_RESULT, "ts": 10**400}, "ts"),  # beyond a float
        ({**GOOD_RESULT, "model_version": 7}, "model_version"),
        ({**GOOD_RESULT, "faces": {}}, "faces must be a list"),
        ({**GOOD_RESULT, "size": [640]}, r"size must be \[width, height\]"),
        ({**GOOD_RESULT, "timings": [1]}, "timings must be a JSON object"),
        ({**GOOD_RESULT, "faces": ["face"]}, "a face must be a JSON object"),
        ({**GOOD_RESULT, "faces": [{**GOOD_FACE, "box": [1, 2, 3]}]}, "box must be 4 numbers"),
        ({**GOOD_RESULT, "faces": [{**GOOD_FACE, "box": [1, 2, 3, True]}]}, "box must be 4 numbers"),
        ({**GOOD_RESULT, "faces": [{**GOOD_FACE, "scores": [0.7]}]}, "scores must be a JSON object"),
        ({**GOOD_RESULT, "faces": [{**GOOD_FACE, "scores": {"happy": "high"}}]}, "scores must be numbers"),
        ({**GOOD_RESULT, "faces": [{**GOOD_FACE, "label": None}]}, "needs a label"),
        ({**GOOD_RESULT, "faces": [{**GOOD_FACE, "track": "1"}]}, "track must be an integer"),
        ({**GOOD_RESULT, "faces": [{**GOOD_FACE, "smoothed": [1]}]}, "smoothed label must be a JSON object"),
    ],
)
def test_a_result_of_the_wrong_shape_is_a_wire_error_naming_it(raw, message):
    """Whatever a writer of the reply stream puts there, readers get a WireError, never another exception."""
    tracked = {**GOOD_FACE, "track": 3, "smoothed": {"label": "happy", "score": 0.6, "scores": {"happy": 0.6}}}
    good = {**GOOD_RESULT, "faces": [tracked], "worker": "w", "timings": {"detect_s": 0.01}}
    assert Result.from_json(good).to_json() == good, "what readers pass on (tracks included) round-trips"
    with pytest.raises(WireError, match=message):
        Result.decode({b"v": str(WIRE_VERSION).encode(), b"json": json.dumps(raw).encode()})
