"""Augmentation and the tf.data pipelines."""

import numpy as np
import tensorflow as tf

from training.pipeline import Augmentation, augment, evaluation_dataset, training_dataset

OFF = Augmentation(flip=False, shift=0, rotation=0, zoom=0, erasing=0, mixup=0)


def _gradient_batch(n: int = 8) -> tuple[tf.Tensor, tf.Tensor]:
    ramp = np.tile(np.linspace(0, 255, 48, dtype=np.float32), (48, 1))
    images = np.repeat(ramp[None, :, :, None], n, axis=0)
    return tf.constant(images), tf.one_hot(np.arange(n) % 7, 7)


def test_no_augmentation_is_identity():
    x, y = _gradient_batch()
    out, labels = augment(x, y, OFF)
    np.testing.assert_allclose(out.numpy(), x.numpy(), atol=1e-3)
    np.testing.assert_array_equal(labels.numpy(), y.numpy())


def test_flip_mirrors_some_faces_and_keeps_the_rest():
    tf.random.set_seed(3)
    x, y = _gradient_batch(64)
    out = augment(x, y, Augmentation(flip=True, shift=0, rotation=0, zoom=0, erasing=0))[0].numpy()
    mirrored = [np.allclose(o, x.numpy()[0, :, ::-1], atol=1e-3) for o in out]
    kept = [np.allclose(o, x.numpy()[0], atol=1e-3) for o in out]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert 10 < sum(mirrored) < 54


def test_geometric_augmentation_changes_faces_within_range():
    x, y = _gradient_batch()
    out = augment(x, y, Augmentation(flip=False, shift=0.1, rotation=10, zoom=0.1, erasing=0))[0].numpy()
    assert out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 255.001
    assert not np.allclose(out, x.numpy(), atol=1.0)


def test_erasing_replaces_a_rectangle():
    x = tf.fill((4, 48, 48, 1), 100.0)
    out = augment(x, tf.one_hot([0, 1, 2, 3], 7), Augmentation(flip=False, shift=0, rotation=0, zoom=0, erasing=1.0))[
        0
    ].numpy()
    changed = (np.abs(out - 100) > 1e-3).reshape(4, -1).mean(axis=1)
    assert np.all(changed > 0.01) and np.all(changed < 0.4)


def test_mixup_mixes_labels_into_distributions():
    x, y = _gradient_batch(16)
    _, labels = augment(x, y, Augmentation(flip=False, shift=0, rotation=0, zoom=0, erasing=0, mixup=0.4))
    np.testing.assert_allclose(labels.numpy().sum(axis=1), 1.0, atol=1e-5)
    assert (labels.numpy().max(axis=1) < 0.999).any()


def test_datasets_batch_one_hot_float_faces():
    images = np.random.default_rng(0).integers(0, 255, (10, 48, 48), dtype=np.uint8)
    labels = np.arange(10) % 7
    x, y = next(iter(training_dataset(images, labels, 4, Augmentation(), seed=1)))
    assert x.shape == (4, 48, 48, 1) and x.dtype == tf.float32 and y.shape == (4, 7)
    batches = list(evaluation_dataset(images, labels, 4))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(batches[0][0].numpy()[..., 0], images[:4])
