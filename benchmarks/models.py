"""Faces/s of each architecture on this machine's CPU: Keras ``predict`` per call against one
compiled call per batch, at batch 1, 32 and 128; and training seconds per epoch.

    python benchmarks/models.py [--seconds 5] [--out benchmarks/results/models.json]

Weights are random (speed does not depend on them). Prints a Markdown table.
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from training.architectures import ARCHITECTURES, build
from training.pipeline import Augmentation, training_dataset

TRAIN_IMAGES = 28_709


def _rate(fn, batch: int, seconds: float) -> float:
    fn()  # warm up / trace
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        fn()
        done += batch
    return done / (time.perf_counter() - started)


def measure(name: str, seconds: float) -> dict:
    model = build(name)
    rng = np.random.default_rng(0)
    compiled = tf.function(
        lambda x: model(x, training=False), input_signature=[tf.TensorSpec([None, 48, 48, 1], tf.float32)]
    )
    row: dict = {"architecture": name, "parameters": model.count_params()}
    for batch in (1, 32, 128):
        x = rng.uniform(0, 255, (batch, 48, 48, 1)).astype(np.float32)
        row[f"predict_b{batch}"] = _rate(lambda x=x: model.predict(x, verbose=0), batch, seconds)
        row[f"compiled_b{batch}"] = _rate(lambda x=x: compiled(x).numpy(), batch, seconds)
    images = rng.integers(0, 255, (1024, 48, 48), dtype=np.uint8)
    labels = rng.integers(0, 7, 1024)
    model.compile(optimizer="adamw", loss="categorical_crossentropy")
    data = training_dataset(images, labels, 128, Augmentation(), seed=0)
    model.fit(data.take(1), verbose=0)
    started = time.perf_counter()
    model.fit(data, verbose=0)
    per_image = (time.perf_counter() - started) / 1024
    row["train_s_per_epoch"] = per_image * TRAIN_IMAGES
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = [measure(name, args.seconds) for name in sorted(ARCHITECTURES)]
    print(
        f"CPU: {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}\n"
    )
    print(
        "| architecture | parameters | predict b1 | compiled b1 | predict b32 | compiled b32 | predict b128 "
        "| compiled b128 | train s/epoch |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['architecture']} | {r['parameters']:,} | "
            + " | ".join(f"{r[f'{kind}_b{b}']:,.0f}" for b in (1, 32, 128) for kind in ("predict", "compiled"))
            + f" | {r['train_s_per_epoch']:,.0f} |"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
