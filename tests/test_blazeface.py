"""BlazeFace on LiteRT: the shipped file, anchors, decoding, suppression, and faces in real frames."""

import hashlib

import cv2
import numpy as np
import pytest
from clips import iou, make_clip, textured_frames, validation_faces

from emostream.labels import EMOTIONS
from workers.blazeface import (
    ANCHORS,
    INPUT,
    MODEL,
    MODEL_SHA256,
    BlazeFaceDetector,
    decode,
    fer_box,
    weighted_nms,
)


@pytest.fixture(scope="module")
def detector() -> BlazeFaceDetector:
    return BlazeFaceDetector()


def grays(frames: list[np.ndarray]) -> list[np.ndarray]:
    return [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]


def test_the_shipped_model_is_the_one_its_notice_names():
    assert hashlib.sha256(MODEL.read_bytes()).hexdigest() == MODEL_SHA256
    notice = (MODEL.parent / "NOTICE").read_text()
    assert MODEL_SHA256 in notice and "Apache License, Version 2.0" in notice and "MIT License" in notice


def test_anchors_cover_a_16_grid_twice_then_an_8_grid_six_times():
    assert ANCHORS.shape == (896, 2)
    assert np.allclose(ANCHORS[0], [1 / 32, 1 / 32]) and np.allclose(ANCHORS[1], ANCHORS[0])
    assert np.allclose(ANCHORS[2], [3 / 32, 1 / 32])
    assert np.allclose(ANCHORS[512], [1 / 16, 1 / 16]) and np.allclose(ANCHORS[517], ANCHORS[512])
    assert np.allclose(ANCHORS[-1], [15 / 16, 15 / 16])


def test_decode_places_a_box_relative_to_its_anchor_and_drops_low_scores():
    regressors = np.zeros((896, 16), np.float32)
    logits = np.full((896, 1), -10.0, np.float32)
    regressors[600, :4] = [12.8, -6.4, 32.0, 25.6]  # centre offset (0.1, -0.05), size (0.25, 0.2) of the square
    logits[600] = 3.0
    logits[10] = -0.5  # sigmoid 0.38: below the threshold
    boxes, scores = decode(regressors, logits, min_score=0.5)
    cx, cy = ANCHORS[600] + [0.1, -0.05]
    assert np.allclose(boxes, [[cx - 0.125, cy - 0.1, cx + 0.125, cy + 0.1]], atol=1e-6)
    assert np.allclose(scores, [1 / (1 + np.exp(-3.0))])


def test_weighted_nms_averages_a_cluster_by_score_and_keeps_separate_faces():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.6, 0.9, 0.7], np.float32)
    merged, kept = weighted_nms(boxes, scores, threshold=0.3)
    assert np.allclose(kept, [0.9, 0.7])
    assert np.allclose(merged[0], (boxes[0] * 0.6 + boxes[1] * 0.9) / 1.5)
    assert np.allclose(merged[1], boxes[2])
    empty, none = weighted_nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.3)
    assert empty.shape == (0, 4) and none.shape == (0,)


def test_fer_box_is_a_larger_square_lifted_towards_the_forehead():
    x, y, w, h = fer_box(100.0, 100.0, 200.0, 200.0)
    assert w == h == 120 and x == 90 and y < 90


def test_real_faces_are_found_where_they_were_placed(detector):
    faces = validation_faces(EMOTIONS, per_class=3, offset=60)
    for scale in (3, 4):
        frames, truth = make_clip(faces, len(faces), hold=1, scale=scale, sensor_noise=2)
        found = [detector.detect(g) for g in grays(frames)]
        pairs = zip(found, truth, strict=True)
        hits = sum(any(iou(box, placed[0].box) >= 0.5 for box in boxes) for boxes, placed in pairs)
        assert hits >= 0.9 * len(faces), f"{hits}/{len(faces)} faces found at {48 * scale} px"
        assert sum(len(boxes) for boxes in found) <= len(faces) + 1  # no crowd of extra boxes


def test_face_free_frames_yield_nothing(detector):
    assert [detector.detect(g) for g in grays(textured_frames(12))] == [[]] * 12


def test_tiles_find_small_faces_the_whole_frame_pass_misses():
    faces = validation_faces(EMOTIONS, per_class=3, offset=60)
    frames, truth = make_clip(faces, len(faces), hold=1, scale=2, sensor_noise=2)  # 96 px faces

    def found(tiles: int) -> int:
        detector = BlazeFaceDetector(tiles=tiles)
        return sum(
            any(iou(box, placed[0].box) >= 0.5 for box in detector.detect(g))
            for g, placed in zip(grays(frames), truth, strict=True)
        )

    whole, tiled = found(0), found(2)
    assert whole <= 0.2 * len(faces) and tiled >= 0.7 * len(faces), (whole, tiled)


def test_the_regions_of_a_full_pass_cover_the_frame(detector):
    regions = detector.regions(480, 640)
    assert regions[0] == (0.0, -80.0, 640)  # the letterboxed frame
    tiles = regions[1:]
    assert len(tiles) == 4 and all(side == 384 for _, _, side in tiles)
    assert min(x for x, _, _ in tiles) == 0 and max(x + s for x, _, s in tiles) == 640
    assert min(y for _, y, _ in tiles) == 0 and max(y + s for _, y, s in tiles) == 480
    assert BlazeFaceDetector(tiles=0).regions(480, 640) == regions[:1]


def test_near_search_refinds_a_moved_face_and_ignores_other_sizes(detector):
    faces = validation_faces(("happy",), per_class=1, offset=60)
    frames, truth = make_clip(faces, 1, scale=4, sensor_noise=2)
    gray = grays(frames)[0]
    placed = truth[0][0].box
    shifted = (placed[0] + 20, placed[1] - 10, placed[2], placed[3])
    [near] = detector.detect_near(gray, [shifted])
    assert near is not None and iou(near, placed) >= 0.5
    [too_big] = detector.detect_near(gray, [(placed[0] - 150, placed[1] - 150, 480, 480)], sizes=1.2)
    assert too_big is None
    assert detector.detect_near(gray, []) == []


def test_input_is_the_networks_square():
    assert BlazeFaceDetector().net.input_shape == (INPUT, INPUT, 3)
