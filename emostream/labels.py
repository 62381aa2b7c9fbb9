"""The expression classes, in the FER2013 competition's label order (0..6), used everywhere."""

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(EMOTIONS)
FACE_SIZE = 48
"""Side of the square grayscale face crop every model takes, as in FER2013."""
