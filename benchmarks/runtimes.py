"""The live model on LiteRT against Keras: same scores, same accuracy, faces/s by batch; int8 variants.

    python benchmarks/runtimes.py [--threads 2] [--seconds 3]

On the 3,589 validation faces: the largest absolute score difference between the compiled Keras
call and the ``model.tflite`` workers run, and each one's accuracy. Then faces/s at batch 1,
4, 16 and 64 for the compiled Keras call, LiteRT float32, and two int8 conversions made here
(dynamic-range weights; full integer calibrated on 500 training faces), each with its
validation accuracy: an int8 file is worth serving only if it is faster and within 0.3 points.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import numpy as np
import tensorflow as tf
from factories import fer_root

from emostream.config import Settings
from model_store.manifest import MODEL_FILE
from training.data import load
from workers.keras_runtime import keras_infer
from workers.litert import LiteModel

BATCHES = (1, 4, 16, 64)


def rate(infer, faces: np.ndarray, batch: int, seconds: float) -> float:
    x = faces[:batch]
    infer(x)  # warm up: trace, allocate
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        infer(x)
        done += batch
    return done / (time.perf_counter() - started)


def int8_files(keras_file: Path, train: np.ndarray, out: Path) -> dict[str, Path]:
    import keras

    model = keras.models.load_model(keras_file, compile=False)
    files = {}
    for name, full in (("int8 dynamic range", False), ("int8 full integer", True)):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if full:
            sample = train[:500].reshape(-1, 48, 48, 1).astype(np.float32)
            converter.representative_dataset = lambda s=sample: ([s[i : i + 1]] for i in range(len(s)))
        files[name] = out / f"{name.replace(' ', '-')}.tflite"
        files[name].write_bytes(converter.convert())
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    store = Settings.from_env().model_store()
    manifest, tflite = store.serving_file()
    keras_file = store.path(manifest.version) / MODEL_FILE
    val = load(fer_root(), "validation")
    x = val.images.reshape(-1, 48, 48, 1).astype(np.float32)

    keras_call = keras_infer(keras_file, args.threads)
    runtimes = {"Keras, compiled call": keras_call}
    lite = LiteModel(tflite, threads=args.threads)
    runtimes["LiteRT float32 (served)"] = lambda b: next(iter(lite(b).values()))
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in int8_files(keras_file, load(fer_root(), "train").images, Path(tmp)).items():
            model = LiteModel(path, threads=args.threads)
            runtimes[f"LiteRT {name}"] = lambda b, m=model: next(iter(m(b).values()))

        reference = np.concatenate([keras_call(x[i : i + 256]) for i in range(0, len(x), 256)])
        print(f"model {manifest.version}, {len(x)} validation faces, {args.threads} threads")
        heads = " | ".join(f"faces/s at {b}" for b in BATCHES)
        print(f"| runtime | validation accuracy | max abs score diff vs Keras | {heads} |")
        print("|---|---:|---:|" + "---:|" * len(BATCHES))
        for name, infer in runtimes.items():
            scores = np.concatenate([infer(x[i : i + 64]) for i in range(0, len(x), 64)])
            accuracy = (scores.argmax(axis=1) == val.labels).mean()
            diff = np.abs(scores - reference).max()
            rates = " | ".join(f"{rate(infer, x, b, args.seconds):,.0f}" for b in BATCHES)
            print(f"| {name} | {accuracy:.2%} | {diff:.1e} | {rates} |", flush=True)


if __name__ == "__main__":
    main()
