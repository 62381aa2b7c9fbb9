"""How a detector's box relates to the FER2013 image of the same face, and what crop margin classifies best.

    EMOSTREAM_DETECTOR=blazeface|haar python benchmarks/crop_margin.py [--per-class 40]

Places validation faces at x2, x3 and x4 (96-192 px) on 640x480 frames with camera noise,
detects them with the configured detector, reports the placed image's centre offset and side
relative to the detector's box (0, 0 and 1.0 when its framing matches FER2013's), then the
live model's accuracy on crops grown by several factors (1.0 = the box itself) beside its
accuracy on the original 48x48 images of the same faces.
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import cv2
import numpy as np
from clips import iou, make_clip, validation_faces

from emostream.config import Settings
from emostream.labels import EMOTIONS
from ingest.crop import crop_faces
from workers.classify import load_classifier
from workers.detection import make_detector

SCALES = (0.9, 0.95, 1.0, 1.05, 1.1, 1.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-class", type=int, default=40)
    args = parser.parse_args()
    settings = Settings.from_env()
    faces = validation_faces(EMOTIONS, per_class=args.per_class, offset=100)
    clips = [make_clip(faces, len(faces), hold=1, scale=scale, sensor_noise=2) for scale in (2, 3, 4)]
    frames, truth = [f for c in clips for f in c[0]], [t for c in clips for t in c[1]]
    detector = make_detector(settings, track=False)
    classifier = load_classifier(settings.model_store())
    relative, pairs = [], []
    for frame, placed, (face, label) in zip(frames, truth, faces * 3, strict=True):
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        boxes = [b for b in detector.detect(gray) if iou(b, placed[0].box) > 0.5]
        if not boxes:
            continue
        x, y, w, h = boxes[0]
        tx, ty, tw, th = placed[0].box
        relative.append(((tx + tw / 2 - x - w / 2) / w, (ty + th / 2 - y - h / 2) / h, tw / w))
        pairs.append((gray, boxes[0], face, EMOTIONS.index(label)))
    rel = np.array(relative)
    print(f"faces: {len(frames)}, found by {settings.detector}: {len(pairs)} ({len(pairs) / len(frames):.1%})")
    print(
        f"FER image vs the box: centre offset x {np.median(rel[:, 0]):+.3f}, y {np.median(rel[:, 1]):+.3f} "
        f"(of the side), side ratio median {np.median(rel[:, 2]):.3f} (IQR {np.percentile(rel[:, 2], 25):.3f}"
        f"-{np.percentile(rel[:, 2], 75):.3f})"
    )
    labels = np.array([p[3] for p in pairs])
    original = classifier(np.stack([p[2] for p in pairs])).argmax(axis=1)
    print("\n| crop | accuracy on found faces |\n|---|---:|")
    print(f"| original 48x48 image | {(original == labels).mean():.1%} |")
    for scale in SCALES:
        crops = np.concatenate([crop_faces(gray, [box], scale) for gray, box, _, _ in pairs])
        accuracy = (classifier(crops).argmax(axis=1) == labels).mean()
        print(f"| box x {scale:.2f} | {accuracy:.1%} |")


if __name__ == "__main__":
    main()
