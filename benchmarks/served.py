"""Served model versions against the serving budget: multiply-adds per face, and faces/s and
validation accuracy of the int8 ``model.tflite`` workers run, as workers run it.

    python benchmarks/served.py [VERSION ...] [--threads 2] [--seconds 3]

Default: every version in the store (``EMOSTREAM_MODEL_STORE``). The budget a live model keeps:
at most 120M multiply-adds per face and at least 1,000 faces/s on 2 cores in batches.
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import keras
import numpy as np
from factories import fer_root
from runtimes import rate

from emostream.config import Settings
from model_store.manifest import MODEL_FILE
from training.architectures import multiply_adds
from training.data import load
from workers.classify import load_classifier

BATCHES = (1, 16, 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("versions", nargs="*", metavar="VERSION")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    store = Settings.from_env().model_store()
    val = load(fer_root(), "validation")
    print(f"{len(val.labels)} validation faces, {args.threads} threads")
    heads = " | ".join(f"faces/s at {b}" for b in BATCHES)
    print(f"| version | multiply-adds | served accuracy | {heads} |")
    print("|---|---:|---:|" + "---:|" * len(BATCHES))
    for version in args.versions or store.versions():
        classifier = load_classifier(store, version, runtime="litert", threads=args.threads)
        macs = multiply_adds(keras.models.load_model(store.path(version) / MODEL_FILE, compile=False))
        scores = np.concatenate([classifier(val.images[i : i + 64]) for i in range(0, len(val.labels), 64)])
        accuracy = (scores.argmax(axis=1) == val.labels).mean()
        rates = " | ".join(f"{rate(classifier, val.images, b, args.seconds):,.0f}" for b in BATCHES)
        print(f"| `{version}` | {macs / 1e6:.1f}M | {accuracy:.2%} | {rates} |", flush=True)


if __name__ == "__main__":
    main()
