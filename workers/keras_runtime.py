"""The Keras runtime for GPU hosts: one compiled call for any batch size (imports TensorFlow)."""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from emostream.labels import FACE_SIZE


def keras_infer(path: Path, threads: int = 0):
    """A compiled ``faces -> probabilities`` function of the ``.keras`` file at ``path``."""
    if threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    model = keras.models.load_model(path, compile=False)
    spec = tf.TensorSpec([None, FACE_SIZE, FACE_SIZE, 1], tf.float32)
    compiled = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    return lambda x: np.asarray(compiled(x))
