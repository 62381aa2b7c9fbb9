"""The sampler: which frames to keep for a target rate, from capture timestamps alone."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.sampling import Sampler


def kept(timestamps, fps: float) -> list[int]:
    sampler = Sampler(fps)
    return [i for i, ts in enumerate(timestamps) if sampler.keep(ts)]


def test_every_third_frame_of_a_30fps_source_at_10fps():
    assert kept([i / 30 for i in range(90)], 10) == list(range(0, 90, 3))


def test_a_source_slower_than_the_target_keeps_every_frame():
    assert kept([i / 5 for i in range(20)], 10) == list(range(20))


def test_jittery_source_keeps_the_mean_rate():
    rng = np.random.default_rng(3)
    timestamps = np.arange(300) / 30 + rng.uniform(-0.004, 0.004, 300)
    indices = kept(timestamps, 10)
    assert 99 <= len(indices) <= 101  # 10 s at 10 fps
    assert min(np.diff(indices)) >= 2  # never two frames of one 100 ms slot


def test_a_pause_restarts_the_grid_instead_of_a_burst():
    timestamps = [i / 30 for i in range(30)] + [5 + i / 30 for i in range(30)]
    indices = kept(timestamps, 10)
    after = [i for i in indices if i >= 30]
    assert after == list(range(30, 60, 3))


def test_a_clock_that_goes_back_restarts_the_grid():
    timestamps = [100 + i / 30 for i in range(9)] + [i / 30 for i in range(9)]
    assert kept(timestamps, 10) == [0, 3, 6, 9, 12, 15]


def test_rate_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        Sampler(0)


@given(
    gaps=st.lists(st.floats(0.001, 0.5), min_size=1, max_size=300),
    fps=st.floats(0.5, 60),
)
def test_never_more_than_the_rate_allows(gaps, fps):
    timestamps = np.cumsum([0.0, *gaps])
    indices = kept(timestamps, fps)
    assert indices[0] == 0
    duration = timestamps[-1] - timestamps[0]
    assert len(indices) <= (duration + 1e-3) * fps + 1


@given(gaps=st.lists(st.floats(0.001, 0.05), min_size=1, max_size=300), fps=st.floats(1, 20))
def test_a_faster_source_fills_every_slot(gaps, fps):
    timestamps = np.cumsum([0.0, *gaps])
    duration = timestamps[-1] - timestamps[0]
    assert len(kept(timestamps, fps)) >= int(duration * fps)
