"""Feedback capture through the gateway: a real aiortc camera, a real gateway and Redis; the test is the worker."""

import asyncio

import aiohttp
import numpy as np
import redis.asyncio as aioredis
from clips import make_clip, validation_faces
from gateway_helpers import ClipTrack, WireWorker, connect, run, serving

from emostream.config import Settings
from emostream.labels import EMOTIONS
from gateway.feedback import FeedbackStore
from ingest.crop import crop_face
from training.data import load_folder


async def post(http: aiohttp.ClientSession, url: str, body: object) -> tuple[int, dict]:
    async with http.post(f"{url}/api/feedback", json=body) as response:
        return response.status, await response.json()


async def camera_with_frames(served, settings: Settings, frames: list[np.ndarray], fps: float = 10):
    """Connect a camera and read (as a worker) a few of its frames off the frames stream."""
    redis = aioredis.Redis.from_url(settings.redis_url)
    worker = WireWorker(redis, settings.keys)
    await worker.join()
    client = await connect(served.url, ClipTrack(frames, fps=fps), keep_frames=1)
    received = []
    while len(received) < 3:
        received += [frame for _, frame in await worker.read()]
    return client, redis, received


def sad_not_happy(stream: str, seq: int, box: list) -> dict:
    """The correction body of one face of frame ``seq``: the worker said happy, the user says sad."""
    return {"stream": stream, "seq": seq, "box": box, "label": "sad", "predicted": "happy", "model_version": "v1"}


def happy_clip() -> tuple[list[np.ndarray], list[int]]:
    """20 frames of one happy validation face, and its box in source pixels."""
    frames, truth = make_clip(validation_faces(("happy",), per_class=1), 20, hold=20)
    return frames, list(truth[0][0].box)


def capture_on(redis_server, tmp_path, **changes) -> Settings:
    """A gateway's settings with feedback capture on, into ``tmp_path / "feedback"``."""
    return Settings(
        redis_url=redis_server.url, key_prefix="test", feedback=1, feedback_dir=tmp_path / "feedback", **changes
    )


def test_a_correction_stores_the_face_crop_as_training_data(redis_server, tmp_path):
    frames, box = happy_clip()
    settings = capture_on(redis_server, tmp_path, frame_width=320)

    async def scenario():
        async with serving(settings) as served, aiohttp.ClientSession() as http:
            client, redis, received = await camera_with_frames(served, settings, frames)
            frame = received[-1]
            correction = sad_not_happy(client.stream, frame.seq, box)
            answers = {
                "stored": await post(http, served.url, correction),
                "gone": await post(http, served.url, {**correction, "seq": 10**6}),
                "other stream": await post(http, served.url, {**correction, "stream": "gw-x-1"}),
                "bad label": await post(http, served.url, {**correction, "label": "contempt"}),
                "bad box": await post(http, served.url, {**correction, "box": [1, 2, 0, 5]}),
                "box off the frame": await post(http, served.url, {**correction, "box": [5000, 10, 50, 50]}),
                "that box again": await post(http, served.url, {**correction, "box": [5000, 10, 50, 50]}),
                "missing field": await post(http, served.url, {"stream": client.stream, "seq": frame.seq}),
                "again": await post(http, served.url, correction),
            }
            other_face = {**correction, "box": [box[0] + 100, *box[1:]]}
            together = await asyncio.gather(*(post(http, served.url, other_face) for _ in range(2)))
            flood = []  # other faces of the frame, one after another: the stream's allowance runs out
            for shift in range(1, 16):
                moved = {**correction, "box": [box[0] + shift, *box[1:]]}
                async with http.post(f"{served.url}/api/feedback", json=moved) as response:
                    flood.append((response.status, response.headers.get("Retry-After")))
            await client.close()
            await redis.aclose()
            return frame, answers, together, flood

    frame, answers, together, flood = run(scenario())
    status, stored = answers["stored"]
    assert status == 201 and stored["label"] == "sad", stored
    assert {name: status for name, (status, _) in answers.items()} == {
        "stored": 201,
        "gone": 404,
        "other stream": 404,
        "bad label": 400,
        "bad box": 400,
        "box off the frame": 400,
        "that box again": 400,  # not stored, so not a repeat
        "missing field": 400,
        "again": 409,
    }
    assert "no longer kept" in answers["gone"][1]["error"] and "contempt" in answers["bad label"][1]["error"]
    assert "corrected already" in answers["again"][1]["error"], "one face of one frame is corrected once"
    assert sorted(status for status, _ in together) == [201, 409], "even two at once"
    statuses = [status for status, _ in flood]
    accepted = statuses.count(201)
    assert 0 < accepted < len(flood) and statuses == [201] * accepted + [429] * (len(flood) - accepted), statuses
    assert all(int(wait) >= 1 for status, wait in flood if status == 429), "a 429 says when to try again"
    dataset = load_folder(tmp_path / "feedback")
    assert dataset.labels.tolist() == [EMOTIONS.index("sad")] * (2 + accepted), "only what was accepted is stored"
    expected = crop_face(frame.image, tuple(v / frame.scale for v in box))
    assert frame.scale == 2.0, "the box was given in source pixels of a downscaled frame"
    assert any(np.array_equal(image, expected) for image in dataset.images), "the face as a worker crops it"


def test_a_frame_held_while_its_user_picks_is_kept_past_the_last_few_and_can_be_corrected(redis_server, tmp_path):
    frames, box = happy_clip()
    settings = capture_on(redis_server, tmp_path, sample_fps=30)

    async def scenario():
        async with serving(settings) as served, aiohttp.ClientSession() as http:
            client, redis, received = await camera_with_frames(served, settings, frames, fps=30)
            held, unheld = received[-1].seq, received[-2].seq
            hold = {"stream": client.stream, "seq": held}
            async with http.post(f"{served.url}/api/feedback/hold", json=hold) as response:
                held_answer = response.status, await response.json()
            worker = WireWorker(redis, settings.keys)
            sampler = served.hub.sessions[client.stream].sampler
            while min(sampler.recent) <= held:  # answered as they come, until newer frames push both out
                for _, frame in await worker.read(block_ms=100):
                    await worker.answer(frame, [])
            answers = [await post(http, served.url, sad_not_happy(client.stream, seq, box)) for seq in (held, unheld)]
            async with http.post(f"{served.url}/api/feedback/hold", json={**hold, "seq": unheld}) as response:
                too_late = response.status
            await client.close()
            await redis.aclose()
            return held_answer, answers, too_late

    held_answer, ((stored, _), (gone, body)), too_late = run(scenario())
    assert held_answer[0] == 200 and held_answer[1]["held"] is True
    assert stored == 201, "a frame held when the picker opened is corrected however long the pick took"
    assert gone == 404 and "no longer kept" in body["error"] and too_late == 404
    assert load_folder(tmp_path / "feedback").labels.tolist() == [EMOTIONS.index("sad")]


def test_a_full_feedback_folder_answers_507_and_stores_nothing(redis_server, tmp_path):
    frames, box = happy_clip()
    folder = tmp_path / "feedback"
    FeedbackStore(folder, enabled=True).add(np.zeros((48, 48), np.uint8), "fear", "sad", "v0")
    settings = capture_on(redis_server, tmp_path, feedback_max=1)

    async def scenario():
        async with serving(settings) as served, aiohttp.ClientSession() as http:
            client, redis, received = await camera_with_frames(served, settings, frames)
            answer = await post(http, served.url, sad_not_happy(client.stream, received[-1].seq, box))
            await client.close()
            await redis.aclose()
            return answer

    status, body = run(scenario())
    assert status == 507 and "EMOSTREAM_FEEDBACK_MAX" in body["error"], body
    assert FeedbackStore(folder).count() == {name: int(name == "fear") for name in EMOTIONS}, "nothing more stored"


def test_nothing_is_kept_or_stored_while_the_switch_is_off(redis_server, tmp_path):
    frames, box = happy_clip()
    settings = capture_on(redis_server, tmp_path).replace(feedback=0)

    async def scenario():
        async with serving(settings) as served, aiohttp.ClientSession() as http:
            client, redis, received = await camera_with_frames(served, settings, frames)
            answer = await post(http, served.url, sad_not_happy(client.stream, received[-1].seq, box))
            kept = len(served.hub.sessions[client.stream].sampler.recent)
            async with http.get(f"{served.url}/api/config") as response:
                config = await response.json()
            await client.close()
            await redis.aclose()
            return answer, kept, config

    (status, body), kept, config = run(scenario())
    assert status == 403 and "feedback capture is off" in body["error"]
    assert kept == 0, "no frame is kept for feedback while the switch is off"
    assert not (tmp_path / "feedback").exists(), "nothing on disk"
    assert config["feedback"] is False
