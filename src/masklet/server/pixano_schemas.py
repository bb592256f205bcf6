"""Wire schemas of the pixano-inference 0.7 API (camelCase out, camelCase or snake_case in, null allowed).

Field names and shapes follow pixano-inference 0.7.1 so its unmodified client validates every
response; the request side is more lenient than pixano's (float coordinates, null for any option).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class PxModel(BaseModel):
    """camelCase aliases, snake_case accepted, unknown fields ignored (as pixano does)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", allow_inf_nan=False)


class NDArrayFloat(PxModel):
    """A float32 array: shape, dtype and base64 of its raw C-order bytes."""

    shape: list[int]
    dtype: str | None = "float32"
    data: str


class CompressedRLE(BaseModel):
    """A COCO RLE: ``size`` [h, w] and ``counts`` (compressed string, or a list of run lengths)."""

    model_config = ConfigDict(extra="ignore")
    size: list[int]
    counts: str | list[int]


# ----------------------------------------------------------------------------- segmentation


class SegmentationRequest(PxModel):
    """``POST /v1/inference/segmentation``: one image, P prompts (points, boxes XYXY, mask logits)."""

    model: str
    image: str | bytes
    image_embedding: NDArrayFloat | None = None
    high_resolution_features: list[NDArrayFloat] | None = None
    mask_input: NDArrayFloat | None = None
    reset_predictor: bool | None = None
    points: list[list[list[float]]] | None = None
    labels: list[list[int]] | None = None
    boxes: list[list[float]] | None = None
    num_multimask_outputs: int | None = None
    multimask_output: bool | None = None
    return_image_embedding: bool | None = None
    return_logits: bool | None = None


class SegmentationOutput(PxModel):
    masks: list[list[CompressedRLE]]
    scores: NDArrayFloat
    image_embedding: NDArrayFloat | None = None
    high_resolution_features: list[NDArrayFloat] | None = None
    mask_logits: NDArrayFloat | None = None


# ----------------------------------------------------------------------------- tracking


class PointPrompt(PxModel):
    x: float
    y: float
    label: Literal[0, 1]


class BoxPrompt(PxModel):
    """A keyframe box in XYWH (top-left corner, width, height), as pixano's tracking keyframes."""

    x: float
    y: float
    width: float = Field(ge=0)
    height: float = Field(ge=0)


class KeyframePrompts(PxModel):
    points: list[PointPrompt] | None = None
    box: BoxPrompt | None = None
    mask: CompressedRLE | None = None


class Keyframe(PxModel):
    frame_index: int
    prompts: KeyframePrompts


class Interval(PxModel):
    start_frame: int
    end_frame: int
    direction: Literal["forward", "backward"] | None = None


class TrackingRequest(PxModel):
    """``POST /v1/inference/tracking``: frames, one keyframe per object, optional interval."""

    model: str
    video: list[str | bytes] | str | bytes
    objects_ids: list[int] | None = None
    frame_indexes: list[int] | None = None
    propagate: bool | None = None
    interval: Interval | None = None
    keyframes: list[Keyframe] | None = None
    classes: list[str] | str | None = None
    box_threshold: float | None = None


class TrackedObject(PxModel):
    track_id: int
    box: list[float] | None = None
    score: float | None = None
    class_name: str | None = Field(default=None, alias="class")
    mask: CompressedRLE | None = None


class TrackedFrame(PxModel):
    frame_index: int
    objects: list[TrackedObject]


class TrackingOutput(PxModel):
    frames: list[TrackedFrame]


# ----------------------------------------------------------------------------- envelopes


class InferenceResponse(PxModel):
    """The response envelope of every inference route."""

    id: str
    status: str = "SUCCESS"
    timestamp: str
    processing_time: float
    metadata: dict[str, Any]
    data: Any


class JobStatus(PxModel):
    """A tracking job: pixano's fields plus masklet's progress (``done`` of ``total`` frames)."""

    job_id: str
    status: Literal["running", "completed", "failed", "canceled"]
    detail: str | None = None
    data: TrackingOutput | None = None
    metadata: dict[str, Any] = {}
    timestamp: str | None = None
    processing_time: float = 0.0
    done: int = 0
    total: int = 0


class DeployModelRequest(PxModel):
    name: str | None = None
    model_class: str | None = None
    model_params: dict[str, Any] | None = None
    deployment: dict[str, Any] | None = None
