"""A versioned, checksummed model store on the filesystem, with one atomic live pointer.

Layout under the root::

    versions/<version>/   model.keras, manifest.json, plots, report (immutable once visible)
    staging/              half-written versions; never read; a publish removes those over an hour old
    LIVE                  the live version id (replaced atomically)
    history.json          the stack of live versions (for rollback) and an event log
    .lock                 serialises pointer updates across processes

A version becomes visible by one ``rename`` of a fully written, fsynced directory, so a
crash mid-publish leaves at most a directory under ``staging/``.
"""

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from emostream.labels import EMOTIONS
from model_store.convert import to_tflite
from model_store.errors import CorruptVersion, IncompatibleVersion, ModelStoreError, PromotionRefused, UnknownVersion
from model_store.manifest import DEFAULT_INPUT, FORMAT, MANIFEST, MODEL_FILE, SERVING_FILE, Manifest, sha256_file

if TYPE_CHECKING:
    import keras

HISTORY = "history.json"
STAGING_STALE_S = 3600.0
"""A staging directory untouched this long is a killed publish's (a publish takes seconds)."""
BUNDLED = Path(__file__).parent / "bundled"
"""The default model shipped with the code, copied into an empty default store."""


@dataclass
class LoadedModel:
    manifest: Manifest
    model: "keras.Model"

    @property
    def version(self) -> str:
        return self.manifest.version


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_files(directory: Path) -> None:
    """Flush every file of ``directory`` and the directory itself to disk (before it is renamed into place)."""
    for file in directory.iterdir():
        with file.open("rb") as handle:
            os.fsync(handle.fileno())
    _fsync_dir(directory)


def _atomic_write(path: Path, content: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as handle:
        handle.write(content.encode() if isinstance(content, str) else content)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _log(history: dict, version: str, action: str, previous: str | None, reason: str) -> None:
    """Append one promotion or rollback to ``history``'s log."""
    history["log"].append(
        {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "action": action,
            "version": version,
            "previous": previous,
            "reason": reason,
        }
    )


def new_version_id(architecture: str, when: datetime | None = None) -> str:
    """``<architecture>-<UTC timestamp>-<random>``: unique and sortable by creation time."""
    stamp = (when or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S")
    return f"{architecture}-{stamp}-{os.urandom(3).hex()}"


class ModelStore:
    """Publish, verify, load, promote and roll back model versions under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self.versions_dir = self.root / "versions"
        self.staging_dir = self.root / "staging"
        self.live_file = self.root / "LIVE"
        self.history_file = self.root / HISTORY

    def _ensure_dirs(self) -> None:
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        self.staging_dir.mkdir(exist_ok=True)

    @classmethod
    def open_default(cls, root: str | Path, bundled: Path = BUNDLED) -> "ModelStore":
        """Open ``root``; a store without a live version that holds nothing but bundled versions (new, or
        a seeding killed part way) receives the bundled versions and their live pointer."""
        store = cls(root)
        if store.live_version() is None and (bundled / "LIVE").exists():
            with store._locked():  # several processes may open a new store at once: one seeds it
                shipped = {path.name for path in (bundled / "versions").iterdir()}
                if store.live_version() is None and set(store.versions()) <= shipped:
                    store._seed(bundled)
        return store

    def _seed(self, bundled: Path) -> None:
        """Copy the bundled versions in; their shipped lineage becomes the rollback history.

        The live pointer is written once, last: a process opening the store meanwhile never sees an
        ancestor of the shipped model as live.
        """
        imported = {self.import_version(d) for d in sorted((bundled / "versions").iterdir())}  # each verified
        live = (bundled / "LIVE").read_text().strip()
        self.path(live)  # the bundled live version must be among them
        shipped = bundled / HISTORY
        lineage = json.loads(shipped.read_text())["stack"] if shipped.exists() else []
        history, previous = self._history(), None
        for version in [v for v in lineage if v != live and v in imported] + [live]:
            history["stack"].append(version)
            _log(history, version, "promote", previous, "bundled default")
            previous = version
        self._write_live(live, history)

    # --- reading -------------------------------------------------------------------

    def versions(self) -> list[str]:
        """Every visible version id, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if (p / MANIFEST).exists())

    def path(self, version: str) -> Path:
        path = self.versions_dir / version
        try:
            known = "/" not in version and not version.startswith(".") and (path / MANIFEST).exists()
        except (OSError, ValueError):  # a name too long for the file system, or holding a NUL
            known = False
        if not known:
            raise UnknownVersion(f"no model version {version[:100]!r} in {self.root}")
        return path

    def manifest(self, version: str) -> Manifest:
        try:
            return Manifest.read(self.path(version))
        except (ValueError, TypeError) as err:
            raise CorruptVersion(f"{version}: unreadable manifest ({err})") from err

    def live_version(self) -> str | None:
        """The live version id: one small file read, cheap enough to poll."""
        try:
            return self.live_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def verify(self, version: str) -> Manifest:
        """Check format, classes, input shape and every file's sha256; return the manifest."""
        manifest = self.manifest(version)
        directory = self.path(version)
        if manifest.version != version:  # a folder copied or restored under another name
            raise CorruptVersion(f"{version}: its manifest names version {manifest.version}")
        if manifest.format > FORMAT:
            raise IncompatibleVersion(f"{version}: manifest format {manifest.format} is newer than {FORMAT}")
        if list(manifest.classes) != list(EMOTIONS):
            raise IncompatibleVersion(f"{version}: classes {manifest.classes} differ from {list(EMOTIONS)}")
        if manifest.input.get("shape") != DEFAULT_INPUT["shape"]:
            raise IncompatibleVersion(
                f"{version}: input shape {manifest.input.get('shape')} is not {DEFAULT_INPUT['shape']}"
            )
        if MODEL_FILE not in manifest.files:
            raise CorruptVersion(f"{version}: manifest lists no {MODEL_FILE}")
        for name, expected in manifest.files.items():
            file = directory / name
            if not file.is_file():
                raise CorruptVersion(f"{version}: {name} is missing")
            if sha256_file(file) != expected:
                raise CorruptVersion(f"{version}: {name} fails its sha256 check")
        return manifest

    def require_live(self) -> str:
        """The live version id, or a clear error when there is none."""
        version = self.live_version()
        if version is None:
            raise UnknownVersion(f"no live model in {self.root}; train one or promote a version")
        return version

    def serving_file(self, version: str | None = None) -> tuple[Manifest, Path]:
        """Verify ``version`` (default: the live one) and return its LiteRT file, which workers run."""
        manifest = self.verify(version or self.require_live())
        if SERVING_FILE not in manifest.files:
            raise CorruptVersion(
                f"{manifest.version}: no {SERVING_FILE} (published before workers ran LiteRT); add it with "
                f"`emostream models convert {manifest.version}` (needs emostream[train])"
            )
        return manifest, self.path(manifest.version) / SERVING_FILE

    def load(self, version: str | None = None) -> LoadedModel:
        """Verify and load ``version`` (default: the live one) as a Keras model (imports TensorFlow)."""
        manifest = self.verify(version or self.require_live())
        version = manifest.version
        import keras  # deferred: TensorFlow takes seconds to import and the CLI rarely needs it

        try:
            model = keras.models.load_model(self.path(version) / MODEL_FILE, compile=False)
        except Exception as err:  # Keras raises many types for a bad archive
            raise CorruptVersion(f"{version}: model does not load ({err})") from err
        if tuple(model.input_shape[1:]) != tuple(manifest.input["shape"]) or model.output_shape[-1] != len(EMOTIONS):
            raise IncompatibleVersion(f"{version}: model maps {model.input_shape} to {model.output_shape}")
        return LoadedModel(manifest, model)

    # --- writing -------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._ensure_dirs()
        with (self.root / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def publish(
        self,
        model: "keras.Model",
        manifest: Manifest,
        extra_files: dict[str, Path] | None = None,
        serving: bytes | None = None,
    ) -> Manifest:
        """Write ``model``, its LiteRT form and ``extra_files`` as ``manifest.version``; visible only once complete.

        ``serving`` is the ``.tflite`` content workers run (default: converted here).
        """
        if (self.versions_dir / manifest.version).exists():
            raise ModelStoreError(f"version {manifest.version} already exists")
        self._ensure_dirs()
        self._sweep_staging()
        staging = Path(tempfile.mkdtemp(prefix=f"{manifest.version}.", dir=self.staging_dir))
        staging.chmod(0o755)  # mkdtemp makes it private; versions are read by every serving process
        try:
            model.save(staging / MODEL_FILE)
            (staging / SERVING_FILE).write_bytes(serving if serving is not None else to_tflite(model))
            for name, source in (extra_files or {}).items():
                with Path(source).open("rb") as src, (staging / name).open("wb") as dst:
                    shutil.copyfileobj(src, dst)
            manifest.files = {p.name: sha256_file(p) for p in sorted(staging.iterdir())}
            manifest.write(staging)
            _fsync_files(staging)
            os.rename(staging, self.versions_dir / manifest.version)
            _fsync_dir(self.versions_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return manifest

    def add_serving(self, version: str, serving: bytes, temperature: float, metrics: dict) -> Manifest:
        """Give a version published before workers ran LiteRT its ``model.tflite``, temperature and
        served-form metrics; the network and everything else in the version stay as they were.

        The file lands first and the manifest naming it replaces the old one atomically, so a
        reader sees either the old version or the complete new one.
        """
        with self._locked():
            manifest = self.verify(version)
            directory = self.path(version)
            _atomic_write(directory / SERVING_FILE, serving)
            manifest.files = {**manifest.files, SERVING_FILE: sha256_file(directory / SERVING_FILE)}
            manifest.temperature = temperature
            manifest.metrics = {**manifest.metrics, **metrics}
            _atomic_write(directory / MANIFEST, manifest.dumps())
        return manifest

    def import_version(self, source: Path) -> str:
        """Copy a version directory from elsewhere (e.g. the bundled one), verifying it."""
        version = Manifest.read(source).version
        if (self.versions_dir / version).exists():
            try:
                self.verify(version)
                return version
            except CorruptVersion:  # a copy cut short (a power loss): copied again
                shutil.rmtree(self.versions_dir / version)
        self._ensure_dirs()
        staging = Path(tempfile.mkdtemp(prefix=f"{version}.", dir=self.staging_dir))
        shutil.copytree(source, staging, dirs_exist_ok=True)
        _fsync_files(staging)
        os.rename(staging, self.versions_dir / version)
        _fsync_dir(self.versions_dir)
        try:
            self.verify(version)
        except ModelStoreError:
            shutil.rmtree(self.versions_dir / version, ignore_errors=True)  # not kept half-right
            raise
        return version

    def _sweep_staging(self) -> None:
        """Remove killed publishes' leftovers: staging directories untouched for ``STAGING_STALE_S``."""
        cutoff = time.time() - STAGING_STALE_S
        for path in self.staging_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):  # another process swept it first
                if path.stat().st_mtime <= cutoff:
                    shutil.rmtree(path, ignore_errors=True)

    def _history(self) -> dict:
        if self.history_file.exists():
            return json.loads(self.history_file.read_text())
        return {"stack": [], "log": []}

    def history(self) -> list[dict]:
        """Every promotion and rollback, oldest first."""
        return self._history()["log"]

    def _history_in_step(self) -> dict:
        """The history, its stack's top dropped when it is not the live version: the history is written
        before the live pointer, so a process killed between the two leaves the stack one ahead."""
        history, live = self._history(), self.live_version()
        if live and history["stack"] and history["stack"][-1] != live:
            history["stack"].pop()
        return history

    def _set_live(self, version: str, history: dict, action: str, reason: str) -> None:
        _log(history, version, action, self.live_version(), reason)
        self._write_live(version, history)

    def _write_live(self, version: str, history: dict) -> None:
        """Write the history, then the live pointer (the one file readers poll)."""
        _atomic_write(self.history_file, json.dumps(history, indent=2) + "\n")
        _atomic_write(self.live_file, version + "\n")

    def promote(self, version: str, *, force: bool = False, reason: str = "") -> Manifest:
        """Make ``version`` live; refused if its validation accuracy is below the live one's, or
        if workers could not serve it (no LiteRT file: the error names the command that adds it)."""
        manifest, _ = self.serving_file(version)
        with self._locked():
            self._promote_locked(manifest, force=force, reason=reason)
        return manifest

    def _promote_locked(self, manifest: Manifest, *, force: bool, reason: str) -> None:
        version, live = manifest.version, self.live_version()
        if live == version:  # already live: the rollback history must not list it twice
            return
        live_manifest = self._readable(live) if live and not force else None
        if live_manifest is not None:  # a live version gone or unreadable leaves nothing to compare with
            faces = [m.datasets.get("validation", {}).get("fingerprint") for m in (manifest, live_manifest)]
            if all(faces) and faces[0] != faces[1]:  # e.g. a --limit subset, or another dataset
                raise PromotionRefused(
                    version,
                    f"{version} was scored on other validation faces ({faces[0]}) than live {live} ({faces[1]}): "
                    "their accuracies do not compare (`emostream evaluate --model VERSION` scores both on the "
                    "same faces)",
                )
            current = live_manifest.validation_accuracy or 0.0
            candidate = manifest.validation_accuracy or 0.0
            if candidate < current:
                raise PromotionRefused(
                    version, f"{version} has validation accuracy {candidate:.4f}, below live {live} ({current:.4f})"
                )
        history = self._history_in_step()
        history["stack"].append(version)
        self._set_live(version, history, "promote", reason)

    def _readable(self, version: str) -> Manifest | None:
        try:
            return self.manifest(version)
        except ModelStoreError:
            return None

    def rollback_target(self) -> str | None:
        """The version :meth:`rollback` would make live, or None when there is none."""
        stack = self._history_in_step()["stack"]
        return stack[-2] if len(stack) >= 2 else None

    def rollback(self, reason: str = "") -> str:
        """Make the version that was live before the current one live again (``reason`` goes into the history)."""
        with self._locked():
            history = self._history_in_step()
            if len(history["stack"]) < 2:
                raise ModelStoreError("nothing to roll back to: no earlier live version")
            history["stack"].pop()
            target = history["stack"][-1]
            self.serving_file(target)  # workers must be able to run it, as for a promotion
            self._set_live(target, history, "rollback", reason)
        return target
