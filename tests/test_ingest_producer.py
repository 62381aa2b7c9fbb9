"""The producer side of ingest: frame preparation, the in-flight window, XADD onto a real Redis."""

import numpy as np
import pytest

from emostream.config import Settings
from ingest.app.producer import Producer, Window, to_wire_image
from ingest.wire import MAX_SIDE, Encoding, Frame


def frame(seq: int) -> Frame:
    return Frame("s", seq, 0.0, np.zeros((2, 2), np.uint8), "reply")


def test_wide_frames_are_grey_downscaled_with_their_scale():
    bgr = np.zeros((480, 640, 3), np.uint8)
    bgr[:240, :320] = (0, 0, 255)  # red top-left quarter
    gray, scale = to_wire_image(bgr, 320)
    assert gray.shape == (240, 320) and gray.dtype == np.uint8 and scale == 2.0
    assert gray[:120, :160].mean() == pytest.approx(76, abs=1) and gray[120:, 160:].max() == 0


def test_narrow_frames_keep_their_size():
    gray, scale = to_wire_image(np.zeros((120, 160, 3), np.uint8), 320)
    assert gray.shape == (120, 160) and scale == 1.0


def test_frames_fit_the_wire_however_tall_or_wide_the_setting_allows():
    """Workers refuse a side over MAX_SIDE as malformed: a tall source or a large frame_width is fitted
    before it is sent, so every frame decodes."""
    for shape, width in [((4200, 100), 640), ((100, 5000), 6000)]:
        gray, scale = to_wire_image(np.full(shape, 128, np.uint8), width)
        assert max(gray.shape) == MAX_SIDE and scale == pytest.approx(max(shape) / MAX_SIDE, rel=1e-2)
        decoded = Frame.decode(Frame("s", 0, 0.0, gray, "reply", scale=scale).encode(Encoding.GRAY, 80))
        assert decoded.image.shape == gray.shape


def test_window_holds_at_most_capacity_oldest_first():
    window = Window(capacity=3, resend_after=1.0)
    for seq in (4, 7, 9):
        assert not window.full
        window.add(frame(seq), now=0.0)
    assert window.full and len(window) == 3 and window.oldest() == 4
    assert window.done(7, now=0.5) and not window.done(7, now=0.6)  # a duplicate result is not counted twice
    assert not window.full and window.oldest() == 4
    assert window.done(4, now=0.7) and window.oldest() == 9
    assert not window.done(123, now=0.8)


def test_overdue_frames_are_resent_in_place_then_given_up_while_workers_answer():
    window = Window(capacity=4, resend_after=1.0, max_misses=2)
    window.add(frame(1), now=0.0)
    window.add(frame(2), now=0.0)
    assert window.overdue(now=1.0, retry=True) == ([], [])
    window.done(2, now=0.5)  # workers answer, but not frame 1
    resend, lost = window.overdue(now=1.5, retry=True)
    assert [f.seq for f in resend] == [1] and lost == []
    window.add(resend[0], now=1.5)
    assert window.overdue(now=2.0, retry=True) == ([], [])  # the resend restarted its clock
    resend, lost = window.overdue(now=2.6, retry=True)
    assert resend == [] and [f.seq for f in lost] == [1] and len(window) == 0


def test_overdue_rounds_without_any_answer_do_not_count():
    window = Window(capacity=4, resend_after=1.0, max_misses=1)
    window.add(frame(1), now=0.0)
    for now in (2.0, 4.0, 6.0):  # no worker running yet
        resend, lost = window.overdue(now, retry=True)
        assert [f.seq for f in resend] == [1] and lost == []
        window.add(resend[0], now)


def test_without_retry_overdue_frames_are_given_up_at_once():
    window = Window(capacity=4, resend_after=1.0)
    window.add(frame(1), now=0.0)
    window.add(frame(2), now=0.9)
    resend, lost = window.overdue(now=1.5, retry=False)
    assert resend == [] and [f.seq for f in lost] == [1] and window.oldest() == 2


def test_stalled_only_when_frames_wait_and_nothing_is_answered():
    window = Window(capacity=4, resend_after=1.0)
    assert not window.stalled(now=100.0, timeout=5)
    window.add(frame(1), now=100.0)
    assert not window.stalled(now=104.0, timeout=5) and window.stalled(now=106.0, timeout=5)
    window.add(frame(2), now=106.0)
    window.done(1, now=107.0)
    assert not window.stalled(now=111.0, timeout=5) and window.stalled(now=113.0, timeout=5)


def test_a_slow_live_source_whose_every_frame_is_given_up_still_stalls():
    """One frame every 3 s, each given up after 1 s unanswered: the window is empty at every send."""
    window = Window(capacity=4, resend_after=1.0)
    for second in range(0, 12, 3):
        window.add(frame(second), now=float(second))
        _, lost = window.overdue(now=second + 1.5, retry=False)
        assert [f.seq for f in lost] == [second]
    window.add(frame(12), now=12.0)
    assert window.stalled(now=12.5, timeout=10), "no answer for 12.5 s while frames were sent"


def test_window_rejects_a_useless_size():
    with pytest.raises(ValueError, match="capacity"):
        Window(capacity=0, resend_after=1.0)


def test_producer_queues_wire_frames_asking_for_results_on_its_reply_stream(redis_client, redis_server):
    settings = Settings(redis_url=redis_server.url, frame_width=320, encoding="gray")
    window = Window(capacity=8, resend_after=1.0)
    producer = Producer(redis_client, settings, "cam", "emostream:results:cam", window)
    bgr = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    producer.send(17, 1234.5, bgr)
    [(_, fields)] = redis_client.xrange(settings.keys.frames)
    sent = Frame.decode(fields)
    assert (sent.stream, sent.seq, sent.ts, sent.reply, sent.scale) == ("cam", 17, 1234.5, "emostream:results:cam", 2.0)
    assert np.array_equal(sent.image, to_wire_image(bgr, 320)[0])
    assert window.oldest() == 17

    producer.resend(sent)
    [_, (_, fields)] = redis_client.xrange(settings.keys.frames)
    again = Frame.decode(fields)
    assert again.seq == 17 and again.ts > 1e9 and np.array_equal(again.image, sent.image)  # stamped now
    assert len(window) == 1


def test_producer_caps_the_frames_stream(redis_client, redis_server):
    settings = Settings(redis_url=redis_server.url, frames_maxlen=100)
    producer = Producer(redis_client, settings, "cam", "r", Window(capacity=1000, resend_after=1.0))
    for seq in range(400):
        producer.send(seq, 0.0, np.zeros((8, 8, 3), np.uint8))
    assert redis_client.xlen(settings.keys.frames) < 400
