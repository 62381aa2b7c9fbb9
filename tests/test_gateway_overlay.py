from fractions import Fraction

import cv2
import numpy as np
from av import VideoFrame
from av.video.reformatter import VideoReformatter
from gateway_helpers import face

from gateway.labelled_track import render
from gateway.overlay import COLORS, STALE_COLOR, css_colors, draw, draw_i420


def blank(width: int = 320, height: int = 240) -> np.ndarray:
    return np.full((height, width, 3), 90, np.uint8)


def edge_colors(image: np.ndarray, x: int, y: int, w: int, h: int) -> set[tuple[int, ...]]:
    """Colours on the box's left and right edges (the label banner sits on the top one)."""
    middle = slice(y + h // 4, y + 3 * h // 4)
    return {tuple(c) for c in np.concatenate([image[middle, x], image[middle, x + w]])}


def test_box_drawn_at_the_face_in_its_label_colour():
    image = draw(blank(), [face((100, 60, 80, 90), "happy")])
    assert edge_colors(image, 100, 60, 80, 90) == {COLORS["happy"]}
    assert (image[60 + 30 : 60 + 60, 120:160] == 90).all(), "the inside of the box stays untouched"
    assert (image[:, :95] == 90).all() and (image[:, 185:] == 90).all(), "nothing drawn beside the box"
    banner = image[40:60, 100:170]
    assert (banner == COLORS["happy"]).all(axis=-1).mean() > 0.3, "the label banner sits above the box"


def test_a_tracked_face_is_drawn_with_its_smoothed_label():
    flicker = face((100, 60, 80, 90), "sad")  # this frame's raw label
    flicker.track, flicker.smoothed = 3, {"label": "happy", "score": 0.7, "scores": dict(flicker.scores)}
    image = draw(blank(), [flicker])
    assert edge_colors(image, 100, 60, 80, 90) == {COLORS["happy"]}


def test_the_returned_video_is_drawn_on_its_yuv420p_planes_like_the_bgr_drawing():
    faces = [face((100, 60, 80, 90), "happy"), face((20, 150, 60, 60), "sad")]
    i420 = cv2.cvtColor(blank(), cv2.COLOR_BGR2YUV_I420)
    drawn = cv2.cvtColor(draw_i420(i420, faces), cv2.COLOR_YUV2BGR_I420).astype(int)
    expected = draw(blank(), faces).astype(int)
    for (x, y, _, h), label in (((100, 60, 80, 90), "happy"), ((20, 150, 60, 60), "sad")):
        edge = drawn[y + h // 4 : y + 3 * h // 4, x]
        assert np.abs(edge - COLORS[label]).max() <= 24, f"{label}: the box edge has the label's colour"
    differs = np.abs(drawn - expected).max(axis=-1) > 40  # chroma is at half resolution: edges blur a little
    assert differs.mean() < 0.03, "the same boxes and banners as on a BGR frame"
    assert (np.abs(drawn[170:, 200:] - 90) <= 1).all(), "nothing drawn away from the faces"


def test_frames_whose_chroma_planes_do_not_fill_whole_rows_are_drawn():
    """480x270 (a 720p camera scaled down by the browser): each chroma plane is 33.75 rows of the array."""
    frame = VideoFrame.from_ndarray(blank(480, 270), format="bgr24").reformat(format="yuv420p")
    frame.pts, frame.time_base = 0, Fraction(1, 30)
    labelled = render(frame, VideoReformatter(), [face((100, 60, 80, 90), "happy")], 1.0, False)
    edge = labelled.to_ndarray(format="bgr24")[60 + 25 : 60 + 65, 100].astype(int)
    assert (labelled.width, labelled.height) == (480, 270)
    assert np.abs(edge - COLORS["happy"]).max() <= 24


def test_frames_of_odd_sides_are_drawn_at_their_own_size():
    """The encoder restarts whenever the frame size changes: a labelled frame keeps the camera's size."""
    frame = VideoFrame.from_ndarray(blank(481, 271), format="bgr24").reformat(format="yuv420p")
    frame.pts, frame.time_base = 0, Fraction(1, 30)
    labelled = render(frame, VideoReformatter(), [face((100, 60, 80, 90), "happy")], 1.0, False)
    assert (labelled.width, labelled.height) == (481, 271)
    edge = labelled.to_ndarray(format="bgr24")[60 + 25 : 60 + 65, 100].astype(int)
    assert np.abs(edge - COLORS["happy"]).max() <= 24


def test_boxes_are_scaled_onto_the_frame():
    image = draw(blank(), [face((200, 120, 160, 180), "sad")], scale=0.5)
    assert edge_colors(image, 100, 60, 80, 90) == {COLORS["sad"]}
    assert (image[:, 185:] == 90).all()


def test_stale_results_are_grey_without_scores():
    fresh = draw(blank(), [face((100, 60, 80, 90), "angry")], stale=False)
    stale = draw(blank(), [face((100, 60, 80, 90), "angry")], stale=True)
    assert edge_colors(stale, 100, 60, 80, 90) == {STALE_COLOR}
    assert edge_colors(fresh, 100, 60, 80, 90) == {COLORS["angry"]}
    banner_end = [np.any(image[40:58] != 90, axis=(0, 2)).nonzero()[0].max() for image in (fresh, stale)]
    assert banner_end[1] < banner_end[0], "the stale label has no score"


def test_every_face_is_drawn_and_boxes_off_the_frame_are_clipped():
    faces = [face((10, 100, 50, 50), "fear"), face((250, 100, 50, 50), "surprise"), face((300, 200, 100, 100), "sad")]
    image = draw(blank(), faces)
    assert edge_colors(image, 10, 100, 50, 50) == {COLORS["fear"]}
    assert edge_colors(image, 250, 100, 50, 50) == {COLORS["surprise"]}
    assert (image[220:, 310] == COLORS["sad"]).all(axis=-1).any(), "the part inside the frame is drawn"
    assert draw(blank(), [face((-500, -500, 10, 10), "sad")]).tolist() == blank().tolist()


def test_no_faces_leaves_the_frame_unchanged_and_draws_in_place():
    image = blank()
    assert draw(image, []) is image and (image == 90).all()


def test_labels_grow_with_the_frame_to_stay_legible():
    def banner_height(width: int, height: int) -> int:
        image = draw(blank(width, height), [face((width // 4, height // 3, width // 4, height // 3), "happy")])
        column = image[: height // 3, width // 4 + 2]
        return int((column == COLORS["happy"]).all(axis=-1).sum())

    small, vga, hd = banner_height(320, 240), banner_height(640, 480), banner_height(1280, 960)
    assert vga >= 480 / 20 and hd >= 2 * vga - 4 and small < vga  # about 1/20 of the height from 640x480 up


def test_the_legend_colours_are_the_boxes():
    colors = css_colors()
    assert colors["happy"] == "#{:02x}{:02x}{:02x}".format(*reversed(COLORS["happy"]))
    assert set(colors) == {*COLORS, "late"} and colors["late"] == "#808080"
