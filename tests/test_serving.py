"""Serving without TensorFlow: LiteRT files at publish, the same scores as Keras, calibration, a lean worker."""

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from clips import validation_faces
from factories import REPO, brightness_store, publish_brightness, without_serving_file
from processes import loads_tensorflow, mapped, modules_at_exit, ready_worker

from emostream.labels import EMOTIONS
from model_store import CorruptVersion, ModelStore
from model_store.calibration import calibrate, expected_calibration_error, fit_temperature
from model_store.convert import to_tflite
from model_store.manifest import MODEL_FILE, SERVING_FILE
from model_store.store import BUNDLED
from workers.classify import LiveModel, load_classifier
from workers.litert import LiteModel


@pytest.fixture(scope="module")
def real_faces() -> np.ndarray:
    faces = validation_faces(EMOTIONS, per_class=10, offset=200)
    return np.stack([face for face, _ in faces]).reshape(-1, 48, 48, 1).astype(np.float32)


@pytest.fixture(scope="module")
def shipped() -> ModelStore:
    return ModelStore(BUNDLED)


def test_litert_float_file_gives_kerass_scores_on_real_faces(shipped, real_faces):
    live = shipped.require_live()
    model = keras.models.load_model(shipped.path(live) / MODEL_FILE, compile=False)
    lite = LiteModel(to_tflite(model, quantize=False))
    for batch in (1, 5, len(real_faces)):  # padded buckets and one chunk
        scores = next(iter(lite(real_faces[:batch]).values()))
        assert np.abs(scores - model.predict(real_faces[:batch], verbose=0)).max() <= 1e-4


def test_every_shipped_version_serves_an_int8_file_as_accurate_as_its_network(shipped, real_faces):
    for version in shipped.versions():
        manifest, _ = shipped.serving_file(version)
        metrics = manifest.metrics
        assert abs(metrics["served_validation_accuracy"] - metrics["validation_accuracy"]) <= 0.003, version
        assert metrics["validation_ece"] <= metrics["validation_ece_uncalibrated"] and manifest.temperature > 0
        # (true of the shipped versions, fitted on 3,589 faces; not a law on small sets)
    live = shipped.require_live()
    model = keras.models.load_model(shipped.path(live) / MODEL_FILE, compile=False)
    served = load_classifier(shipped, live, runtime="litert")(real_faces.astype(np.uint8))
    agree = (served.argmax(axis=1) == model.predict(real_faces, verbose=0).argmax(axis=1)).mean()
    assert agree >= 0.95 and np.allclose(served.sum(axis=1), 1.0, atol=1e-3)


def test_a_corrupt_serving_file_is_refused_and_the_old_model_keeps_serving(tmp_path):
    store = brightness_store(tmp_path)
    live = LiveModel(store, runtime="litert")
    first = live.classifier.version
    changed = publish_brightness(store, 0.9)
    store.promote(changed)
    (store.path(changed) / SERVING_FILE).write_bytes(b"flipped bits")
    with pytest.raises(CorruptVersion, match=f"{SERVING_FILE} fails its sha256 check"):
        store.verify(changed)
    assert not live.refresh(force=True)
    assert live.classifier.version == first and changed in live.refused
    # a file that is no model, with a matching checksum, is refused when it fails to load
    garbage = publish_brightness(store, 0.95)
    store.add_serving(garbage, b"\0" * 64, 1.0, {})
    store.promote(garbage)
    assert not live.refresh(force=True)
    assert live.classifier.version == first and "does not load" in live.refused[garbage]
    assert not live.refresh(force=True) and live.refusals == 2, "a refused version is not tried again unchanged"
    shutil.rmtree(store.path(garbage))  # the live pointer now names a version that is gone
    assert not live.refresh(force=True) and not live.refresh(force=True)
    assert live.classifier.version == first and live.refusals == 3


def test_a_version_without_a_serving_file_names_the_command_that_adds_it_and_is_served_once_added(tmp_path):
    store = brightness_store(tmp_path)
    live = LiveModel(store, runtime="litert")
    first = live.classifier.version
    version = publish_brightness(store, 0.9)
    store.promote(version)
    without_serving_file(store, version)  # live already, from before promotion asked for the file
    with pytest.raises(CorruptVersion, match=f"emostream models convert {version}"):
        load_classifier(store, runtime="litert")
    assert not live.refresh(force=True) and live.classifier.version == first and version in live.refused
    unserved = without_serving_file(store, publish_brightness(store, 0.95))
    with pytest.raises(CorruptVersion, match=f"emostream models convert {unserved}"):
        store.promote(unserved)
    assert store.live_version() == version, "a version workers cannot serve is not made live"
    model = keras.models.load_model(store.path(version) / MODEL_FILE, compile=False)
    store.add_serving(version, to_tflite(model), 0.5, {"served_validation_accuracy": 1.0})  # models convert
    assert live.refresh(force=True) and live.classifier.version == version, "served once its file is added"
    assert version not in live.refused
    classifier = load_classifier(store, runtime="litert")
    assert classifier.temperature == 0.5 and store.manifest(version).metrics["served_validation_accuracy"] == 1.0
    faces = np.full((2, 48, 48), 128, np.uint8)
    assert classifier(faces).argmax(axis=1).tolist() == [3, 3]


def test_the_keras_runtime_serves_the_same_version_alike(tmp_path):
    store = brightness_store(tmp_path)
    faces = np.stack([np.full((48, 48), round(255 * k / 6), np.uint8) for k in range(7)])
    litert, keras_runtime = (load_classifier(store, runtime=r) for r in ("litert", "keras"))
    assert keras_runtime.runtime == "keras" and litert.runtime == "litert"
    assert keras_runtime(faces).argmax(axis=1).tolist() == litert(faces).argmax(axis=1).tolist() == list(range(7))


def test_temperature_scaling_keeps_the_ranking_and_is_fitted_from_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 7))
    true = np.exp(logits / 2) / np.exp(logits / 2).sum(axis=1, keepdims=True)  # the real odds: half as sharp
    labels = np.array([rng.choice(7, p=p) for p in true])
    overconfident = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    temperature = fit_temperature(overconfident, labels)
    assert 1.8 <= temperature <= 2.2
    fixed = calibrate(overconfident, temperature)
    assert (fixed.argmax(axis=1) == overconfident.argmax(axis=1)).all()
    assert expected_calibration_error(fixed, labels) < 0.02 < expected_calibration_error(overconfident, labels)
    assert calibrate(overconfident, 1.0) is overconfident


def test_expected_calibration_error_by_hand():
    scores = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 0])  # confidence 0.9 right half the time, 0.6 right always
    assert expected_calibration_error(scores, labels) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)


def test_a_worker_process_loads_no_tensorflow_and_gets_ready(redis_server, tmp_path):
    probe, report = modules_at_exit(tmp_path / "probe")
    env = {"REDIS_URL": redis_server.url, "EMOSTREAM_MODEL_STORE": str(tmp_path / "store"), **probe}
    with ready_worker(env) as (worker, _):
        tensorflow, maps = loads_tensorflow(worker.pid), mapped(worker.pid)
    assert not tensorflow
    assert "litert" in maps or "tflite" in maps or "ai_edge_litert" in maps
    imported = json.loads(report.read_text())
    assert "workers.worker" in imported and not [m for m in imported if m.split(".")[0] in ("tensorflow", "keras")]


def test_serving_modules_import_no_tensorflow(tmp_path):
    code = (
        "import sys, json\n"
        "from emostream.config import Settings\n"
        "from workers.classify import load_classifier\n"
        "from workers.detection import make_detector\n"
        "import emostream.cli, gateway.app, workers.worker, ingest.app.run\n"
        "settings = Settings.from_env()\n"
        "load_classifier(settings.model_store(), runtime='auto')\n"
        "make_detector(settings)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "EMOSTREAM_MODEL_STORE": str(tmp_path / "store")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
