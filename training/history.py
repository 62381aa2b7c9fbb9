"""Reading a run's ``history.csv`` (importable without TensorFlow, e.g. by job monitors)."""

import csv
from pathlib import Path


def read_history(path: Path) -> dict[str, list[float]]:
    """history.csv as columns, the last row of each epoch winning (resumes rewrite epochs)."""
    if not path.exists():
        return {}
    rows: dict[int, dict[str, str]] = {}
    with path.open() as handle:
        for row in csv.DictReader(handle):
            rows[int(row["epoch"])] = row
    ordered = [rows[e] for e in sorted(rows)]
    keys = [k for k in (ordered[0] if ordered else {}) if k != "epoch"]
    return {k: [float(r[k]) for r in ordered] for k in keys}
