"""What a user's terminal shows: the commands that load TensorFlow or LiteRT print none of their start-up lines."""

import cv2
import numpy as np
import pytest
from factories import brightness, brightness_store, flat, run_cli, write_faces

from emostream.logs import NATIVE_CHATTER

pytestmark = pytest.mark.slow  # TensorFlow starts in a child process for each test


def test_evaluate_and_predict_print_only_their_answers(tmp_path):
    store = brightness_store(tmp_path / "store")
    faces = write_faces(tmp_path / "faces", {"angry": [flat(brightness(0))], "happy": [flat(brightness(3))]})
    cv2.imwrite(str(tmp_path / "wall.png"), np.full((120, 160), 128, np.uint8))
    env = {"EMOSTREAM_MODEL_STORE": str(store.root), "TF_CPP_MIN_LOG_LEVEL": None}  # as a user's shell has it

    evaluated = run_cli("evaluate", "--data", str(faces), env=env)
    predicted = run_cli("predict", str(tmp_path / "wall.png"), env=env)
    debugging = run_cli("--log-level", "debug", "evaluate", "--data", str(faces), env=env)

    assert evaluated.returncode == 0 and "accuracy" in evaluated.stdout
    assert evaluated.stderr == ""
    assert predicted.returncode == 0 and predicted.stdout.endswith("wall.png: no face\n")
    assert predicted.stderr == ""
    assert debugging.returncode == 0
    assert any(NATIVE_CHATTER.match(line) for line in debugging.stderr.splitlines()), "debugging shows them all"
