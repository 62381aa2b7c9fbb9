"""Face tracks and smoothed labels on synthetic sequences of results (no model, no I/O)."""

from itertools import pairwise

import numpy as np

from emostream.labels import EMOTIONS
from ingest.tracks import StreamTracks
from ingest.wire import Face, Result

RATE = 10.0
"""Results a second, as the gateway samples."""


def scores_for(label: str, confidence: float, rng: np.random.Generator | None = None, noise: float = 0.0) -> dict:
    """Scores leading with ``label`` at about ``confidence``, the rest shared, with optional noise."""
    p = np.full(len(EMOTIONS), (1 - confidence) / (len(EMOTIONS) - 1))
    p[EMOTIONS.index(label)] = confidence
    if rng is not None and noise:
        p = np.clip(p + rng.normal(0, noise, p.shape), 1e-4, None)
    p /= p.sum()
    return {name: float(v) for name, v in zip(EMOTIONS, p, strict=True)}


def face_at(box: tuple[int, int, int, int], scores: dict) -> Face:
    label = max(scores, key=scores.get)
    return Face(list(box), label, scores[label], scores)


def results(frames: list[list[Face]], start_seq: int = 0) -> list[Result]:
    return [Result("s", start_seq + i, (start_seq + i) / RATE, "m", faces) for i, faces in enumerate(frames)]


def run(frames: list[list[Face]], tracks: StreamTracks | None = None) -> list[Result]:
    tracks = tracks or StreamTracks()
    return [tracks.update(result) for result in results(frames)]


def test_a_steady_noisy_face_keeps_one_track_and_its_smoothed_label_flickers_far_less_than_the_raw_one():
    rng = np.random.default_rng(0)
    # a face whose raw top two scores (sad, neutral) are close: the raw label flickers
    frames = []
    for _ in range(200):
        p = np.array(list(scores_for("sad", 0.40).values()))
        p[EMOTIONS.index("neutral")] = 0.34
        p = np.clip(p + rng.normal(0, 0.06, p.shape), 1e-4, None)
        scores = dict(zip(EMOTIONS, (p / p.sum()).tolist(), strict=True))
        jitter = rng.integers(-3, 4, 2)
        frames.append([face_at((200 + jitter[0], 100 + jitter[1], 150, 150), scores)])
    out = run(frames)
    raw = [r.faces[0].label for r in out]
    smoothed = [r.faces[0].smoothed["label"] for r in out]
    changes = lambda labels: sum(a != b for a, b in pairwise(labels))  # noqa: E731

    assert {r.faces[0].track for r in out} == {1}
    assert changes(raw) >= 20, "the raw label flickers (the test's premise)"
    assert changes(smoothed) * 3 <= changes(raw)
    assert smoothed.count("sad") > raw.count("sad"), "smoothing keeps the face's true leader more often"
    assert [r.faces[0].label for r in out] == raw and all(r.faces[0].scores for r in out), "raw values stay"


def test_a_real_change_of_expression_shows_within_three_results():
    frames = [[face_at((100, 100, 120, 120), scores_for("happy", 0.8))]] * 20
    frames += [[face_at((100, 100, 120, 120), scores_for("surprise", 0.8))]] * 10
    out = run(frames)
    shown = [r.faces[0].smoothed["label"] for r in out]

    assert shown[:20] == ["happy"] * 20
    assert shown.index("surprise") - 20 <= 2, "shown by the third result after the change (200 ms at 10/s)"
    assert shown[23:] == ["surprise"] * 7
    assert {r.faces[0].track for r in out} == {1}, "the same face, a new expression: the same track"


def test_a_missed_frame_keeps_the_track_and_a_face_arriving_after_one_left_gets_a_new_one():
    box = (300, 120, 140, 140)
    face = lambda: face_at(box, scores_for("neutral", 0.7))  # noqa: E731
    frames = [[face()]] * 5 + [[]] * 2 + [[face()]] * 5  # missed for 0.2 s
    frames += [[]] * 10 + [[face_at(box, scores_for("angry", 0.7))]] * 3  # gone 1 s, then someone else there
    out = run(frames)
    tracks = [r.faces[0].track if r.faces else None for r in out]

    assert tracks[:5] == [1] * 5 and tracks[7:12] == [1] * 5
    assert tracks[22:] == [2] * 3
    assert out[22].faces[0].smoothed["label"] == "angry", "a new track starts from its own scores"


def test_two_faces_crossing_keep_their_tracks():
    frames = []
    for step in range(30):  # one moves right, the other left, 20 px per result; they overlap mid-way
        left = face_at((100 + 20 * step, 150, 120, 120), scores_for("happy", 0.8))
        right = face_at((680 - 20 * step, 160, 120, 120), scores_for("sad", 0.8))
        frames.append([right, left] if step % 2 else [left, right])
    out = run(frames)
    happy_tracks = {f.track for r in out for f in r.faces if f.label == "happy"}
    sad_tracks = {f.track for r in out for f in r.faces if f.label == "sad"}

    assert len(happy_tracks) == 1 and len(sad_tracks) == 1 and happy_tracks != sad_tracks
    assert all(f.smoothed["label"] == f.label for r in out for f in r.faces)


def test_a_late_result_is_labelled_from_the_tracks_without_changing_them():
    tracks = StreamTracks()
    box = (100, 100, 120, 120)
    for result in results([[face_at(box, scores_for("happy", 0.8))]] * 5):
        tracks.update(result)
    late = Result(
        "s", 2, 0.2, "m", [face_at(box, scores_for("fear", 0.9)), face_at((500, 50, 80, 80), scores_for("sad", 0.9))]
    )
    tracks.update(late)
    after = tracks.update(Result("s", 5, 0.5, "m", [face_at(box, scores_for("happy", 0.8))]))

    assert late.faces[0].track == 1 and late.faces[0].smoothed["label"] == "happy"
    assert late.faces[1].track not in (None, 1) and late.faces[1].smoothed["label"] == "sad"
    assert after.faces[0].track == 1 and after.faces[0].smoothed["scores"]["fear"] < 0.1, "the late fear left no trace"


def test_smoothing_follows_capture_time_not_result_count():
    box = (100, 100, 120, 120)
    slow, fast = StreamTracks(), StreamTracks()
    before, after = scores_for("happy", 0.9), scores_for("sad", 0.9)
    slow.update(Result("s", 0, 0.0, "m", [face_at(box, before)]))
    slow_after = slow.update(Result("s", 1, 0.4, "m", [face_at(box, after)]))
    fast.update(Result("s", 0, 0.0, "m", [face_at(box, before)]))
    for seq in range(1, 5):
        fast_after = fast.update(Result("s", seq, seq * 0.1, "m", [face_at(box, after)]))

    assert abs(slow_after.faces[0].smoothed["scores"]["sad"] - fast_after.faces[0].smoothed["scores"]["sad"]) < 0.02


def test_a_files_frames_sent_in_a_burst_are_tracked_at_their_media_time():
    """A file's frames are stamped when sent, microseconds apart; tracked at media time (30 fps) a
    jittering face keeps one track and a change of expression shows as it would live."""
    rng = np.random.default_rng(3)
    tracks, shown, ids = StreamTracks(), [], set()
    for seq in range(60):
        label = "happy" if seq < 20 else "sad"
        x, y = 200 + rng.integers(-2, 3), 120 + rng.integers(-2, 3)
        result = Result("file", seq, 1000.0 + seq * 1e-5, "m", [face_at((x, y, 140, 140), scores_for(label, 0.8))])
        (face,) = tracks.update(result, at=seq / 30).faces
        shown.append(face.smoothed["label"])
        ids.add(face.track)

    assert ids == {1}, "detector jitter over microseconds is no motion: one face, one track"
    assert shown[:20] == ["happy"] * 20 and shown.index("sad") <= 23 and shown[30:] == ["sad"] * 30
