"""Face tracks and smoothed labels on a clip of steady faces with camera noise.

    python benchmarks/tracks.py [--per-class 8] [--hold 30] [--noise 4] [--grid]

The clip: FER2013 validation faces upscaled x4 on 640x480 frames, two side by side, each pair
held for ``--hold`` results (at 10 results/s, the gateway's default sampling), classes taken
in turn so that each change of face is a real change of expression at the same place; fresh
sensor noise on every frame. The worker's own pipeline (BlazeFace following faces, the live
model on LiteRT) labels every frame; :class:`ingest.tracks.StreamTracks` then runs over the
results in order, as the gateway and ``emostream ingest`` do. Reports, per setting:

- track changes: consecutive results of one placed face (a held face, IoU > 0.5) whose track
  differs, over all such pairs (a change of face at the same place is the same track);
- label changes, raw and smoothed, over the same pairs, and their ratio;
- accuracy of raw and smoothed labels against the placed faces;
- time to show a change: from the first result of a new face to the first smoothed label
  equal to the raw labels' majority over the new face's results (changes whose majority
  differs from the face before), median and the share within 300 ms.

``--grid`` also tries other time constants and hysteresis margins.
"""

import argparse
import os
import sys
from itertools import chain, pairwise, zip_longest
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import cv2
import numpy as np
from clips import iou, make_clip, validation_faces

from emostream.config import Settings
from emostream.labels import EMOTIONS
from ingest.tracks import HYSTERESIS, SMOOTHING_S, StreamTracks
from ingest.wire import Result
from workers.analysis import analyse
from workers.classify import load_classifier
from workers.detection import make_detector

RESULTS_PER_S = 10.0


def raw_results(frames: list[np.ndarray]) -> list[Result]:
    """The worker pipeline's answer to every frame, one stream, 10 results/s."""
    settings = Settings.from_env()
    classifier = load_classifier(settings.model_store(), runtime="litert", threads=1)
    detector = make_detector(settings, threads=1)
    results = []
    for seq, frame in enumerate(frames):
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        (faces,) = analyse([gray], [1.0], detector, classifier, [("bench", seq)]).faces
        results.append(Result("bench", seq, seq / RESULTS_PER_S, classifier.version, faces))
    return results


def placed(result: Result, truth) -> dict[int, tuple]:
    """Slot of each placed face -> (its label, the found face on it), for faces that were found."""
    found = {}
    for slot, face in enumerate(truth):
        for candidate in result.faces:
            if iou(candidate.box, face.box) > 0.5:
                found[slot] = (face.label, candidate)
                break
    return found


def measure(results: list[Result], truth, hold: int, smoothing_s: float, hysteresis: float) -> dict:
    tracks = StreamTracks(smoothing_s=smoothing_s, hysteresis=hysteresis)
    seen = [placed(tracks.update(_copy(r)), t) for r, t in zip(results, truth, strict=True)]
    pairs = track_changes = raw_changes = smooth_changes = right_raw = right_smooth = faces = 0
    for before, after in pairwise(seen):
        for slot, (_, face) in after.items():
            if slot in before:
                pairs += 1
                old = before[slot][1]
                track_changes += face.track != old.track
                raw_changes += face.label != old.label
                smooth_changes += face.smoothed["label"] != old.smoothed["label"]
    for found in seen:
        for label, face in found.values():
            faces += 1
            right_raw += face.label == label
            right_smooth += face.smoothed["label"] == label
    delays = change_delays(seen, hold)
    return {
        "track changes": track_changes / pairs,
        "raw changes": raw_changes / pairs,
        "smoothed changes": smooth_changes / pairs,
        "ratio": smooth_changes / max(1, raw_changes),
        "raw accuracy": right_raw / faces,
        "smoothed accuracy": right_smooth / faces,
        "median delay": float(np.median(delays)) if delays else float("nan"),
        "within 300 ms": float(np.mean(np.array(delays) <= 0.3 + 1e-9)) if delays else float("nan"),
        "changes": len(delays),
    }


def change_delays(seen: list[dict], hold: int) -> list[float]:
    """Seconds from each real change of face to its smoothed label showing the new majority."""
    delays = []
    slots = {slot for found in seen for slot in found}
    for start in range(hold, len(seen) - hold + 1, hold):
        for slot in slots:
            old, new = (_majority(seen[s:e], slot) for s, e in ((start - hold, start), (start, start + hold)))
            if old is None or new is None or old == new:
                continue
            for index in range(start, start + hold):
                face = seen[index].get(slot)
                if face and face[1].smoothed["label"] == new:
                    delays.append((index - start) / RESULTS_PER_S)
                    break
            else:
                delays.append(hold / RESULTS_PER_S)
    return delays


def _majority(window: list[dict], slot: int) -> str | None:
    labels = [found[slot][1].label for found in window if slot in found]
    return max(set(labels), key=labels.count) if labels else None


def _copy(result: Result) -> Result:
    return Result.from_json(result.to_json())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-class", type=int, default=8, help="validation faces per class")
    parser.add_argument("--hold", type=int, default=30, help="results each pair of faces stays")
    parser.add_argument("--noise", type=float, default=4.0, help="sensor noise (grey levels, s.d.)")
    parser.add_argument("--grid", action="store_true", help="also try other settings")
    args = parser.parse_args()
    by_class = [validation_faces((name,), per_class=args.per_class) for name in EMOTIONS]
    faces = [face for face in chain.from_iterable(zip_longest(*by_class)) if face is not None]
    frames, truth = make_clip(faces, len(faces) // 2 * args.hold, per_frame=2, hold=args.hold, sensor_noise=args.noise)
    results = raw_results(frames)
    print(
        f"clip: {len(frames)} results of 2 faces, {len(faces)} faces held {args.hold} results, noise {args.noise}; "
        f"model {results[0].model_version}"
    )
    settings = [(SMOOTHING_S, HYSTERESIS)]
    if args.grid:
        settings += [
            (s, h) for s in (0.05, 0.1, 0.15, 0.2, 0.3) for h in (0.0, 0.05, 0.08, 0.12, 0.16) if (s, h) != settings[0]
        ]
    print(
        "| time constant | hysteresis | track changes | raw label changes | smoothed label changes | smoothed/raw "
        "| raw accuracy | smoothed accuracy | change shown: median | within 300 ms |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for smoothing_s, hysteresis in settings:
        row = measure(results, truth, args.hold, smoothing_s, hysteresis)
        print(
            f"| {smoothing_s:.2f} s | {hysteresis:.2f} | {row['track changes']:.2%} | {row['raw changes']:.2%} "
            f"| {row['smoothed changes']:.2%} | {row['ratio']:.2f} | {row['raw accuracy']:.1%} "
            f"| {row['smoothed accuracy']:.1%} | {row['median delay'] * 1000:.0f} ms | {row['within 300 ms']:.0%} "
            f"({row['changes']} changes) |"
        )


if __name__ == "__main__":
    main()
