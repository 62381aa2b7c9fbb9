"""The returned video's cost per frame: drawing the labels and VP8-encoding, as the gateway does.

    python benchmarks/returned_video.py [--frames 300]

640x480 camera frames (yuv420p, as the VP8 decoder gives them) of real FER2013 faces, each
labelled with one face, through aiortc's VP8 encoder:

- ``passed through``: no result to draw (the frame goes to the encoder as decoded);
- ``drawn in BGR``: converted to BGR, drawn and handed over as ``bgr24`` (what the gateway did:
  the encoder converts every such frame back to ``yuv420p``);
- ``drawn on the yuv420p planes``: no conversion either way (:func:`gateway.labelled_track.render`,
  what the gateway does now).

Reports CPU milliseconds per frame (this process's CPU time) and the ratio to passing through.
"""

import argparse
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import aiortc  # noqa: F401  before anything that may load TensorFlow
import numpy as np
from aiortc.codecs.vpx import Vp8Encoder
from av import VideoFrame
from av.video.reformatter import VideoReformatter
from clips import make_clip, validation_faces

from gateway.labelled_track import render
from gateway.overlay import draw
from ingest.wire import Face


def camera_frames(count: int) -> list[VideoFrame]:
    clip, _ = make_clip(validation_faces(("happy", "sad"), per_class=2), count, hold=10, sensor_noise=3.0)
    frames = []
    for index, image in enumerate(clip):
        frame = VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
        frame.pts, frame.time_base = index, Fraction(1, 30)
        frames.append(frame)
    return frames


def drawn_in_bgr(frame: VideoFrame, to_bgr: VideoReformatter, faces) -> VideoFrame:
    image = to_bgr.reformat(frame, format="bgr24", threads=1).to_ndarray()
    labelled = VideoFrame.from_ndarray(draw(image, faces), format="bgr24")
    labelled.pts, labelled.time_base = frame.pts, frame.time_base
    return labelled


def cpu_ms_per_frame(frames: list[VideoFrame], prepare) -> float:
    encoder = Vp8Encoder()
    encoder.encode(prepare(frames[0]))  # the codec is created on the first frame
    started = time.process_time()
    for frame in frames:
        encoder.encode(prepare(frame))
    return (time.process_time() - started) * 1000 / len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core: the encoder's threads share it
    frames = camera_frames(args.frames)
    faces = [Face.from_scores([224, 144, 192, 192], np.array([0.02, 0.01, 0.02, 0.9, 0.02, 0.02, 0.01]))]
    to_bgr, reformatter = VideoReformatter(), VideoReformatter()
    ways = {
        "passed through (no result to draw)": lambda frame: frame,
        "drawn in BGR (before)": lambda frame: drawn_in_bgr(frame, to_bgr, faces),
        "drawn on the yuv420p planes (now)": lambda frame: render(frame, reformatter, faces, 1.0, False),
    }
    costs = {name: cpu_ms_per_frame(frames, prepare) for name, prepare in ways.items()}
    print(f"{args.frames} frames of 640x480, VP8 (aiortc's encoder), one core")
    print("| frame | CPU ms per frame | x passed through |")
    print("|---|---:|---:|")
    for name, cost in costs.items():
        print(f"| {name} | {cost:.2f} | {cost / costs['passed through (no result to draw)']:.2f} |")


if __name__ == "__main__":
    main()
