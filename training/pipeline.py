"""tf.data input pipelines and batch augmentation for 48x48 faces.

Augmentation is one projective warp per image (flip, shift, rotation, zoom composed
into a single matrix, so a face is resampled once), then optional random erasing and
mixup, all vectorised over the batch.
"""

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from emostream.labels import FACE_SIZE, NUM_CLASSES


@dataclass(frozen=True)
class Augmentation:
    """Augmentation strengths; zeros switch a transform off."""

    flip: bool = True
    shift: float = 0.1
    """Largest shift, as a fraction of the side (the tutorial's width/height_shift_range)."""
    rotation: float = 10.0
    """Largest rotation in degrees."""
    zoom: float = 0.1
    """Largest zoom in or out, as a fraction."""
    erasing: float = 0.5
    """Probability of erasing one random rectangle (Zhong et al., 2017)."""
    mixup: float = 0.0
    """Mixup's Beta(a, a) parameter; 0 disables it."""


def _warp_matrices(batch: int, aug: Augmentation, size: int) -> tf.Tensor:
    """Per-image output-to-input projective matrices, as ImageProjectiveTransformV3 wants."""
    uniform = lambda limit: tf.random.uniform([batch], -limit, limit)  # noqa: E731
    angle = uniform(aug.rotation * math.pi / 180.0)
    scale = 1.0 / (1.0 + uniform(aug.zoom))
    flip = tf.where(tf.random.uniform([batch]) < 0.5, -1.0, 1.0) if aug.flip else tf.ones([batch])
    tx, ty = uniform(aug.shift * size), uniform(aug.shift * size)
    cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
    m00, m01, m10, m11 = cos * flip, -sin, sin * flip, cos
    centre = (size - 1) / 2.0
    a2 = centre + tx - m00 * centre - m01 * centre
    b2 = centre + ty - m10 * centre - m11 * centre
    zeros = tf.zeros([batch])
    return tf.stack([m00, m01, a2, m10, m11, b2, zeros, zeros], axis=1)


def _erase(images: tf.Tensor, probability: float) -> tf.Tensor:
    """Replace one random rectangle (2-33% of the area) per chosen image with noise."""
    batch, size = tf.shape(images)[0], images.shape[1]
    area = tf.random.uniform([batch], 0.02, 0.33) * size * size
    ratio = tf.exp(tf.random.uniform([batch], math.log(0.3), math.log(3.3)))
    h = tf.minimum(tf.sqrt(area * ratio), size - 1.0)
    w = tf.minimum(tf.sqrt(area / ratio), size - 1.0)
    y0 = tf.random.uniform([batch]) * (size - h)
    x0 = tf.random.uniform([batch]) * (size - w)
    grid = tf.range(size, dtype=tf.float32)
    rows = (grid[None, :] >= y0[:, None]) & (grid[None, :] < (y0 + h)[:, None])
    cols = (grid[None, :] >= x0[:, None]) & (grid[None, :] < (x0 + w)[:, None])
    chosen = tf.random.uniform([batch]) < probability
    mask = rows[:, :, None] & cols[:, None, :] & chosen[:, None, None]
    noise = tf.random.uniform(tf.shape(images), 0.0, 255.0)
    return tf.where(mask[..., None], noise, images)


def _mixup(images: tf.Tensor, labels: tf.Tensor, alpha: float) -> tuple[tf.Tensor, tf.Tensor]:
    batch = tf.shape(images)[0]
    a = tf.random.gamma([batch], alpha)
    b = tf.random.gamma([batch], alpha)
    lam = a / (a + b)
    order = tf.random.shuffle(tf.range(batch))
    mixed = lam[:, None, None, None] * images + (1 - lam[:, None, None, None]) * tf.gather(images, order)
    return mixed, lam[:, None] * labels + (1 - lam[:, None]) * tf.gather(labels, order)


def augment(images: tf.Tensor, labels: tf.Tensor, aug: Augmentation) -> tuple[tf.Tensor, tf.Tensor]:
    """Augment a float batch ``(B, 48, 48, 1)`` in 0..255 with one-hot ``labels``."""
    size = images.shape[1]
    images = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=_warp_matrices(tf.shape(images)[0], aug, size),
        output_shape=[size, size],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )
    if aug.erasing > 0:
        images = _erase(images, aug.erasing)
    if aug.mixup > 0:
        images, labels = _mixup(images, labels, aug.mixup)
    return images, labels


def _tensors(images: np.ndarray, labels: np.ndarray) -> tf.data.Dataset:
    """Float faces with one-hot targets; ``labels`` are class indices ``(N,)`` or distributions ``(N, 7)``."""
    x = images.reshape(-1, FACE_SIZE, FACE_SIZE, 1)
    soft = labels.ndim == 2

    def example(img: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.cast(img, tf.float32), tf.cast(y, tf.float32) if soft else tf.one_hot(y, NUM_CLASSES)

    return tf.data.Dataset.from_tensor_slices((x, labels)).map(example, num_parallel_calls=tf.data.AUTOTUNE)


def training_dataset(
    images: np.ndarray, labels: np.ndarray, batch_size: int, aug: Augmentation, seed: int
) -> tf.data.Dataset:
    """Cached, reshuffled every epoch, augmented per batch in parallel, prefetched."""
    return (
        _tensors(images, labels)
        .cache()
        .shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size, drop_remainder=True)
        .map(lambda x, y: augment(x, y, aug), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def evaluation_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Unaugmented, in order, cached and prefetched."""
    return _tensors(images, labels).cache().batch(batch_size).prefetch(tf.data.AUTOTUNE)
