"""Workers: detection, cropping, batched classification, and the Redis loop against a real server."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import pytest
import redis
from clips import iou, make_clip, validation_faces
from factories import REPO, brightness, brightness_store, publish_brightness
from stand_ins import read_results

from emostream.config import Settings
from emostream.redis_server import RedisServer
from ingest.crop import crop_face
from ingest.wire import Frame, Result
from workers.analysis import analyse
from workers.classify import LiveModel, load_classifier
from workers.haar import HaarDetector
from workers.tracking import FaceTracker
from workers.worker import Worker


@pytest.fixture(scope="module")
def clip():
    faces = validation_faces(("happy", "surprise", "neutral"), per_class=4)
    return make_clip(faces, frames=12, per_frame=2, hold=1)


def test_crop_of_a_placed_face_reproduces_the_fer_image():
    face, _ = validation_faces(("happy",), per_class=1)[0]
    frame = np.full((480, 640), 90, np.uint8)
    frame[100:292, 200:392] = cv2.resize(face, (192, 192), interpolation=cv2.INTER_CUBIC)
    crop = crop_face(frame, (200, 100, 192, 192), scale=1.0)
    assert crop.shape == (48, 48)
    assert np.abs(crop.astype(int) - face).mean() < 3


def test_crop_at_the_frame_edge_replicates_the_border():
    frame = np.zeros((100, 100), np.uint8)
    frame[:, :50] = 200
    crop = crop_face(frame, (-20, -20, 100, 100), scale=1.0)
    assert crop.shape == (48, 48)
    assert crop[0, 0] == 200 and crop[-1, -1] == 0


def test_haar_on_a_downscaled_frame_maps_boxes_back(clip):
    frames, truth = clip
    found = 0
    for frame, faces in zip(frames, truth, strict=True):
        boxes = HaarDetector(detect_width=320).detect(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        found += sum(any(iou(b, t.box) > 0.5 for b in boxes) for t in faces)
    assert found >= 0.6 * sum(len(t) for t in truth)


def test_analysis_classifies_all_faces_of_all_frames_in_one_call(clip, tmp_path):
    frames, _ = clip
    classifier = load_classifier(brightness_store(tmp_path))
    calls = []
    original = classifier._infer
    classifier._infer = lambda x: calls.append(len(x)) or original(x)
    grays = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames[:4]]
    analysis = analyse(grays, [2.0] * 4, HaarDetector(320), classifier)
    assert calls == [analysis.batch_size] and analysis.batch_size == sum(len(f) for f in analysis.faces) > 2
    direct = HaarDetector(320).detect(grays[0])
    assert sorted(f.box for f in analysis.faces[0]) == sorted([[2 * v for v in b] for b in direct])


def _push(client, keys, frame: Frame) -> None:
    client.xadd(keys.frames, frame.encode())


@pytest.fixture
def worker(redis_server, redis_client, tmp_path):
    settings = Settings(
        redis_url=redis_server.url, model_store_root=tmp_path / "store", batch_wait_ms=200, max_frame_age=30.0
    )
    brightness_store(settings.model_store_root)
    worker = Worker(settings, redis_client, HaarDetector(320), LiveModel(settings.model_store()))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    yield worker
    worker.stop()
    thread.join(10)
    assert not thread.is_alive()


def test_worker_batches_across_streams_and_answers_each_on_its_reply_stream(worker, redis_client, clip):
    frames, truth = clip
    keys = worker.keys
    worker.settings = worker.settings.replace(batch_frames=8)
    for seq in range(4):
        for stream in ("cam-a", "cam-b"):
            gray = cv2.cvtColor(frames[seq], cv2.COLOR_BGR2GRAY)
            half = cv2.resize(gray, (320, 240), interpolation=cv2.INTER_AREA)
            _push(redis_client, keys, Frame(stream, seq, time.time(), half, keys.results(stream), scale=2.0))
    a, b = read_results(redis_client, keys.results("cam-a"), 4), read_results(redis_client, keys.results("cam-b"), 4)
    assert [r.seq for r in a] == [0, 1, 2, 3] and {r.stream for r in a} == {"cam-a"}
    assert [r.seq for r in b] == [0, 1, 2, 3] and {r.stream for r in b} == {"cam-b"}
    mixed = [r for r in a + b if r.timings["batch_frames"] == 8]
    assert mixed, "frames of both streams should share one batch"
    assert mixed[0].timings["batch_faces"] == sum(len(r.faces) for r in a + b)
    assert {tuple(r.size) for r in a + b} == {(640, 480)}, "the source frame's size, which the boxes are in"
    for result in a:  # boxes are in source pixels (scale 2): they overlap the full-size truth
        for face in result.faces:
            assert any(iou(face.box, t.box) > 0.5 for t in truth[result.seq])
            assert face.label in face.scores and abs(sum(face.scores.values()) - 1) < 1e-3
    assert redis_client.xlen(keys.frames) == 0
    assert redis_client.xpending(keys.frames, keys.group)["pending"] == 0
    assert not redis_client.exists(keys.face_sample)  # shadow sampling is off by default: no faces kept


def test_worker_follows_each_streams_faces_between_frames(worker, redis_client):
    frames, truth = make_clip(validation_faces(("happy",), per_class=1), frames=4, hold=4, sensor_noise=2)
    passes: list[str] = []
    worker.detector = FaceTracker(HaarDetector(320), on_pass=passes.append)
    keys = worker.keys
    for seq, frame in enumerate(frames):
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        _push(redis_client, keys, Frame("cam", seq, time.time(), gray, keys.results("cam")))
    results = read_results(redis_client, keys.results("cam"), 4)
    assert passes == ["full", "tracked", "tracked", "tracked"]
    for result in results:
        assert [iou(f.box, truth[result.seq][0].box) > 0.5 for f in result.faces] == [True]


def test_shadow_sampling_keeps_a_capped_list_of_face_crops(worker, redis_client, clip):
    frames, _ = clip
    worker.settings = worker.settings.replace(shadow_sample=3)
    keys = worker.keys
    for seq in range(4):  # one frame (two faces) per batch: 8 crops offered, 3 kept
        gray = cv2.cvtColor(frames[seq], cv2.COLOR_BGR2GRAY)
        _push(redis_client, keys, Frame("cam", seq, time.time(), gray, keys.results("cam")))
        read_results(redis_client, keys.results("cam"), seq + 1)
    sample = redis_client.lrange(keys.face_sample, 0, -1)
    assert len(sample) == 3 and all(len(face) == 48 * 48 for face in sample)


def test_worker_drops_stale_and_malformed_frames_and_counts_them(worker, redis_client):
    keys = worker.keys
    face = np.full((96, 96), brightness(5), np.uint8)
    # stale by Redis's clock: added (entry id) an hour ago, whatever its capture time says; and junk, never decoded
    hour_ago = int(time.time() * 1000) - 3_600_000
    redis_client.xadd(keys.frames, Frame("s", 0, time.time(), face, keys.results("s")).encode(), id=f"{hour_ago}-0")
    redis_client.xadd(keys.frames, {"v": "1", "data": b"junk"}, id=f"{hour_ago}-1")
    redis_client.xadd(keys.frames, {"v": "1", "stream": "s", "enc": "jpeg", "data": b"junk"})
    redis_client.xadd(keys.frames, {**Frame("s", 1, time.time(), face, "r").encode(), "stream": b"\xff"})
    # a reply key that is not a results stream (here the workers' own heartbeat hash) is never written to
    _push(redis_client, keys, Frame("s", 2, time.time(), face, keys.workers))
    _push(redis_client, keys, Frame("s", 3, time.time(), face, keys.results("s")))
    results = read_results(redis_client, keys.results("s"), 1)
    assert [r.seq for r in results] == [3]

    def sample(name: str, **labels: str) -> float:
        return worker.metrics.registry.get_sample_value(name, labels) or 0.0

    deadline = time.monotonic() + 10  # the counters move just after the answer is published
    while sample("emostream_frames_processed_total") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sample("emostream_frames_dropped_total", reason="stale") == 2
    assert sample("emostream_frames_dropped_total", reason="malformed") == 3
    assert sample("emostream_frames_processed_total") == 1
    assert redis_client.xpending(keys.frames, keys.group)["pending"] == 0
    beat = json.loads(redis_client.hget(keys.workers, worker.name))
    assert beat["model_version"] == results[0].model_version


class FailingOn(HaarDetector):
    """Haar, except that a frame of stream ``bad`` makes it raise, as a detector bug would."""

    def detect(self, gray, key=None):
        if key and key[0] == "bad":
            raise ValueError("a frame this detector did not expect")
        return super().detect(gray, key)


def test_a_batch_that_fails_is_dropped_counted_and_the_worker_goes_on(worker, redis_client, caplog):
    keys = worker.keys
    worker.detector = FailingOn(320)
    face = np.full((96, 96), brightness(5), np.uint8)
    _push(redis_client, keys, Frame("bad", 0, time.time(), face, keys.results("bad")))

    def failed() -> float:
        return worker.metrics.registry.get_sample_value("emostream_frames_dropped_total", {"reason": "failed"})

    deadline = time.monotonic() + 30
    while failed() < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert failed() == 1
    _push(redis_client, keys, Frame("good", 0, time.time(), face, keys.results("good")))
    assert [r.seq for r in read_results(redis_client, keys.results("good"), 1)] == [0], "the worker goes on"
    assert redis_client.xlen(keys.results("bad")) == 0, "the failed frame is not answered"
    assert redis_client.xlen(keys.frames) == 0 and redis_client.xpending(keys.frames, keys.group)["pending"] == 0
    assert "labelling 1 frame(s) failed" in caplog.text and "a frame this detector did not expect" in caplog.text


def test_the_undelivered_gauge_counts_the_backlog_when_redis_cannot(redis_server, redis_client, tmp_path):
    settings = Settings(redis_url=redis_server.url, model_store_root=tmp_path / "store")
    brightness_store(settings.model_store_root)
    worker = Worker(settings, redis_client, HaarDetector(320), LiveModel(settings.model_store()))
    keys = worker.keys
    worker.ensure_group()
    for seq in range(20):
        redis_client.xadd(keys.frames, {"seq": str(seq)})
    redis_client.xreadgroup(keys.group, "slow", {keys.frames: ">"}, count=4)  # pending with a slow worker
    ((_, done),) = redis_client.xreadgroup(keys.group, "fast", {keys.frames: ">"}, count=4)
    ids = [entry_id for entry_id, _ in done]
    redis_client.xack(keys.frames, keys.group, *ids)
    redis_client.xdel(keys.frames, *ids)  # what a worker does with a finished batch
    (group,) = redis_client.xinfo_groups(keys.frames)
    assert group["lag"] is None, "Redis cannot count the lag of a stream with entries deleted after its oldest pending"

    worker.measure_queue()

    def gauge(name: str, **labels: str) -> float | None:
        return worker.metrics.registry.get_sample_value(name, labels)

    assert gauge("emostream_queue_length") == 16
    assert gauge("emostream_consumer_lag", kind="pending") == 4
    assert gauge("emostream_consumer_lag", kind="undelivered") == 12, "the 12 frames no worker has read"


def test_live_model_follows_promotions_and_refuses_corrupt_versions(tmp_path):
    store = brightness_store(tmp_path)
    live = LiveModel(store)
    first = live.classifier.version
    newer = publish_brightness(store, 0.9)
    store.promote(newer)
    assert live.refresh(force=True) and live.classifier.version == newer
    broken = publish_brightness(store, 0.95)
    store.promote(broken)
    (store.path(broken) / "model.keras").write_bytes(b"not a model")
    assert not live.refresh(force=True)
    assert live.classifier.version == newer and broken in live.refused
    assert first != newer


def test_predict_cli_labels_image_files(clip, tmp_path):
    frames, truth = clip
    cv2.imwrite(str(tmp_path / "frame.png"), frames[0])
    (tmp_path / "bad.png").write_bytes(b"nope")
    brightness_store(tmp_path / "store")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "emostream.cli",
            "predict",
            str(tmp_path / "frame.png"),
            str(tmp_path / "bad.png"),
            str(tmp_path / "missing.png"),
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"EMOSTREAM_MODEL_STORE": str(tmp_path / "store"), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert done.returncode == 2 and "bad.png: not a readable image" in done.stderr
    assert "missing.png: no such file" in done.stderr
    [report] = json.loads(done.stdout)
    assert report["image"].endswith("frame.png") and report["faces"]
    for face in report["faces"]:
        assert any(iou(face["box"], t.box) > 0.5 for t in truth[0])


def test_a_frame_reclaimed_from_a_stuck_worker_is_published_once(redis_server, redis_client, tmp_path):
    settings = Settings(
        redis_url=redis_server.url, model_store_root=tmp_path / "store", max_frame_age=60.0, batch_wait_ms=0
    )
    brightness_store(settings.model_store_root)
    model = LiveModel(settings.model_store())
    stuck = Worker(settings, redis_client, HaarDetector(320), model, name="stuck")
    rescuer = Worker(settings, redis_client, HaarDetector(320), model, name="rescuer", claim_idle_ms=50)
    stuck.ensure_group()
    keys, reply = settings.keys, settings.keys.results("s")
    face = np.full((96, 96), brightness(1), np.uint8)
    for seq in range(3):
        _push(redis_client, keys, Frame("s", seq, time.time(), face, reply))
    held = stuck.read_batch(block_ms=100)
    assert len(held.frames) == 3
    deadline = time.monotonic() + 10
    while not (reclaimed := rescuer.reclaim()).ids:  # claimable once idle for claim_idle_ms
        assert time.monotonic() < deadline, "the stuck worker's frames never became claimable"
        time.sleep(0.02)
    assert [f.seq for f in reclaimed.frames] == [0, 1, 2]
    rescuer.process(reclaimed)
    stuck.process(held)  # the stuck worker wakes up: its answers must not be published again
    published = redis_client.xrange(reply)
    assert [Result.decode(fields).seq for _, fields in published] == [0, 1, 2]
    assert {Result.decode(fields).worker for _, fields in published} == {"rescuer"}
    assert redis_client.xpending(keys.frames, keys.group)["pending"] == 0 and redis_client.xlen(keys.frames) == 0
    reclaimed_total = rescuer.metrics.registry.get_sample_value("emostream_frames_reclaimed_total")
    assert reclaimed_total == 3
    assert stuck.metrics.registry.get_sample_value("emostream_results_published_total") == 0


def test_worker_survives_a_redis_restart(redis_server, tmp_path):
    import redis

    settings = Settings(redis_url=redis_server.url, model_store_root=tmp_path / "store", max_frame_age=30.0)
    brightness_store(settings.model_store_root)
    client = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    worker = Worker(settings, client, HaarDetector(320), LiveModel(settings.model_store()))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    keys, reply = settings.keys, settings.keys.results("s")
    face = np.full((96, 96), brightness(4), np.uint8)
    _push(client, keys, Frame("s", 0, time.time(), face, reply))
    assert [r.seq for r in read_results(client, reply, 1)] == [0]
    redis_server.stop()  # an outage: the data (and the consumer group) are gone
    time.sleep(1.0)
    redis_server.start()
    deadline = time.monotonic() + 60
    answered: list[Result] = []
    while not answered and time.monotonic() < deadline:
        try:
            _push(client, keys, Frame("s", 1, time.time(), face, reply))
            answered = read_results(client, reply, 1, timeout=3)
        except redis.ConnectionError:
            time.sleep(0.5)
    worker.stop()
    thread.join(15)
    assert [r.seq for r in answered][:1] == [1]
    assert not thread.is_alive()


def test_a_deleted_frames_stream_is_made_again(worker, redis_client):
    keys = worker.keys
    face = np.full((96, 96), brightness(4), np.uint8)
    _push(redis_client, keys, Frame("s", 0, time.time(), face, keys.results("s")))
    assert [r.seq for r in read_results(redis_client, keys.results("s"), 1)] == [0]
    redis_client.delete(keys.frames)  # an operator's DEL or FLUSHDB while the worker blocks on the stream
    deadline = time.monotonic() + 30
    while not redis_client.exists(keys.frames) and time.monotonic() < deadline:
        time.sleep(0.05)  # the worker makes the stream and its group again
    _push(redis_client, keys, Frame("s", 1, time.time(), face, keys.results("s")))
    assert [r.seq for r in read_results(redis_client, keys.results("s"), 2)] == [0, 1], "the worker goes on"


def test_heartbeats_of_workers_that_stopped_beating_expire(redis_client, tmp_path):
    settings = Settings(model_store_root=tmp_path / "store")
    brightness_store(settings.model_store_root)
    keys = settings.keys
    seconds, _ = redis_client.time()
    redis_client.hset(keys.workers, "crashed", json.dumps({"name": "crashed", "ts": seconds - 3600}))
    redis_client.hset(keys.workers, "garbled", b"not json")
    redis_client.hset(keys.workers, "alive", json.dumps({"name": "alive", "ts": seconds - 2}))
    worker = Worker(settings, redis_client, HaarDetector(320), LiveModel(settings.model_store()), name="me")
    worker.ensure_group()
    worker.heartbeat()
    assert sorted(redis_client.hkeys(keys.workers)) == [b"alive", b"me"]


def test_a_worker_waits_out_its_redis_turning_replica_and_primary_again(worker, redis_client):
    """A failover seen from the old primary: writes answer READONLY until it is a primary again."""
    keys = worker.keys
    face = np.full((96, 96), brightness(4), np.uint8)
    _push(redis_client, keys, Frame("s", 0, time.time(), face, keys.results("s")))
    assert [r.seq for r in read_results(redis_client, keys.results("s"), 1)] == [0]
    with RedisServer() as primary:
        redis_client.replicaof("127.0.0.1", primary.port)  # its data replaced by the (empty) primary's
        deadline = time.monotonic() + 30
        while redis_client.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica never synced"
            time.sleep(0.1)
        time.sleep(2)  # the worker's reads meet READONLY meanwhile
        redis_client.replicaof("NO", "ONE")
    _push(redis_client, keys, Frame("s", 1, time.time(), face, keys.results("s")))
    assert [r.seq for r in read_results(redis_client, keys.results("s"), 1, timeout=30)] == [1], "the worker goes on"


def test_a_worker_waits_out_a_redis_that_cannot_save_its_snapshot(worker, redis_client):
    """A full disk: with snapshots on, a failed save makes Redis refuse writes (MISCONF) until one succeeds."""
    keys = worker.keys
    face = np.full((96, 96), brightness(4), np.uint8)
    _push(redis_client, keys, Frame("s", 0, time.time(), face, keys.results("s")))
    assert [r.seq for r in read_results(redis_client, keys.results("s"), 1)] == [0]
    redis_client.config_set("save", "3600 1")
    snapshot = Path(redis_client.config_get("dir")["dir"]) / redis_client.config_get("dbfilename")["dbfilename"]
    snapshot.mkdir()  # no file can take its place: saving fails, as on a full disk
    redis_client.bgsave()

    def saved() -> str:
        while redis_client.info("persistence")["rdb_bgsave_in_progress"]:
            time.sleep(0.05)
        return redis_client.info("persistence")["rdb_last_bgsave_status"]

    assert saved() == "err"
    with pytest.raises(redis.ResponseError, match="MISCONF"):
        redis_client.set("probe", 1)
    time.sleep(2)  # the worker's reads meet MISCONF meanwhile
    snapshot.rmdir()
    redis_client.bgsave()
    assert saved() == "ok"
    _push(redis_client, keys, Frame("s", 1, time.time(), face, keys.results("s")))
    assert [r.seq for r in read_results(redis_client, keys.results("s"), 2, timeout=30)] == [0, 1], "the worker goes on"


def test_a_reply_key_that_is_not_a_stream_loses_its_answer_only(worker, redis_client):
    """Redis does not undo a script's earlier writes when a command fails: the script must not fail."""
    keys = worker.keys
    face = np.full((96, 96), brightness(4), np.uint8)
    redis_client.set(keys.results("taken"), "a string some other program keeps here")
    for seq, stream in enumerate(["s", "taken", "s", "s"]):
        _push(redis_client, keys, Frame(stream, seq, time.time(), face, keys.results(stream)))
    assert [r.seq for r in read_results(redis_client, keys.results("s"), 3, timeout=30)] == [0, 2, 3]
    deadline = time.monotonic() + 30
    while redis_client.xlen(keys.frames) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert redis_client.xlen(keys.frames) == 0, "every frame taken off the stream"
    assert redis_client.get(keys.results("taken")) == b"a string some other program keeps here"


def test_consumers_that_stopped_leave_the_group(redis_client, tmp_path):
    settings = Settings(model_store_root=tmp_path / "store")
    brightness_store(settings.model_store_root)
    keys = settings.keys
    worker = Worker(settings, redis_client, HaarDetector(320), LiveModel(settings.model_store()), name="me")
    worker.ensure_group()
    redis_client.xadd(keys.frames, {"x": "1"})
    redis_client.xreadgroup(keys.group, "busy", {keys.frames: ">"}, count=1)  # holds a frame: kept
    redis_client.xgroup_createconsumer(keys.frames, keys.group, "gone")  # a stopped worker's name
    time.sleep(0.3)
    with mock.patch("workers.worker.BEAT_EXPIRE_S", 0.2):
        worker.forget_idle_consumers()
    assert sorted(c["name"] for c in redis_client.xinfo_consumers(keys.frames, keys.group)) == [b"busy"]
    stopped = threading.Thread(target=worker.run)
    worker.stop()  # stops at once: a clean stop leaves nothing of it in the group
    redis_client.xgroup_createconsumer(keys.frames, keys.group, "me")
    stopped.start()
    stopped.join(10)
    assert sorted(c["name"] for c in redis_client.xinfo_consumers(keys.frames, keys.group)) == [b"busy"]


def test_a_live_pointer_that_cannot_be_read_leaves_the_model_serving(tmp_path):
    store = brightness_store(tmp_path)
    live = LiveModel(store)
    serving = live.classifier.version
    store.live_file.unlink()
    store.live_file.mkdir()  # reading it fails as an unreachable shared disk's file does (an OSError)
    assert not live.refresh(force=True) and live.classifier.version == serving
