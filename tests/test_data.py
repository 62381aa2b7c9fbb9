"""FER2013 loading from folders and CSV, including every malformed case."""

import cv2
import numpy as np
import pytest
from factories import copy_fer_subset, flat, pixels, write_csv, write_faces

from emostream.labels import EMOTIONS
from training.data import DataError, load, load_csv, load_folder


def test_folder_loads_any_format_and_size_as_48x48_gray(tmp_path):
    color = np.zeros((96, 120, 3), np.uint8)
    color[..., 2] = 200  # red
    write_faces(tmp_path, {"happy": [flat(10), flat(20)], "sad": [cv2.resize(flat(30), (200, 200))]})
    cv2.imwrite(str(tmp_path / "angry" / "c.jpg"), color)
    cv2.imwrite(str(tmp_path / "fear" / "d.bmp"), flat(40, 24))
    faces = load_folder(tmp_path)
    assert faces.images.shape == (5, 48, 48) and faces.images.dtype == np.uint8
    assert faces.class_counts() == {
        "angry": 1,
        "disgust": 0,
        "fear": 1,
        "happy": 2,
        "sad": 1,
        "surprise": 0,
        "neutral": 0,
    }
    assert list(faces.labels) == [0, 2, 3, 3, 4]
    red_as_gray = round(0.299 * 200)
    assert abs(int(faces.images[0].mean()) - red_as_gray) <= 2
    assert faces.images[1].mean() == 40  # upscaled 24x24
    assert faces.fingerprint.startswith("sha256:")


def test_real_fer_faces_load_unchanged(tmp_path):
    root = copy_fer_subset(tmp_path, "validation", per_class=3)
    faces = load_folder(root)
    first = sorted((root / "angry").iterdir())[0]
    assert len(faces) == 21
    assert np.array_equal(faces.images[0], cv2.imread(str(first), cv2.IMREAD_GRAYSCALE))


def test_fingerprint_changes_with_content(tmp_path):
    write_faces(tmp_path / "a", {"happy": [flat(10)]})
    write_faces(tmp_path / "b", {"happy": [flat(11)]})
    assert load_folder(tmp_path / "a").fingerprint != load_folder(tmp_path / "b").fingerprint


def test_missing_class_folder_is_named(tmp_path):
    write_faces(tmp_path, {"happy": [flat(1)]})
    (tmp_path / "disgust").rmdir()
    with pytest.raises(DataError, match=r"disgust: missing class folder"):
        load_folder(tmp_path)


def test_unknown_class_folder_is_named(tmp_path):
    write_faces(tmp_path, {})
    (tmp_path / "contempt").mkdir()
    with pytest.raises(DataError, match="contempt"):
        load_folder(tmp_path)


def test_unreadable_image_is_named_or_skipped_and_counted(tmp_path):
    write_faces(tmp_path, {"happy": [flat(1)], "sad": [flat(2)]})
    broken = tmp_path / "sad" / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    (tmp_path / "fear" / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"(broken\.png|empty\.jpg): unreadable image"):
        load_folder(tmp_path)
    faces = load_folder(tmp_path, skip_bad=True)
    assert len(faces) == 2
    assert sorted(p.rsplit("/", 1)[1] for p in faces.skipped) == ["broken.png", "empty.jpg"]


def test_csv_selects_usage_and_keeps_label_order(tmp_path):
    csv = write_csv(
        tmp_path / "fer.csv",
        [
            ("3", pixels(5), "Training"),
            ("6", pixels(7), "PublicTest"),
            ("0", pixels(9), "Training"),
            ("1", pixels(11), "PrivateTest"),
        ],
    )
    train = load_csv(csv, "train")
    assert list(train.labels) == [3, 0] and train.images[1].mean() == 9
    assert list(load_csv(csv, "PublicTest").labels) == [6]
    assert list(load(csv, "test").labels) == [1]
    assert len(load_csv(csv)) == 4


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (("2", " ".join(["1"] * 100), "Training"), r"fer\.csv:3: 100 pixels, expected 2304"),
        (("9", pixels(1), "Training"), r"fer\.csv:3: label '9' is not one of 0\.\.6"),
        (("x", pixels(1), "Training"), r"fer\.csv:3: label 'x'"),
        (("2", pixels(300), "Training"), r"fer\.csv:3: pixel values outside 0\.\.255"),
        (("2", pixels(1).replace("1", "a", 1), "Training"), r"fer\.csv:3: pixels are not integers"),
    ],
)
def test_bad_csv_row_is_named_or_skipped_and_counted(tmp_path, row, message):
    csv = write_csv(tmp_path / "fer.csv", [("3", pixels(5), "Training"), row, ("4", pixels(6), "Training")])
    with pytest.raises(DataError, match=message):
        load_csv(csv, "train")
    faces = load_csv(csv, "train", skip_bad=True)
    assert list(faces.labels) == [3, 4]
    assert faces.skipped == [f"{csv}:3"]


def test_csv_without_needed_columns(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("label,image\n1,2\n")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['emotion', 'pixels'\]"):
        load_csv(path)
    path.write_text("emotion,pixels\n1," + pixels(1) + "\n")
    with pytest.raises(DataError, match="no Usage column"):
        load_csv(path, "train")


def test_load_resolves_dataset_root_and_class_folder(tmp_path):
    write_faces(tmp_path / "train", {"surprise": [flat(3)]})
    write_faces(tmp_path / "validation", {"neutral": [flat(4)]})
    assert list(load(tmp_path, "train").labels) == [EMOTIONS.index("surprise")]
    assert list(load(tmp_path / "validation", "validation").labels) == [EMOTIONS.index("neutral")]
    with pytest.raises(DataError, match="no such file"):
        load(tmp_path / "nowhere", "train")
