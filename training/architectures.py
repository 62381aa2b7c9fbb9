"""CNN architectures for 48x48 grayscale faces, selectable by name.

Every model takes raw pixels (float, 0..255, shape ``(48, 48, 1)``) and rescales them
itself, so the preprocessing travels inside the saved artifact.
"""

from collections.abc import Callable

import keras
from keras import layers

from emostream.labels import FACE_SIZE, NUM_CLASSES

INPUT_SHAPE = (FACE_SIZE, FACE_SIZE, 1)


def _inputs() -> tuple[keras.KerasTensor, keras.KerasTensor]:
    inputs = keras.Input(shape=INPUT_SHAPE, name="face")
    return inputs, layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)


def _head(x: keras.KerasTensor) -> keras.KerasTensor:
    # float32 softmax keeps mixed-precision training numerically safe.
    return layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name="scores")(x)


def tutorial() -> keras.Model:
    """The article's CNN: four conv blocks (64, 128, 512, 512), dense 256 and 512."""
    inputs, x = _inputs()
    for filters, kernel in ((64, 3), (128, 5), (512, 3), (512, 3)):
        x = layers.Conv2D(filters, kernel, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Dropout(0.25)(x)
    x = layers.Flatten()(x)
    for units in (256, 512):
        x = layers.Dense(units)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.Dropout(0.25)(x)
    return keras.Model(inputs, _head(x), name="tutorial")


def _conv_bn_relu(x: keras.KerasTensor, filters: int) -> keras.KerasTensor:
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.Activation("relu")(x)


def emonet(
    widths: tuple[int, ...] = (32, 48, 96, 192), convs: tuple[int, ...] = (1, 2, 2, 2), name: str = "emonet"
) -> keras.Model:
    """A compact VGG-style CNN sized for CPU training and >1,000 faces/s inference.

    One stage per scale (48, 24, 12, 6 pixels); a thin stem at full resolution, the
    width growing as the map shrinks so every stage costs about the same, then global
    average pooling and dropout before the classifier (~56M multiply-adds per face).
    """
    inputs, x = _inputs()
    for stage, (filters, repeats) in enumerate(zip(widths, convs, strict=True)):
        if stage:
            x = layers.MaxPooling2D(2)(x)
        for _ in range(repeats):
            x = _conv_bn_relu(x, filters)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.4)(x)
    return keras.Model(inputs, _head(x), name=name)


def emonet_wide() -> keras.Model:
    """``emonet`` with wider stages (40, 64, 128, 256): about 99M multiply-adds per face."""
    return emonet(widths=(40, 64, 128, 256), name="emonet_wide")


def pair(tower: str) -> keras.Model:
    """Two ``tower`` networks side by side on the same face, their scores averaged: an ensemble
    that serves as one network (twice the tower's multiply-adds; ``emonet_pair`` about 112M).

    The towers are named ``<tower>_1`` and ``<tower>_2``; ``models ensemble`` fills them with the
    weights of two published versions.
    """
    towers = []
    for index in (1, 2):
        network = ARCHITECTURES[tower]()
        network.name = f"{tower}_{index}"
        towers.append(network)
    inputs = keras.Input(shape=INPUT_SHAPE, name="face")
    scores = layers.Average(dtype="float32", name="scores")([network(inputs) for network in towers])
    return keras.Model(inputs, scores, name=f"{tower}_pair")


ARCHITECTURES: dict[str, Callable[[], keras.Model]] = {
    "tutorial": tutorial,
    "emonet": emonet,
    "emonet_wide": emonet_wide,
    "emonet_pair": lambda: pair("emonet"),
}


def multiply_adds(model: keras.Model) -> int:
    """Multiply-adds per face of the convolutions and dense layers (nested networks included)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += multiply_adds(layer)
        elif isinstance(layer, layers.Conv2D):
            _, height, width, filters = layer.output.shape
            kernel = layer.kernel.shape  # (k, k, inputs / groups, filters)
            total += height * width * filters * kernel[0] * kernel[1] * kernel[2]
        elif isinstance(layer, layers.Dense):
            total += layer.kernel.shape[0] * layer.kernel.shape[1]
    return int(total)


def build(name: str) -> keras.Model:
    """Build the architecture registered under ``name``."""
    try:
        return ARCHITECTURES[name]()
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; choose from {sorted(ARCHITECTURES)}") from None
