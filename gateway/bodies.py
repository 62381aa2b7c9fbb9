"""The JSON bodies of the gateway's API, each defined once (requests, the offer's answer and errors).

A route validates its request body with one of these models (:func:`gateway.api.read_body`, which
answers 400 naming the wrong field), and the OpenAPI document's schemas are generated from the same
models (:mod:`gateway.openapi`). A retraining request is :class:`training.client.RetrainSpec`, the
spec ``emostream retrain`` and the trainers use, plus the gateway's own ``include_feedback``.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from emostream.labels import Emotion
from training.client import RetrainSpec


class Body(BaseModel):
    """A JSON body: unknown fields and non-finite numbers are refused; the docstrings describe the schema."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, use_attribute_docstrings=True)


class Offer(Body):
    """One camera's WebRTC offer."""

    model_config = ConfigDict(extra="ignore")  # as always: a client may send more of its session description

    sdp: str
    """SDP with one video track and optionally a data channel "results"."""
    type: Literal["offer"]
    return_video: bool = True
    """false: send no video back (the page draws the results itself); a send-only camera means the same."""


class Answer(Body):
    """The gateway's answer to an offer."""

    sdp: str
    type: Literal["answer"]
    stream: str
    """The stream's id, as in its results."""
    key: str
    """The stream's key: sent as X-Stream-Key, it closes the stream or sends feedback on it."""
    return_video: bool
    """Whether labelled video comes back."""


class Error(Body):
    """Every error answer, whatever the status."""

    error: str
    """What went wrong; for a refused body, which field and why."""


class TrainingRequest(RetrainSpec):
    """What to retrain (every field optional), and whether to train on the users' corrections too."""

    include_feedback: bool = False
    """Also train on the feedback stored so far (the gateway's EMOSTREAM_FEEDBACK_DIR)."""

    def spec(self) -> RetrainSpec:
        return RetrainSpec.model_validate(self.model_dump(exclude={"include_feedback"}))


class Promotion(Body):
    """How to promote a version."""

    force: bool = False
    """Promote even when the version is less accurate than the live one on validation."""


class Held(Body):
    """A frame to keep while a user picks a correction of a face in it."""

    stream: str
    """The result's stream id."""
    seq: int = Field(ge=0)
    """The result's frame number."""


class Correction(Held):
    """A user's correction of one face's label: the result marked wrong, and the right label."""

    box: list[float] = Field(min_length=4, max_length=4)
    """The face's [x, y, w, h] in source pixels, as in the result."""
    label: Emotion
    """The right label."""
    predicted: Emotion
    """The label the result gave."""
    model_version: str = Field(max_length=200)
    """The result's model version."""

    @field_validator("box")
    @classmethod
    def _has_size(cls, box: list[float]) -> list[float]:
        if box[2] < 1 or box[3] < 1:
            raise ValueError("[x, y, w, h] in source pixels with w, h >= 1")
        return box
