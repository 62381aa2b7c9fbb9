"""The expression classes, in the FER2013 competition's label order (0..6), used everywhere."""

from typing import Literal, get_args

Emotion = Literal["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
"""An expression class's name (a JSON body's label is validated against it)."""
EMOTIONS: tuple[str, ...] = get_args(Emotion)
NUM_CLASSES = len(EMOTIONS)
FACE_SIZE = 48
"""Side of the square grayscale face crop every model takes, as in FER2013."""
