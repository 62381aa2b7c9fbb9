"""The video sent back to the browser: the camera's newest frame with its stream's latest result drawn on it."""

import asyncio
import time
from collections.abc import Sequence
from typing import cast

from aiortc import MediaStreamTrack
from av import VideoFrame
from av.video.reformatter import VideoReformatter

from gateway.overlay import draw, draw_i420
from ingest.wire import Face, Result


def render(
    frame: VideoFrame, reformatter: VideoReformatter, faces: Sequence[Face], scale: float, stale: bool
) -> VideoFrame:
    """A copy of ``frame``, the same size, with ``faces`` drawn (CPU work: run it in a thread).

    Camera video decodes to ``yuv420p`` of even sides, drawn on its planes as the encoder takes
    them; any other frame (a format, or odd sides the planes' array form cannot hold) is drawn
    in BGR, converted with a context kept from frame to frame.
    """
    if frame.format.name == "yuv420p" and not (frame.width % 2 or frame.height % 2):
        labelled = VideoFrame.from_ndarray(draw_i420(frame.to_ndarray(), faces, scale, stale), format="yuv420p")
    else:
        image = reformatter.reformat(frame, format="bgr24", threads=1).to_ndarray()
        labelled = VideoFrame.from_ndarray(draw(image, faces, scale, stale), format="bgr24")
    labelled.pts, labelled.time_base = frame.pts, frame.time_base
    return labelled


class LabelledTrack(MediaStreamTrack):
    """Reads an unbuffered relay proxy of the camera (so always its newest frame) and draws the latest result.

    A result is drawn until it is ``max_age`` seconds older than the video (capture times on the
    gateway's clock), in grey once it is more than half that.
    """

    kind = "video"

    def __init__(self, source: MediaStreamTrack, max_age: float) -> None:
        super().__init__()
        self.source = source
        self.max_age = max_age
        self._result: Result | None = None
        self._source_width = 0
        self._reformatter = VideoReformatter()

    def show(self, result: Result, source_width: int) -> None:
        """Draw ``result`` (boxes in pixels of a ``source_width``-wide frame) unless a newer one is shown."""
        if self._result is None or result.seq > self._result.seq:
            self._result, self._source_width = result, source_width

    async def recv(self) -> VideoFrame:
        frame = cast(VideoFrame, await self.source.recv())  # a video track's frames
        result = self._result
        if result is None or not result.faces:
            return frame
        age = time.time() - result.ts
        if age > self.max_age:
            return frame
        scale = frame.width / self._source_width
        return await asyncio.to_thread(render, frame, self._reformatter, result.faces, scale, age > self.max_age / 2)

    def stop(self) -> None:
        super().stop()
        self.source.stop()
