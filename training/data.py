"""FER2013 loading: the image-folder layout and the original Kaggle CSV.

Both loaders return a :class:`FaceSet` of 48x48 uint8 grayscale faces with labels in
the fixed class order of :data:`emostream.labels.EMOTIONS`. Bad input raises
:class:`DataError` naming the file or row, unless ``skip_bad`` is set, in which case it
is skipped and counted in ``FaceSet.skipped``.
"""

import csv
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from emostream.labels import EMOTIONS, FACE_SIZE

CSV_USAGES = {"train": "Training", "validation": "PublicTest", "test": "PrivateTest"}
"""Our split names mapped to the Kaggle CSV's ``Usage`` column."""


class DataError(ValueError):
    """A dataset file, folder or row that cannot be used."""


@dataclass
class FaceSet:
    """Faces ``(N, 48, 48)`` uint8, labels ``(N,)`` int, and where they came from."""

    images: np.ndarray
    labels: np.ndarray
    fingerprint: str
    source: str
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(EMOTIONS))
        return {name: int(n) for name, n in zip(EMOTIONS, counts, strict=True)}


def to_face(image: np.ndarray) -> np.ndarray:
    """Convert any decoded image (gray, BGR or BGRA, any size) to a 48x48 uint8 face."""
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code)
    if image.dtype != np.uint8:
        # OpenCV allocates dst when given None; its stubs require an array
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)  # type: ignore[call-overload]
    if image.shape != (FACE_SIZE, FACE_SIZE):
        interpolation = cv2.INTER_AREA if image.shape[0] > FACE_SIZE else cv2.INTER_LINEAR
        image = cv2.resize(image, (FACE_SIZE, FACE_SIZE), interpolation=interpolation)
    return image


def _decode(path: Path) -> tuple[np.ndarray | None, bytes]:
    data = path.read_bytes()
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    return (None if image is None else to_face(image)), data


def load_folder(root: str | Path, *, skip_bad: bool = False, workers: int | None = None) -> FaceSet:
    """Load ``root/<class>/*`` for every class; decoding runs on a thread pool."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    unknown = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in EMOTIONS)
    if unknown:
        raise DataError(f"{root}: unknown class folder(s) {unknown}; expected {list(EMOTIONS)}")
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(EMOTIONS):
        folder = root / name
        if not folder.is_dir():
            raise DataError(f"{folder}: missing class folder (every class needs one, even if empty)")
        files += [(p, label) for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]
    with ThreadPoolExecutor(workers or min(8, (os.cpu_count() or 1) * 2)) as pool:
        decoded = list(pool.map(lambda item: _decode(item[0]), files))
    digest = hashlib.sha256()
    images, labels, skipped = [], [], []
    for (path, label), (face, data) in zip(files, decoded, strict=True):
        if face is None:
            if not skip_bad:
                raise DataError(f"{path}: unreadable image (OpenCV cannot decode it)")
            skipped.append(str(path))
            continue
        digest.update(f"{path.relative_to(root)}\0{hashlib.sha256(data).hexdigest()}\n".encode())
        images.append(face)
        labels.append(label)
    return _faceset(images, labels, digest, str(root), skipped)


def csv_columns(path: str | Path) -> list[str]:
    """The column names of a CSV's header (none for an empty or unreadable file)."""
    try:
        with Path(path).open(newline="") as handle:
            return list(csv.DictReader(handle).fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def load_csv(path: str | Path, usage: str | None = None, *, skip_bad: bool = False) -> FaceSet:
    """Load the Kaggle CSV (``emotion,pixels[,Usage]``), keeping rows whose Usage is ``usage``.

    ``usage`` is a Kaggle name (Training, PublicTest, PrivateTest) or ours (train,
    validation, test); ``None`` or ``all`` keeps every row. Rows are named by their line number.
    """
    path = Path(path)
    usage = None if usage == "all" else usage
    if usage and usage not in {*CSV_USAGES, *CSV_USAGES.values()}:
        raise DataError(
            f"unknown split {usage!r}; choose from {sorted(CSV_USAGES)} (or {sorted(CSV_USAGES.values())}) or all"
        )
    usage = CSV_USAGES.get(usage, usage) if usage else None
    digest = hashlib.sha256()
    images, labels, skipped = [], [], []
    try:
        handle = path.open(newline="")
    except OSError as err:
        raise DataError(f"{path}: cannot open ({err.strerror})") from err
    with handle:
        reader = csv.DictReader(handle)
        missing = {"emotion", "pixels"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{path}: header lacks column(s) {sorted(missing)}")
        if usage and "Usage" not in (reader.fieldnames or ()):
            raise DataError(f"{path}: no Usage column to select {usage!r} rows")
        for row in reader:
            line = reader.line_num
            if usage and row.get("Usage") != usage:
                continue
            try:
                face, label = _parse_row(row)
            except DataError as err:
                if not skip_bad:
                    raise DataError(f"{path}:{line}: {err}") from None
                skipped.append(f"{path}:{line}")
                continue
            digest.update(face.tobytes() + bytes([label]))
            images.append(face)
            labels.append(label)
    return _faceset(images, labels, digest, f"{path}[{usage or 'all'}]", skipped)


def _parse_row(row: dict[str, str]) -> tuple[np.ndarray, int]:
    raw_label = (row.get("emotion") or "").strip()
    if not raw_label.isdigit() or int(raw_label) >= len(EMOTIONS):
        raise DataError(f"label {raw_label!r} is not one of 0..{len(EMOTIONS) - 1}")
    values = (row.get("pixels") or "").split()
    if len(values) != FACE_SIZE * FACE_SIZE:
        raise DataError(f"{len(values)} pixels, expected {FACE_SIZE * FACE_SIZE}")
    try:
        pixels = np.array([int(v) for v in values])
    except ValueError:
        raise DataError("pixels are not integers") from None
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataError("pixel values outside 0..255")
    return pixels.astype(np.uint8).reshape(FACE_SIZE, FACE_SIZE), int(raw_label)


def _faceset(images: list, labels: list, digest, source: str, skipped: list[str]) -> FaceSet:
    array = np.stack(images) if images else np.zeros((0, FACE_SIZE, FACE_SIZE), np.uint8)
    return FaceSet(array, np.asarray(labels, np.int64), f"sha256:{digest.hexdigest()}", source, skipped)


def load(source: str | Path, split: str, *, skip_bad: bool = False) -> FaceSet:
    """Load ``split`` (train, validation, test) from a CSV file, a dataset root, or a class folder.

    A directory holding ``<split>/`` is a dataset root; any other directory is read as
    one folder of ``<class>/`` subfolders.
    """
    source = Path(source)
    if source.is_file():
        return load_csv(source, split, skip_bad=skip_bad)
    if (source / split).is_dir():
        return load_folder(source / split, skip_bad=skip_bad)
    if source.is_dir():
        return load_folder(source, skip_bad=skip_bad)
    raise DataError(f"{source}: no such file or directory")
