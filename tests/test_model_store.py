"""The versioned model store: publish, verify, load, promote, rollback, crashes and corruption."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from factories import REPO, brightness, brightness_model, publish_brightness, run_cli, without_serving_file

from emostream.redis_server import free_port
from model_store import (
    CorruptVersion,
    IncompatibleVersion,
    Manifest,
    ModelStore,
    ModelStoreError,
    PromotionRefused,
    UnknownVersion,
)
from model_store.card import combination
from model_store.manifest import MODEL_FILE, SERVING_FILE
from model_store.store import BUNDLED


def test_publish_then_load_gives_the_same_model(tmp_path):
    store = ModelStore(tmp_path)
    version = publish_brightness(store, 0.5, parent="earlier-version")
    loaded = store.load(version)
    faces = np.full((1, 48, 48, 1), brightness(3), np.float32)
    assert loaded.model(faces).numpy().argmax() == 3
    manifest = store.manifest(version)
    assert manifest.parent == "earlier-version"
    assert set(manifest.files) == {MODEL_FILE, SERVING_FILE}
    assert manifest.classes == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert store.versions() == [version]


def test_no_live_model_is_a_clear_error(tmp_path):
    store = ModelStore(tmp_path)
    publish_brightness(store, 0.5)
    assert store.live_version() is None
    with pytest.raises(UnknownVersion, match="no live model"):
        store.load()
    with pytest.raises(UnknownVersion, match="no model version 'nope'"):
        store.load("nope")
    with pytest.raises(UnknownVersion):
        store.load("../versions")
    for name in ("v" * 300, "v\0"):  # too long for the file system; a NUL: unknown, not an OSError
        with pytest.raises(UnknownVersion):
            store.manifest(name)


def test_promotion_policy_and_rollback(tmp_path):
    store = ModelStore(tmp_path)
    good, worse, better = publish_brightness(store, 0.6), publish_brightness(store, 0.5), publish_brightness(store, 0.7)
    store.promote(good)
    assert store.load().version == good
    with pytest.raises(PromotionRefused, match="below live"):
        store.promote(worse)
    assert store.live_version() == good
    store.promote(better)
    store.promote(worse, force=True)
    assert store.live_version() == worse
    assert store.rollback() == better
    assert store.rollback() == good
    with pytest.raises(ModelStoreError, match="nothing to roll back"):
        store.rollback()
    assert [e["action"] for e in store.history()] == ["promote"] * 3 + ["rollback"] * 2


def test_rollback_refuses_a_version_workers_cannot_run(tmp_path):
    store = ModelStore(tmp_path)
    old, new = publish_brightness(store, 0.6), publish_brightness(store, 0.7)
    store.promote(old)
    store.promote(new)
    without_serving_file(store, old)  # a version from before workers ran LiteRT
    with pytest.raises(CorruptVersion, match=f"{old}: no model.tflite"):
        store.rollback()
    assert store.live_version() == new and store.rollback_target() == old


def test_a_process_killed_between_the_history_and_the_live_pointer_leaves_rollback_right(tmp_path):
    """The history is written first: a kill before the live pointer leaves the stack one ahead of it."""
    store = ModelStore(tmp_path)
    first, second, third = (publish_brightness(store, accuracy) for accuracy in (0.5, 0.6, 0.7))
    store.promote(first)
    store.promote(second)
    history = json.loads(store.history_file.read_text())
    history["stack"].append(third)  # promoting third, killed before LIVE was written
    store.history_file.write_text(json.dumps(history))
    assert store.live_version() == second and store.rollback_target() == first
    store.promote(third)  # the promotion tried again
    assert store.rollback() == second and store.rollback() == first


def test_a_live_version_gone_from_the_store_does_not_block_promoting_another(tmp_path):
    store = ModelStore(tmp_path)
    gone, good = publish_brightness(store, 0.9), publish_brightness(store, 0.6)
    store.promote(gone)
    shutil.rmtree(store.path(gone))  # deleted by hand: the recovery is promoting another
    store.promote(good)
    assert store.live_version() == good


def test_a_version_folder_copied_under_another_name_is_refused(tmp_path):
    store = ModelStore(tmp_path)
    version = publish_brightness(store, 0.6)
    shutil.copytree(store.path(version), store.versions_dir / "copy")
    with pytest.raises(CorruptVersion, match="copy: its manifest names version"):
        store.serving_file("copy")


def test_a_version_imported_again_over_a_damaged_copy_is_copied_anew(tmp_path):
    """Seeding copies the bundled versions; a copy cut short (a power loss) is not kept."""
    source = ModelStore(tmp_path / "bundled")
    version = publish_brightness(source, 0.6)
    store = ModelStore(tmp_path / "store")
    store.import_version(source.path(version))
    (store.path(version) / MODEL_FILE).write_bytes(b"cut short")
    assert store.import_version(source.path(version)) == version
    assert store.verify(version).version == version


def test_accuracies_measured_on_other_validation_faces_are_not_compared(tmp_path):
    store = ModelStore(tmp_path)
    scored_on = {"validation": {"fingerprint": "sha256:all-3589", "n": 3589}}
    live = publish_brightness(store, 0.69, datasets=scored_on)
    store.promote(live)
    subset = {"validation": {"fingerprint": "sha256:all-3589[:200@1]", "n": 200}}
    lucky = publish_brightness(store, 0.75, datasets=subset)  # 200 faces: a few points of luck either way
    with pytest.raises(PromotionRefused, match=r"other validation faces .* their accuracies do not compare"):
        store.promote(lucky)
    assert store.live_version() == live
    same = publish_brightness(store, 0.70, datasets=scored_on)
    store.promote(same)
    store.promote(lucky, force=True)
    assert store.live_version() == lucky


def test_promoting_the_live_version_again_leaves_the_rollback_history_alone(tmp_path):
    store = ModelStore(tmp_path)
    first, second = publish_brightness(store, 0.6), publish_brightness(store, 0.7)
    store.promote(first)
    store.promote(second)
    store.promote(second)  # a repeated click, a retried API call
    store.promote(second, force=True)
    assert store.rollback() == first
    assert store.live_version() == first


def test_a_flipped_byte_fails_the_checksum(tmp_path):
    store = ModelStore(tmp_path)
    version = publish_brightness(store, 0.5)
    store.promote(version)
    model_file = store.path(version) / MODEL_FILE
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    with pytest.raises(CorruptVersion, match=r"model\.keras fails its sha256 check"):
        store.load()
    model_file.unlink()
    with pytest.raises(CorruptVersion, match=r"model\.keras is missing"):
        store.load()


def test_incompatible_versions_are_refused(tmp_path):
    store = ModelStore(tmp_path)
    other_classes = publish_brightness(store, 0.5, classes=["a", "b"])
    with pytest.raises(IncompatibleVersion, match="classes"):
        store.load(other_classes)
    future = publish_brightness(store, 0.5, format=99)
    with pytest.raises(IncompatibleVersion, match="format 99"):
        store.promote(future)


def test_crash_mid_publish_leaves_no_visible_version(tmp_path):
    """A publisher killed with SIGKILL while copying a file leaves only a staging directory."""
    store = ModelStore(tmp_path / "store")
    fifo = tmp_path / "plot.png"
    os.mkfifo(fifo)  # the copy blocks reading it: the process is provably mid-publish when killed
    script = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "from factories import brightness_model\n"
        "from model_store import Manifest, ModelStore\n"
        f"store = ModelStore({str(store.root)!r})\n"
        "m = Manifest(version='half-written', architecture='x', created_at='now')\n"
        f"store.publish(brightness_model(), m, {{'plot.png': {str(fifo)!r}}})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    deadline = time.monotonic() + 120
    while not any(store.staging_dir.glob("half-written.*/model.keras")):
        assert proc.poll() is None, "publisher exited before reaching the copy"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert store.versions() == []
    with pytest.raises(UnknownVersion):
        store.path("half-written")
    (leftover,) = store.staging_dir.iterdir()
    publish_brightness(store)
    assert leftover.exists(), "a publish leaves a fresh staging directory alone: it may be another's, in progress"
    hour_ago = time.time() - 3601
    os.utime(leftover, (hour_ago, hour_ago))
    publish_brightness(store)
    assert not leftover.exists(), "a publish removes a staging directory untouched for an hour"
    assert list(store.staging_dir.iterdir()) == []


def test_publishing_an_existing_version_is_refused(tmp_path):
    store = ModelStore(tmp_path)
    version = publish_brightness(store, 0.5)
    manifest = Manifest(version=version, architecture="brightness", created_at="now")
    with pytest.raises(ModelStoreError, match="already exists"):
        store.publish(brightness_model(), manifest)


def test_an_empty_default_store_receives_the_bundled_model(tmp_path):
    source = ModelStore(tmp_path / "bundle")
    version = publish_brightness(source, 0.6)
    (tmp_path / "bundle" / "LIVE").write_text(version + "\n")
    store = ModelStore.open_default(tmp_path / "store", bundled=tmp_path / "bundle")
    assert store.live_version() == version
    assert store.load().manifest.metrics == {"validation_accuracy": 0.6}
    other = publish_brightness(store, 0.7)
    store.promote(other)
    assert ModelStore.open_default(tmp_path / "store", bundled=tmp_path / "bundle").live_version() == other


def test_a_new_store_can_roll_back_along_the_shipped_lineage(tmp_path):
    shipped = json.loads((BUNDLED / "history.json").read_text())["stack"]
    store = ModelStore.open_default(tmp_path / "store")
    assert store.live_version() == (BUNDLED / "LIVE").read_text().strip() == shipped[-1]
    assert store.rollback() == shipped[-2] == store.manifest(shipped[-1]).parent
    assert store.live_version() == shipped[-2]


def test_a_seeding_killed_part_way_is_finished_by_the_next_opening(tmp_path):
    shipped = sorted(path.name for path in (BUNDLED / "versions").iterdir())
    partial = ModelStore(tmp_path / "store")
    for version in shipped[:2]:  # what a process killed while copying the bundled versions leaves
        partial.import_version(BUNDLED / "versions" / version)
    assert partial.live_version() is None
    store = ModelStore.open_default(tmp_path / "store")
    assert store.live_version() == (BUNDLED / "LIVE").read_text().strip(), "workers get a model"
    assert store.versions() == shipped


def test_a_store_being_seeded_never_shows_an_ancestor_as_live(tmp_path):
    """Processes opening a new store together (a stack's workers) all serve the shipped model."""
    shipped = json.loads((BUNDLED / "history.json").read_text())["stack"]
    root, done = tmp_path / "store", tmp_path / "seeded"
    root.mkdir()
    watcher = subprocess.Popen(
        [sys.executable, "-c", _WATCH_LIVE, str(root / "LIVE"), str(done)], stdout=subprocess.PIPE, text=True
    )
    assert watcher.stdout and watcher.stdout.readline() == "watching\n"
    store = ModelStore.open_default(root)
    done.touch()
    seen, _ = watcher.communicate(timeout=60)

    assert seen.split() == [shipped[-1]], "the live pointer appears once, as the shipped model"
    assert [(e["version"], e["previous"]) for e in store.history()] == list(
        zip(shipped, [None, *shipped[:-1]], strict=True)
    )


_WATCH_LIVE = """
import sys
from pathlib import Path
live, done, seen = Path(sys.argv[1]), Path(sys.argv[2]), set()
print("watching", flush=True)
while not done.exists():
    try:
        seen.add(live.read_text().strip())
    except FileNotFoundError:
        pass
seen.add(live.read_text().strip())  # seeding may have ended since the last read
print(*sorted(seen))
"""


def test_the_shipped_model_is_live_verified_and_documented():
    live = (BUNDLED / "LIVE").read_text().strip()
    store = ModelStore(BUNDLED)
    manifest = store.verify(live)
    assert manifest.metrics["validation_accuracy"] > 0.6
    trained = set() if combination(manifest.training_config) else {"history.png"}  # a combined version has no epochs
    plots = {"confusion.png", "reliability.png", "report.txt", "metrics.json", "config.json", *trained}
    assert plots <= set(manifest.files)
    assert manifest.training_config["architecture"] == manifest.architecture
    readme = (REPO / "README.md").read_text()
    assert live in readme
    assert json.loads((BUNDLED / "versions" / live / "metrics.json").read_text())["validation"]["n"] == 3589


def test_store_root_defaults_and_env(tmp_path):
    from emostream.config import Settings

    assert Settings.from_env({"EMOSTREAM_MODEL_STORE": str(tmp_path)}).model_store_root == Path(tmp_path)
    assert Settings.from_env({"XDG_DATA_HOME": "/x"}).model_store_root == Path("/x/emostream/models")


def test_promote_and_rollback_by_hand_succeed_when_workers_cannot_be_told_at_once(tmp_path):
    store = ModelStore(tmp_path)
    first, second = publish_brightness(store, 0.5), publish_brightness(store, 0.6)
    store.promote(first)
    env = {"EMOSTREAM_MODEL_STORE": str(tmp_path), "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}  # nobody there
    promoted = run_cli("models", "promote", second, env=env)
    assert promoted.returncode == 0 and promoted.stdout.strip() == f"live: {second}", promoted.stderr
    assert "could not tell workers at once" in promoted.stderr and store.live_version() == second
    rolled = run_cli("models", "rollback", env=env)
    assert rolled.returncode == 0 and rolled.stdout.strip() == f"live: {first}", rolled.stderr
    assert store.live_version() == first, "one rollback, not two: the command said it worked"
