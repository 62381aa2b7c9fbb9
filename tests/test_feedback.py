"""Feedback capture: nothing stored while the switch is off; a training-ready folder when on."""

import numpy as np
import pytest

from gateway.feedback import FeedbackDisabled, FeedbackFull, FeedbackStore
from training.data import load_folder


def test_nothing_is_stored_while_the_switch_is_off(tmp_path):
    store = FeedbackStore(tmp_path / "feedback", enabled=False)
    with pytest.raises(FeedbackDisabled):
        store.add(np.zeros((48, 48), np.uint8), "happy", "sad", "v1")
    assert not (tmp_path / "feedback").exists()


def test_corrections_form_a_dataset_the_trainer_loads(tmp_path):
    store = FeedbackStore(tmp_path / "feedback", enabled=True)
    face = np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)
    store.add(face, "happy", "sad", "v1")
    store.add(face, "fear", "neutral", "v1")
    assert store.count()["happy"] == 1 and store.count()["fear"] == 1
    loaded = load_folder(tmp_path / "feedback")
    assert sorted(loaded.labels.tolist()) == [2, 3]
    assert np.array_equal(loaded.images[0], face)
    assert (tmp_path / "feedback" / "feedback.jsonl").read_text().count("\n") == 2


def test_bad_corrections_are_refused(tmp_path):
    store = FeedbackStore(tmp_path, enabled=True)
    with pytest.raises(ValueError, match="unknown label 'contempt'"):
        store.add(np.zeros((48, 48), np.uint8), "contempt", "sad", "v1")
    with pytest.raises(ValueError, match="48x48 uint8"):
        store.add(np.zeros((10, 10), np.uint8), "happy", "sad", "v1")


def test_a_full_folder_stores_nothing_more(tmp_path):
    store = FeedbackStore(tmp_path, enabled=True, limit=2)
    face = np.zeros((48, 48), np.uint8)
    store.add(face, "happy", "sad", "v1")
    store.add(face, "sad", "happy", "v1")
    with pytest.raises(FeedbackFull, match="holds 2 faces"):
        store.add(face, "fear", "happy", "v1")
    assert sum(store.count().values()) == 2 and store.count()["fear"] == 0
    assert (tmp_path / "feedback.jsonl").read_text().count("\n") == 2, "the refused face is not logged either"
