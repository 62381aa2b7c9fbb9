"""Training runs end to end on real FER2013 faces: artifacts, resume, publish, evaluate."""

import csv
import json
import os
import re
import time

import cv2
import keras
import numpy as np
import pytest
import redis
from factories import brightness, brightness_store, fer_dataset, flat, publish_brightness, run_cli, write_faces
from processes import modules_at_exit

from emostream.config import UP_RECORD, Settings
from model_store import Manifest, ModelStore
from model_store.calibration import calibrate
from model_store.manifest import MODEL_FILE
from model_store.store import new_version_id
from training.architectures import build
from training.data import load
from training.pipeline import Augmentation
from training.shadow import compare, sampled_faces
from training.train import TrainConfig, train
from workers.classify import load_classifier

pytestmark = pytest.mark.slow  # most tests start TensorFlow and train, here or in a child process

ARTIFACTS = (
    "config.json",
    "datasets.json",
    "best.keras",
    "history.csv",
    "history.png",
    "confusion.png",
    "reliability.png",
    "report.txt",
    "metrics.json",
)


@pytest.fixture(scope="module")
def fer_subset(tmp_path_factory):
    return fer_dataset(tmp_path_factory.mktemp("fer"), train_per_class=30, val_per_class=10)


def test_interrupted_run_resumes_where_it_stopped(fer_subset, tmp_path):
    config = TrainConfig(
        data=str(fer_subset),
        run_dir=str(tmp_path / "run"),
        epochs=3,
        batch_size=64,
        augmentation=Augmentation(erasing=0.2),
        patience=10,
    )

    def crash_after_first_epoch(epoch: int, logs: dict) -> None:
        if epoch == 1:
            raise KeyboardInterrupt("simulated interruption")

    with pytest.raises(KeyboardInterrupt):
        train(config, on_epoch=crash_after_first_epoch)
    assert not (tmp_path / "run" / "metrics.json").exists()
    seen: list[int] = []
    result = train(config, on_epoch=lambda epoch, logs: seen.append(epoch))
    assert seen == [2, 3]
    with (tmp_path / "run" / "history.csv").open() as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["0", "1", "2"]
    assert result.metrics["epochs_run"] == 3
    assert result.metrics["validation"]["n"] == 70
    with pytest.raises(ValueError, match="has finished: nothing to resume"):
        train(config)  # not trained again from its first epoch

    changed = TrainConfig(**{**config.__dict__, "epochs": 5})
    with pytest.raises(ValueError, match="different configuration"):
        train(changed)


def test_cli_trains_publishes_and_promotes_with_every_artifact(fer_subset, tmp_path):
    env = {"EMOSTREAM_MODEL_STORE": str(tmp_path / "store")}
    run_dir = tmp_path / "run"
    done = run_cli(
        "train",
        "--data",
        str(fer_subset),
        "--arch",
        "emonet",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--run-dir",
        str(run_dir),
        "--publish",
        "--promote",
        "--force",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "validation accuracy" in done.stdout
    for name in ARTIFACTS:
        assert (run_dir / name).stat().st_size > 0, name
    for plot in ("history.png", "confusion.png", "reliability.png"):
        assert cv2.imread(str(run_dir / plot)) is not None
    assert "disgust" in (run_dir / "report.txt").read_text()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["epochs"] == 2 and config["architecture"] == "emonet" and config["data"] == str(fer_subset)

    listed = json.loads(run_cli("models", "list", "--json", env=env).stdout)
    live = [m for m in listed if m["live"]]
    assert len(live) == 1 and live[0]["architecture"] == "emonet"
    manifest = live[0]
    assert manifest["datasets"]["train"]["n"] == 210
    assert manifest["datasets"]["train"]["fingerprint"].startswith("sha256:")
    files = {"model.keras", "model.tflite", "history.png", "confusion.png", "reliability.png", "metrics.json"}
    assert files <= set(manifest["files"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert manifest["metrics"]["validation_accuracy"] == metrics["validation"]["accuracy"]
    # the served int8 file is scored on validation, and its temperature fitted there
    served = manifest["metrics"]
    for key in ("served_validation_accuracy", "validation_ece", "validation_ece_uncalibrated"):
        assert 0 <= served[key] <= 1, key
    assert manifest["temperature"] > 0 and set(metrics["calibration"]) == {"temperature", "ece_before", "ece_after"}


@pytest.fixture
def small_store(fer_subset, tmp_path) -> tuple[ModelStore, list[str], str]:
    """A store of two random ``emonet`` versions and an ``emonet_wide``, scored on the 70-face subset.

    Not empty, so not seeded with the bundled versions: fast to combine and score.
    """
    store = ModelStore(tmp_path / "store")
    config = {"data": str(fer_subset), "run_dir": str(tmp_path / "unused")}

    def publish(architecture: str, seed: int) -> str:
        keras.utils.set_random_seed(seed)
        manifest = Manifest(
            version=new_version_id(architecture),
            architecture=architecture,
            created_at="2026-12-02T00:00:00+00:00",
            training_config={**config, "architecture": architecture},
        )
        return store.publish(build(architecture), manifest).version

    return store, [publish("emonet", 1), publish("emonet", 2)], publish("emonet_wide", 3)


def refused_at_once(tmp_path, *args: str, env: dict[str, str]) -> str:
    """The error of a command that must be refused before TensorFlow starts (seconds sooner)."""
    probe, report = modules_at_exit(tmp_path / "probe")
    done = run_cli(*args, env={**env, **probe})
    assert done.returncode == 2, done.stderr
    assert not [m for m in json.loads(report.read_text()) if m.split(".")[0] in ("tensorflow", "keras")]
    return done.stderr


def test_a_run_fine_tuned_from_a_version_is_published_with_that_version_as_parent(fer_subset, small_store, tmp_path):
    store, (emonet, _), wide = small_store
    env = {"EMOSTREAM_MODEL_STORE": str(store.root)}
    run_dir = tmp_path / "fine-tune"
    trained = run_cli(
        "train", "--init-from", wide, "--epochs", "1", "--run-dir", str(run_dir),
        env={**env, "EMOSTREAM_DATA": str(fer_subset)},
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    config = json.loads((run_dir / "config.json").read_text())
    assert config["data"] == str(fer_subset), "no --data: EMOSTREAM_DATA, as retraining jobs use"
    assert config["parent"] == wide
    assert config["architecture"] == "emonet_wide", "no --arch: the version's own"
    refused = refused_at_once(tmp_path, "train", "--init-from", emonet, "--arch", "emonet_wide", env=env)
    assert f"--init-from {emonet} has architecture emonet, not emonet_wide" in refused
    from_file = TrainConfig(
        data=str(fer_subset), run_dir=str(tmp_path / "file"), init_from=str(store.path(wide) / MODEL_FILE)
    )
    with pytest.raises(ValueError, match="holds emonet_wide, not emonet"):
        train(from_file)

    store.promote(publish_brightness(store, 1.0), force=True)  # a live version it cannot beat
    published = run_cli("models", "publish", str(run_dir), "--promote", env=env)  # a separate step, after a long run
    refusal = re.search(r"error: published (\S+), not promoted: .*below live", published.stderr)
    assert published.returncode == 2 and refusal, published.stderr
    version = refusal.group(1)
    assert f"`emostream models promote {version} --force` promotes it anyway" in published.stderr
    assert json.loads(run_cli("models", "show", version, "--json", env=env).stdout)["parent"] == wide


def test_versions_averaged_are_published_as_the_mean_of_their_weights(small_store, tmp_path):
    store, pair, other = small_store
    env = {"EMOSTREAM_MODEL_STORE": str(store.root)}
    assert "versions of one architecture only" in refused_at_once(
        tmp_path, "models", "average", pair[0], other, env=env
    )
    assert "two different versions" in refused_at_once(tmp_path, "models", "average", pair[0], pair[0], env=env)

    store.promote(pair[1])
    failed = run_cli(
        "models", "average", *pair, "--data", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path / "failed"), env=env
    )
    assert failed.returncode == 2 and "nowhere" in failed.stderr, failed.stderr
    assert not (tmp_path / "failed").exists(), "nothing half-written left behind"
    done = run_cli("models", "average", *pair, "--run-dir", str(tmp_path / "average"), env=env)
    assert done.returncode == 0 and done.stderr == "", done.stderr  # no converter or LiteRT start-up lines
    averaged = store.verify(done.stdout.split()[1].rstrip(":"))
    assert averaged.parent == pair[0] and averaged.training_config["averaged_from"] == pair
    assert store.live_version() == pair[1], "published, not promoted"
    networks = [keras.models.load_model(store.path(v) / "model.keras") for v in [*pair, averaged.version]]
    first, second, mean = (network.get_weights() for network in networks)
    for a, b, m in zip(first, second, mean, strict=True):
        assert np.allclose((a + b) / 2, m, atol=1e-6)
    metrics = json.loads((store.path(averaged.version) / "metrics.json").read_text())
    assert metrics["validation"]["n"] == 70  # scored on the first version's validation set
    assert averaged.metrics["validation_accuracy"] == metrics["validation"]["accuracy"]
    card = run_cli("models", "show", averaged.version, "--card", env=env).stdout
    assert f"the mean of the weights of `{pair[0]}` and `{pair[1]}`" in card
    other = fer_dataset(tmp_path / "other", train_per_class=1, val_per_class=3)
    elsewhere = run_cli("models", "average", *pair, "--data", str(other), "--run-dir", str(tmp_path / "o"), env=env)
    rescored = store.verify(elsewhere.stdout.split()[1].rstrip(":"))
    assert rescored.datasets["validation"]["n"] == 21, "the faces it was scored on, named as such"
    assert rescored.datasets["validation"]["fingerprint"] == load(other, "validation").fingerprint


def test_two_versions_ensembled_serve_the_mean_of_their_scores_as_one_network(small_store, tmp_path):
    store, pair, other = small_store
    env = {"EMOSTREAM_MODEL_STORE": str(store.root)}
    assert "versions of one architecture only" in refused_at_once(
        tmp_path, "models", "ensemble", pair[0], other, env=env
    )
    assert "unrecognized arguments" in refused_at_once(tmp_path, "models", "ensemble", *pair, other, env=env)  # two

    done = run_cli("models", "ensemble", *pair, "--run-dir", str(tmp_path / "ensemble"), env=env)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    ensemble = store.verify(done.stdout.split()[1].rstrip(":"))
    assert ensemble.architecture == "emonet_pair" and ensemble.version.startswith("emonet_pair-")
    assert ensemble.parent == pair[0] and ensemble.training_config["ensemble_of"] == pair
    assert ensemble.metrics["validation_n"] == 70  # scored on the first version's validation set
    faces = np.random.default_rng(2).uniform(0, 255, (8, 48, 48, 1)).astype("float32")
    members = [keras.models.load_model(store.path(v) / "model.keras")(faces).numpy() for v in pair]
    mean = (members[0] + members[1]) / 2
    assert not np.allclose(members[0], members[1])
    network = keras.models.load_model(store.path(ensemble.version) / "model.keras")
    np.testing.assert_allclose(network(faces).numpy(), mean, atol=1e-6)
    served = load_classifier(store, ensemble.version, runtime="litert")  # the workers' int8 file
    assert served.architecture == "emonet_pair"
    np.testing.assert_allclose(served(faces[..., 0].astype(np.uint8)), calibrate(mean, ensemble.temperature), atol=0.1)
    summary = run_cli("models", "show", ensemble.version, env=env).stdout
    assert f"the mean of the scores of `{pair[0]}` and `{pair[1]}`, run side by side" in summary


def test_cli_reports_bad_data_clearly(tmp_path):
    write_faces(tmp_path / "train", {"happy": [flat(1)]})
    (tmp_path / "train" / "sad" / "x.png").write_bytes(b"garbage")
    done = run_cli("train", "--data", str(tmp_path), "--run-dir", str(tmp_path / "run"), env={})
    assert done.returncode == 2
    assert "x.png: unreadable image" in done.stderr


def test_cli_refuses_to_select_on_the_faces_it_trains_on_or_on_none(tmp_path):
    write_faces(tmp_path / "faces", {"happy": [flat(1)], "sad": [flat(2)]})
    same = run_cli("train", "--data", str(tmp_path / "faces"), "--run-dir", str(tmp_path / "run"), env={})
    assert (
        same.returncode == 2 and "has no validation/ folder; name the validation faces with --val-data" in same.stderr
    )
    assert not (tmp_path / "run").exists(), "a refused run leaves nothing behind to refuse the corrected command"
    write_faces(tmp_path / "empty", {})
    none = run_cli(
        "train", "--data", str(tmp_path / "empty"), "--val-data", str(tmp_path / "faces"), "--run-dir",
        str(tmp_path / "run"), env={},
    )  # fmt: skip
    assert none.returncode == 2 and "empty: no training faces (0 skipped as unreadable)" in none.stderr
    zero = run_cli("train", "--data", str(tmp_path / "faces"), "--limit", "0", env={})
    assert zero.returncode == 2 and "learning rate and limit must be positive" in zero.stderr


def _known_answer_store(tmp_path) -> dict[str, str]:
    return {"EMOSTREAM_MODEL_STORE": str(brightness_store(tmp_path / "store").root)}


def test_evaluate_json_gives_the_known_answers(tmp_path):
    env = _known_answer_store(tmp_path)
    # 3 angry faces classified angry, 1 angry face that looks happy, 2 happy faces right, 1 neutral seen as sad.
    write_faces(
        tmp_path / "faces",
        {
            "angry": [flat(brightness(0))] * 3 + [flat(brightness(3))],
            "happy": [flat(brightness(3))] * 2,
            "neutral": [flat(brightness(4))],
        },
    )
    done = run_cli("evaluate", "--data", str(tmp_path / "faces"), "--json", "--tta", env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # exactly one JSON object on stdout
    assert result["n"] == 7
    assert result["accuracy"] == pytest.approx(5 / 7)
    assert result["model_version"].startswith("brightness-")
    assert result["confusion"][0] == [3, 0, 0, 1, 0, 0, 0]
    assert result["confusion"][3] == [0, 0, 0, 2, 0, 0, 0]
    assert result["confusion"][6] == [0, 0, 0, 0, 1, 0, 0]
    assert result["per_class"]["angry"] == {"precision": 1.0, "recall": 0.75, "f1": pytest.approx(6 / 7), "support": 4}
    assert result["per_class"]["happy"]["precision"] == pytest.approx(2 / 3)
    # over angry, happy and neutral (held) and sad (predicted): disgust, fear and surprise are not there to score
    assert result["macro_f1"] == pytest.approx((6 / 7 + 0.8 + 0 + 0) / 4)
    # the model's confidence on a grey level exactly at a class: softmax of -100 (m - c)^2 over the 7 centres
    centres = np.arange(7) / 6
    edge, inner = (1 / np.exp(-100 * (centres - centres[k]) ** 2).sum() for k in (0, 3))
    # 3 edge-class faces (all right) and 4 inner-class faces (2 right) fall in two bins of the top score
    assert result["temperature"] == 1.0
    assert result["ece"] == pytest.approx(3 / 7 * abs(1 - edge) + 4 / 7 * abs(0.5 - inner), abs=1e-3)  # 8-bit greys


def test_evaluate_reads_kaggle_csv_and_refuses_unknown_versions(tmp_path):
    env = _known_answer_store(tmp_path)
    rows = "".join(f"{label},{' '.join([str(brightness(label))] * 2304)},PrivateTest\n" for label in range(7))
    public = f"2,{' '.join([str(brightness(2))] * 2304)},PublicTest\n"
    (tmp_path / "fer.csv").write_text("emotion,pixels,Usage\n" + rows + public + "3,1 2,Training\n")
    done = run_cli("evaluate", "--data", str(tmp_path / "fer.csv"), "--split", "test", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["accuracy"] == 1.0
    default = run_cli("evaluate", "--data", str(tmp_path / "fer.csv"), "--json", env=env)
    assert json.loads(default.stdout)["n"] == 1, "Kaggle's file: its validation rows, never those trained on"
    bad = refused_at_once(tmp_path, "evaluate", "--data", str(tmp_path / "fer.csv"), "--split", "all", env=env)
    assert "fer.csv:10: 2 pixels, expected 2304" in bad
    missing = refused_at_once(tmp_path, "evaluate", "--data", str(tmp_path / "fer.csv"), "--model", "v0", env=env)
    split = refused_at_once(tmp_path, "evaluate", "--data", str(tmp_path / "fer.csv"), "--split", "val", env=env)
    assert "unknown split 'val'; choose from ['test', 'train', 'validation']" in split and "or all" in split
    assert "no model version 'v0'" in missing


def test_models_cli_promote_refusal_and_rollback(tmp_path, redis_server):
    env = _known_answer_store(tmp_path)
    store = ModelStore(env["EMOSTREAM_MODEL_STORE"])
    first = store.live_version()
    worse = publish_brightness(store, 0.1)
    refused = run_cli("models", "promote", worse, env=env)
    assert refused.returncode == 2 and "below live" in refused.stderr
    assert f"`emostream models promote {worse} --force` promotes it anyway" in refused.stderr
    # an `up` runs here (its record names its Redis): the workers on it are told at once
    (tmp_path / "redis").mkdir()
    (tmp_path / "redis" / UP_RECORD).write_text(json.dumps({"redis_url": redis_server.url, "pid": os.getpid()}))
    notices = redis.Redis.from_url(redis_server.url).pubsub(ignore_subscribe_messages=True)
    notices.subscribe(Settings().keys.model_channel)
    beside_up = {**env, "EMOSTREAM_REDIS_DIR": str(tmp_path / "redis")}
    assert run_cli("models", "promote", worse, "--force", env=beside_up).returncode == 0
    deadline, notice = time.monotonic() + 10, None
    while notice is None and time.monotonic() < deadline:
        notice = notices.get_message(timeout=1)  # None for the subscription's own confirmation too
    notices.close()
    assert notice and json.loads(notice["data"])["version"] == worse, "announced on the Redis of the up running here"
    shown = json.loads(run_cli("models", "show", "--json", env=env).stdout)
    assert shown["version"] == worse and shown["live"] is True
    assert run_cli("models", "rollback", env=env).stdout.strip() == f"live: {first}"
    listing = run_cli("models", "list", env=env).stdout
    assert f"* {first}" in listing and "val_acc=0.1000" in listing


def test_a_shadow_comparison_without_sampled_faces_says_why(tmp_path):
    store = brightness_store(tmp_path)
    result = compare(store, store.live_version(), sampled_faces([]))
    assert result["faces"] == 0 and result["agreement"] is None
    assert "EMOSTREAM_SHADOW_SAMPLE is above 0" in result["note"], "the default samples none"
