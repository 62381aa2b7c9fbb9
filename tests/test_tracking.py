"""Following faces along a stream: full passes only when needed, the same faces found."""

import itertools

import cv2
import numpy as np
import pytest
from clips import iou, validation_faces

from workers.blazeface import BlazeFaceDetector
from workers.haar import HaarDetector
from workers.tracking import FaceTracker

SIDE = 192


@pytest.fixture(scope="module", params=[BlazeFaceDetector, HaarDetector], ids=["blazeface", "haar"])
def new_detector(request):
    """Every test runs with each detector: the tracker only needs ``detect`` and ``detect_near``."""
    return request.param


@pytest.fixture(scope="module")
def faces(new_detector) -> list[np.ndarray]:
    found = []
    detector = new_detector()
    for face, _ in validation_faces(("happy", "surprise", "neutral"), per_class=6):
        frame = scene([(face, (40, 140))], 0)
        if any(iou(box, (40, 140, SIDE, SIDE)) > 0.5 for box in detector.detect(frame)):
            found.append(face)
    assert len(found) >= 3, "the detector finds too few of these faces to test tracking"
    return found


def scene(placed: list[tuple[np.ndarray, tuple[int, int]]], seed: int) -> np.ndarray:
    """A 640x480 grey frame with camera noise and each face (upscaled x4) at its position."""
    rng = np.random.default_rng(seed)
    frame = np.tile(np.linspace(60, 160, 640, dtype=np.float32), (480, 1))
    for face, (x, y) in placed:
        frame[y : y + SIDE, x : x + SIDE] = cv2.resize(face, (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)
    return np.clip(frame + rng.normal(0, 2, frame.shape), 0, 255).astype(np.uint8)


def follow(tracker: FaceTracker, frames: list[np.ndarray], stream: str = "cam", first: int = 0):
    passes: list[str] = []
    tracker.on_pass = passes.append
    boxes = [tracker.detect(frame, (stream, first + seq)) for seq, frame in enumerate(frames)]
    return boxes, passes


def test_a_still_face_is_followed_without_searching_the_whole_frame(faces, new_detector):
    frames = [scene([(faces[0], (40, 140))], seed) for seed in range(6)]
    boxes, passes = follow(FaceTracker(new_detector()), frames)
    assert passes == ["full"] + ["tracked"] * 5
    assert all(len(b) == 1 and iou(b[0], (40, 140, SIDE, SIDE)) > 0.6 for b in boxes)


def test_a_moving_face_is_followed(faces, new_detector):
    frames = [scene([(faces[0], (40 + 16 * i, 140 - 4 * i))], i) for i in range(8)]
    boxes, passes = follow(FaceTracker(new_detector()), frames)
    assert passes.count("tracked") >= 6
    for i, found in enumerate(boxes):
        assert len(found) == 1 and iou(found[0], (40 + 16 * i, 140 - 4 * i, SIDE, SIDE)) > 0.5


def test_a_stream_whose_resolution_changes_is_searched_whole(faces, new_detector):
    """A browser may halve a camera's resolution under load: the old boxes no longer fit the frame."""
    big = [scene([(faces[0], (420, 140))], seed) for seed in range(2)]
    small = [cv2.resize(frame, (320, 240), interpolation=cv2.INTER_AREA) for frame in big]
    boxes, passes = follow(FaceTracker(new_detector()), [*big, *small, small[0]])
    assert passes == ["full", "tracked", "full", "tracked", "tracked"]
    assert all(len(b) == 1 and iou(b[0], (420, 140, SIDE, SIDE)) > 0.6 for b in boxes[:2])
    assert all(len(b) == 1 and iou(b[0], (210, 70, SIDE // 2, SIDE // 2)) > 0.5 for b in boxes[2:])


def test_a_face_that_comes_in_is_found_on_its_first_frame(faces, new_detector):
    alone = [scene([(faces[0], (40, 140))], seed) for seed in range(3)]
    joined = scene([(faces[0], (40, 140)), (faces[1], (400, 140))], 3)
    boxes, passes = follow(FaceTracker(new_detector()), [*alone, joined])
    assert passes == ["full", "tracked", "tracked", "full"]
    assert sorted(b[0] // 100 for b in boxes[-1]) == [0, 4]


def test_a_face_that_leaves_is_dropped_and_an_empty_scene_stays_cheap(faces, new_detector):
    frames = [scene([(faces[0], (40, 140))], 0), *[scene([], seed) for seed in range(1, 5)]]
    boxes, passes = follow(FaceTracker(new_detector()), frames)
    assert boxes[0] and not any(boxes[1:])
    assert passes == ["full", "full", "tracked", "tracked", "tracked"]


def test_a_new_face_in_place_of_the_last_one_is_found_as_a_full_pass_finds_it(faces, new_detector):
    for before, after in itertools.pairwise(faces):
        frames = [scene([(before, (40, 140))], 0), scene([(after, (40, 140))], 1)]
        boxes, _ = follow(FaceTracker(new_detector()), frames)
        [full] = new_detector().detect(frames[1])
        assert len(boxes[1]) == 1 and iou(boxes[1][0], full) > 0.6


def test_two_windows_that_find_the_same_face_make_a_full_pass(faces, new_detector):
    tracker = FaceTracker(new_detector())
    first = scene([(faces[0], (40, 140))], 0)
    [box] = tracker.detect(first, ("cam", 0))
    x, y, w, h = box
    tracker.tracks["cam"].boxes = [box, (x + w // 4, y, w, h)]  # as if a second face had stood beside it
    boxes, passes = follow(tracker, [scene([(faces[0], (40, 140))], 1)], first=1)
    assert passes == ["full"] and len(boxes[0]) == 1


def test_whole_frames_are_searched_every_refresh_frames_and_after_a_gap_or_a_restart(faces, new_detector):
    tracker = FaceTracker(new_detector(), refresh=3, max_gap=2)
    frame = scene([(faces[0], (40, 140))], 0)
    _, passes = follow(tracker, [frame] * 7)
    assert passes == ["full", "tracked", "tracked", "full", "tracked", "tracked", "full"]
    _, passes = follow(tracker, [frame], first=6 + 3)  # 3 frames later: went to other workers
    assert passes == ["full"]
    _, passes = follow(tracker, [frame], first=0)  # the stream started again
    assert passes == ["full"]


def test_streams_are_followed_apart_and_the_least_recent_is_forgotten(faces, new_detector):
    tracker = FaceTracker(new_detector(), streams=2)
    frame = scene([(faces[0], (40, 140))], 0)
    other = scene([(faces[1], (400, 140))], 1)
    _, passes = follow(tracker, [frame, frame], "a")
    assert passes == ["full", "tracked"]
    boxes, passes = follow(tracker, [other], "b")
    assert passes == ["full"] and boxes[0][0][0] > 300
    follow(tracker, [frame], "c")
    assert list(tracker.tracks) == ["b", "c"]
    _, passes = follow(tracker, [frame], "a", first=2)
    assert passes == ["full"]


def test_a_lone_image_is_always_searched_whole(faces, new_detector):
    tracker = FaceTracker(new_detector())
    passes: list[str] = []
    tracker.on_pass = passes.append
    frame = scene([(faces[0], (40, 140))], 0)
    assert tracker.detect(frame) == tracker.detect(frame) == new_detector().detect(frame)
    assert passes == [] and not tracker.tracks


def test_near_search_finds_a_known_face_and_reports_a_missing_one_or_one_off_the_frame(faces, new_detector):
    detector = new_detector()
    frame = scene([(faces[0], (40, 140))], 0)
    [box] = detector.detect(frame)
    near, gone, outside = detector.detect_near(frame, [box, (400, 140, SIDE, SIDE), (1000, 800, SIDE, SIDE)])
    assert iou(near, box) > 0.8 and gone is None and outside is None


def test_a_tall_narrow_frame_keeps_a_small_thumbnail_and_is_followed(new_detector):
    tracker = FaceTracker(new_detector())
    strip = np.full((4096, 16), 90, np.uint8)  # 40 cells wide would make a 40 x 10,240 thumbnail
    _, passes = follow(tracker, [strip, strip], stream="strip")
    assert tracker.tracks["strip"].thumb.shape[0] <= 40 and passes == ["full", "tracked"]


def test_haar_searches_a_window_clipped_at_the_frame_edge_not_shifted_into_the_frame():
    searched = []

    class Spy(HaarDetector):
        def _scan(self, gray, x0, y0, ratio, smallest, largest):
            searched.append((x0, y0, gray.shape[1], gray.shape[0]))
            return super()._scan(gray, x0, y0, ratio, smallest, largest)

    Spy().detect_near(np.full((480, 640), 90, np.uint8), [(0, 140, SIDE, SIDE)], 2.0)
    # the window is 384 px around the box's centre (96, 236): x -96..288 clipped to 0..288, y 44..428
    assert searched == [(0, 44, 288, 384)]
