"""Request and response bodies (camelCase on the wire, snake_case accepted too)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class Schema(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", allow_inf_nan=False)


class PackedArray(Schema):
    """A float32 array: shape and base64 of its raw little-endian bytes."""

    dtype: Literal["float32"] = "float32"
    shape: list[int]
    data: str


class ImageInfo(Schema):
    image_id: str
    model: str
    width: int
    height: int
    cached: bool


class ImagePrompt(Schema):
    """Prompts of one image as ``ImagePredictor.predict`` takes them (nested number lists)."""

    point_coords: Any = None
    point_labels: Any = None
    box: Any = None
    mask_input: PackedArray | None = None


class PredictOptions(Schema):
    multimask_output: bool = True
    return_logits: bool = False
    normalize_coords: bool = True
    low_res_logits: bool = True
    mask_threshold: float = 0.0
    max_hole_area: float = Field(0.0, ge=0)
    max_sprinkle_area: float = Field(0.0, ge=0)


class PredictRequest(ImagePrompt, PredictOptions):
    pass


class BatchItem(ImagePrompt):
    image_id: str


class BatchRequest(PredictOptions):
    items: list[BatchItem] = Field(min_length=1, max_length=64)


class PredictResponse(Schema):
    image_id: str
    lead: list[int]  # leading axes of the masks, before (H, W)
    height: int
    width: int
    masks: list[dict] | None = None  # COCO RLEs, row-major over ``lead``
    mask_logits: PackedArray | None = None  # with returnLogits
    scores: list[float]
    scores_shape: list[int]
    low_res_logits: PackedArray | None = None


class BatchResponse(Schema):
    results: list[PredictResponse]


class AutomaticOptions(Schema):
    """Every ``MaskGenerator`` option except ``output_mode`` (always COCO RLE) and ``progress``."""

    points_per_side: int | None = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.8
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    mask_threshold: float = 0.0
    box_nms_thresh: float = 0.7
    mask_nms_thresh: float = 0.0
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    point_grids: list[list[list[float]]] | None = None
    min_mask_region_area: float = 0
    use_m2m: bool = False
    multimask_output: bool = True


class AutomaticResponse(Schema):
    image_id: str
    records: list[dict]


class ModelInfo(Schema):
    name: str
    status: str
    image_size: int | None = None
    embedding_size: int | None = None
    device: str | None = None


# ----------------------------------------------------------------------------- video


class VideoCreate(Schema):
    """A session from a server-side path (under the media roots) or a list of image data URIs."""

    model: str | None = None
    path: str | None = None
    frames: list[str] | None = None


class VideoInfo(Schema):
    session_id: str
    model: str
    num_frames: int
    height: int
    width: int
    obj_ids: list[int]
    log_length: int


class PointsRequest(Schema):
    frame_idx: int
    obj_id: int
    points: Any = None
    labels: Any = None
    clear_old_points: bool = True
    normalize_coords: bool = True
    box: Any = None
    logits: bool = False


class MaskRequest(Schema):
    frame_idx: int
    obj_id: int
    mask: dict  # a COCO RLE
    logits: bool = False


class ClearRequest(Schema):
    frame_idx: int
    obj_id: int
    need_output: bool = True
    logits: bool = False


class FrameResult(Schema):
    frame_idx: int
    obj_ids: list[int]
    masks: list[dict]
    mask_logits: PackedArray | None = None
    object_score_logits: list[float] | None = None  # per object; presence = sigmoid
    presence: list[float] | None = None  # per object: sigmoid of its object score logit
    events: list[dict] = Field(
        default_factory=list
    )  # track health events (lost / reappeared / low_confidence) of this frame


class RemoveResponse(Schema):
    obj_ids: list[int]
    updated: list[FrameResult]


class HealthOptions(Schema):
    """Thresholds of the track health monitor (``masklet.video.HealthMonitor``) watching a propagation or stream."""

    lost_threshold: float = Field(0.5, ge=0, le=1)
    lost_frames: int = Field(2, ge=1)
    low_confidence: float = Field(0.8, ge=0, le=1)
    min_area_ratio: float = Field(0.25, ge=0, lt=1)
    area_window: int = Field(5, ge=1)
    score_drop: float = Field(1.5, ge=0)  # logits below the recent median that count as absent (0: off)


class PropagateRequest(Schema):
    start_frame_idx: int | None = None
    max_frame_num_to_track: int | None = Field(default=None, ge=0)
    direction: Literal["forward", "backward", "both"] = "forward"
    logits: bool = False
    health: HealthOptions | None = None  # thresholds of the events on the streamed frames (default: the defaults)


class JobStatus(Schema):
    job_id: str
    session_id: str
    status: Literal["running", "completed", "failed", "canceled"]
    done: int
    total: int
    error: dict | None = None


# ----------------------------------------------------------------------------- exemplars


class ExemplarCreate(Schema):
    """Options of ``masklet.ExemplarPredictor``."""

    model: str | None = None
    max_memory: int = Field(8, ge=1, le=64)
    object_pointers: bool = True
    multimask_queries: bool | None = None
    binarize_examples: bool | None = None
    mask_threshold: float = 0.0


class ExemplarInfo(Schema):
    session_id: str
    model: str
    max_memory: int
    obj_ids: list[int]
    memory_kinds: dict[str, list[str]]  # per object id: "example" / "query", bank order


class ExemplarResponse(Schema):
    """An ``ExemplarResult``: masks as COCO RLE, the decoder's low-res logits exactly (the full-size
    logits are their upscaling), scores, object score logits and presence per object."""

    obj_ids: list[int]
    height: int
    width: int
    masks: list[dict]
    scores: list[float]
    object_score_logits: list[float]
    presence: list[float]
    low_res_logits: PackedArray
