"""The selectable architectures."""

import numpy as np
import pytest

from training.architectures import ARCHITECTURES, build, multiply_adds


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


def test_multiply_adds_count_every_convolution_and_dense_layer():
    # emonet by hand: 48x48 3x3x1x32; 24x24 3x3x32x48 and 3x3x48x48; 12x12 3x3x48x96 and 3x3x96x96;
    # 6x6 3x3x96x192 and 3x3x192x192; dense 192x7.
    by_hand = 2304 * 9 * 32 + 576 * 9 * (32 * 48 + 48 * 48) + 144 * 9 * (48 * 96 + 96 * 96)
    by_hand += 36 * 9 * (96 * 192 + 192 * 192) + 192 * 7
    assert multiply_adds(build("emonet")) == by_hand == 56_403_264
    assert multiply_adds(build("emonet_pair")) == 2 * by_hand <= 120_000_000  # the serving budget


def test_a_pair_scores_the_mean_of_its_two_towers():
    pair = build("emonet_pair")
    faces = np.random.default_rng(1).uniform(0, 255, (5, 48, 48, 1)).astype("float32")
    towers = [pair.get_layer(f"emonet_{index}")(faces).numpy() for index in (1, 2)]
    assert not np.allclose(towers[0], towers[1])  # independently initialised
    np.testing.assert_allclose(pair(faces).numpy(), (towers[0] + towers[1]) / 2, atol=1e-6)
