"""The selectable architectures."""

import numpy as np
import pytest

from training.architectures import ARCHITECTURES, build


def test_tutorial_is_the_articles_network():
    model = build("tutorial")
    assert model.count_params() == 4_478_727
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert [(c.filters, c.kernel_size) for c in convs] == [(64, (3, 3)), (128, (5, 5)), (512, (3, 3)), (512, (3, 3))]
    dense = [layer.units for layer in model.layers if layer.__class__.__name__ == "Dense"]
    assert dense == [256, 512, 7]


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_architecture_maps_raw_faces_to_seven_probabilities(name):
    model = build(name)
    scores = model(np.random.default_rng(0).uniform(0, 255, (3, 48, 48, 1)).astype("float32")).numpy()
    assert scores.shape == (3, 7)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="unknown architecture 'resnet999'"):
        build("resnet999")
