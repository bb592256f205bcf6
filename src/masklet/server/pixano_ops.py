"""pixano-inference requests run on masklet: media, prompts, embeddings, tracking on bounded sessions.

Kept apart from the routes so the translation (pixano's SAM2 plugin semantics onto masklet's
ImagePredictor / VideoPredictor) is readable on its own; every bad input raises an ApiError 4xx.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
import torch

from ..errors import MaskletError
from ..image import ImageEmbeddings, ImagePredictor
from ..video import ArrayFrames, VideoPredictor, open_frames
from .codec import (
    check_encoded_size,
    data_uri_bytes,
    decode_image,
    image_id,
    masks_to_rles,
    pack_array,
    unpack_array,
)
from .deps import Context, media_path
from .errors import ApiError, to_api_error
from .pixano_schemas import (
    CompressedRLE,
    JobStatus,
    NDArrayFloat,
    SegmentationOutput,
    SegmentationRequest,
    TrackingOutput,
    TrackingRequest,
)
from .pool import Loaded
from .schemas import PropagateRequest
from .store import Session
from .video_ops import Progress, propagate

#: pixano-inference's error code of each HTTP status (its envelope's ``code``).
PIXANO_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "payload_too_large",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
    504: "timeout",
}
#: ``image`` naming an image masklet already holds (its ``imageId`` from an earlier response or POST /v1/images).
IMAGE_REF = "masklet:"
MODEL_CLASS = "masklet.Sam2Model"


def pixano_error(err: Exception) -> ApiError | None:
    """A masklet error (or ApiError) re-coded with pixano's code names; None for a real fault."""
    api = to_api_error(err)
    if api is None:
        return None
    return ApiError(api.status, PIXANO_CODES.get(api.status, api.code), api.message, api.headers)


def bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def envelope(loaded: Loaded, capability: str, data: Any, start: float, **extra: Any) -> dict:
    """pixano's response envelope ``{id, status, timestamp, processingTime, metadata, data}``."""
    return {
        "id": f"masklet-{loaded.name}-{uuid.uuid4().hex[:12]}",
        "status": "SUCCESS",
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "processingTime": time.perf_counter() - start,
        "metadata": model_metadata(loaded.name, capability) | extra,
        "data": data,
    }


def model_metadata(name: str, capability: str) -> dict:
    return {"model_name": name, "capability": capability, "model_class": MODEL_CLASS}


# ----------------------------------------------------------------------------- media


def media_bytes(ctx: Context, item: str | bytes, what: str) -> bytes:
    """The encoded bytes of an image given as bytes (multipart), a data URI or base64, or a path
    under the media roots; URLs are refused (this server fetches nothing)."""
    if isinstance(item, bytes):
        return item
    if item.startswith(("http://", "https://")):
        raise ApiError(
            403,
            "forbidden",
            f"{what}: fetching URLs is disabled on this server; send the bytes (data URI or the /binary route)",
        )
    if item.startswith("data:"):
        return data_uri_bytes(item)
    if ctx.settings.media_roots:
        return media_path(ctx.settings, item).read_bytes()
    try:
        return data_uri_bytes(item)
    except MaskletError:
        raise ApiError(
            400,
            "bad_request",
            f"{what}: expected a data URI, base64 bytes or (with media roots "
            "configured) a path; got a string that is none of these",
        ) from None


# ----------------------------------------------------------------------------- segmentation


def _image(
    ctx: Context, loaded: Loaded, req: SegmentationRequest
) -> tuple[str, np.ndarray | None, ImageEmbeddings | None]:
    """The image's content id, pixels (None for a cached reference) and cached embeddings if any."""
    if isinstance(req.image, str) and req.image.startswith(IMAGE_REF):
        iid = req.image[len(IMAGE_REF) :]
        item = ctx.images.get(iid)
        if item.model != loaded.name:
            raise bad(f"image: {req.image!r} was encoded by model {item.model!r}, not {loaded.name!r}")
        return iid, None, item.embeddings
    pixels = decode_image(media_bytes(ctx, req.image, "image"), ctx.settings.max_pixels)
    iid = image_id(loaded.name, pixels)
    return iid, pixels, ctx.images.get(iid).embeddings if iid in ctx.images else None


def _given_embeddings(req: SegmentationRequest, hw: tuple[int, int]) -> ImageEmbeddings | None:
    if req.image_embedding is None and req.high_resolution_features is None:
        return None
    if req.image_embedding is None or req.high_resolution_features is None:
        raise bad("imageEmbedding and highResolutionFeatures must be given together (both from an earlier response)")
    arrays = [
        unpack_array(a.model_dump(), f"highResolutionFeatures[{i}]") for i, a in enumerate(req.high_resolution_features)
    ]
    arrays.append(unpack_array(req.image_embedding.model_dump(), "imageEmbedding"))
    return ImageEmbeddings(levels=[torch.from_numpy(a.copy())[None] for a in arrays], orig_hw=[hw])


def _prompts(req: SegmentationRequest) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, int]:
    """Points (P, N, 2) padded with label -1 (SAM's not-a-point), labels (P, N), boxes (P, 4), P."""
    points, labels, boxes = req.points, req.labels, req.boxes
    if labels is not None and points is None:
        raise bad("labels: given without points")
    if points is not None and labels is None:
        raise bad("labels: points need labels (1 positive, 0 negative), one per point")
    counts = [len(p) for p in (points, boxes) if p is not None]
    if len(set(counts)) > 1:
        raise bad(f"points and boxes: {counts[0]} point sets for {counts[1]} boxes; give one of each per prompt")
    out_pts = out_lbl = out_box = None
    if points is not None and labels is not None:
        if len(points) != len(labels):
            raise bad(f"labels: {len(labels)} label sets for {len(points)} point sets")
        n = max((len(p) for p in points), default=0)
        if n == 0:
            raise bad("points: expected at least one point per prompt")
        out_pts = np.zeros((len(points), n, 2), np.float32)
        out_lbl = np.full((len(points), n), -1, np.int32)
        for i, (pts, lbl) in enumerate(zip(points, labels)):
            if len(lbl) != len(pts):
                raise bad(f"labels[{i}]: {len(lbl)} labels for {len(pts)} points")
            if any(len(p) != 2 for p in pts):
                raise bad(f"points[{i}]: each point is [x, y]")
            if any(v not in (0, 1) for v in lbl):
                raise bad(f"labels[{i}]: labels are 1 (positive) or 0 (negative), got {lbl}")
            if pts:
                out_pts[i, : len(pts)] = pts
                out_lbl[i, : len(lbl)] = lbl
    if boxes is not None:
        if any(len(b) != 4 for b in boxes):
            raise bad("boxes: each box is [x1, y1, x2, y2]")
        out_box = np.asarray(boxes, np.float32).reshape(-1, 4)
    prompts = counts[0] if counts else 1
    return out_pts, out_lbl, out_box, prompts


def prepare_segment(
    ctx: Context, loaded: Loaded, req: SegmentationRequest
) -> tuple[str, np.ndarray | None, ImageEmbeddings | None]:
    """Checks and the image lookup, on the event loop: (imageId, pixels, embeddings to use or None)."""
    multimask = True if req.multimask_output is None else req.multimask_output
    if multimask and req.num_multimask_outputs not in (None, 3):
        raise bad(f"numMultimaskOutputs: SAM2 returns 3 masks with multimaskOutput, got {req.num_multimask_outputs}")
    _prompts(req)
    iid, pixels, emb = _image(ctx, loaded, req)
    if pixels is not None:
        hw = (int(pixels.shape[0]), int(pixels.shape[1]))
    elif emb is not None:
        hw = emb.orig_hw[0]
    else:
        raise bad(f"image: {req.image!r} has no cached embeddings; send the image again")
    given = _given_embeddings(req, hw)
    return iid, pixels, given if given is not None else emb


def segment(
    loaded: Loaded, req: SegmentationRequest, pixels: np.ndarray | None, emb: ImageEmbeddings | None
) -> tuple[dict, ImageEmbeddings | None]:
    """pixano's SAM2 image semantics on masklet (on the device worker): the SegmentationOutput body and
    the embeddings it computed (None when it reused ``emb``), for the image cache."""
    multimask = True if req.multimask_output is None else req.multimask_output
    points, labels, boxes, n_prompts = _prompts(req)
    predictor = ImagePredictor(loaded.model)
    computed = None
    if emb is not None:
        predictor.set_embeddings(emb)  # shape checks: a 400 when given embeddings do not fit the model
    elif pixels is not None:
        predictor.set_image(pixels)
        computed = predictor.get_embeddings()
    else:
        raise bad("image: no pixels and no embeddings to segment")
    mask_input = None if req.mask_input is None else unpack_array(req.mask_input.model_dump(), "maskInput")
    masks, scores, low = predictor.predict(points, labels, boxes, mask_input, multimask, False, True)
    if n_prompts == 1 and masks.ndim == 3:
        masks, scores = masks[None], scores[None]
    rles = masks_to_rles(masks)
    per = masks.shape[1]
    out = SegmentationOutput(
        masks=[[CompressedRLE.model_validate(r) for r in rles[i * per : (i + 1) * per]] for i in range(masks.shape[0])],
        scores=NDArrayFloat.model_validate(pack_array(scores)),
    )
    if req.return_image_embedding:
        levels = predictor.get_embeddings().levels
        out.image_embedding = NDArrayFloat.model_validate(pack_array(levels[-1][0].float().cpu().numpy()))
        out.high_resolution_features = [
            NDArrayFloat.model_validate(pack_array(t[0].float().cpu().numpy())) for t in levels[:-1]
        ]
    if req.return_logits:
        out.mask_logits = NDArrayFloat.model_validate(pack_array(low))
    return out.model_dump(mode="json", by_alias=True), computed


# ----------------------------------------------------------------------------- tracking


def _frames(ctx: Context, video: Any) -> Any:
    """A masklet frame source for ``video``: a list of frames (bytes or data URIs, decoded lazily)
    or a video file / frame folder under the media roots."""
    if isinstance(video, list):
        if not video:
            raise bad("video: expected at least one frame")
        if len(video) > ctx.settings.max_frames:
            raise ApiError(
                413, "payload_too_large", f"video: {len(video)} frames exceed the limit of {ctx.settings.max_frames}"
            )
        parts = [media_bytes(ctx, f, f"video[{i}]") for i, f in enumerate(video)]
        sizes = {check_encoded_size(p, ctx.settings.max_pixels) for p in parts}
        if len(sizes) > 1:
            raise bad(f"video: frames differ in size {sorted(sizes)}; every frame must have the same size")
        return ArrayFrames(parts)
    if isinstance(video, bytes) or video.startswith("data:"):
        raise bad("video: send the frames as a list (one image each), or a path under the media roots")
    return media_path(ctx.settings, video)


def check_tracking(req: TrackingRequest) -> list[int]:
    """The object ids, checked: one keyframe per object, points/box xor mask (pixano's rules), 400 otherwise."""
    ids = list(req.objects_ids or [])
    if not ids:
        raise bad("objectsIds: SAM2 tracks prompted objects; give one object id and one keyframe per object")
    if len(set(ids)) != len(ids):
        raise bad(f"objectsIds: ids must be unique, got {ids}")
    if req.keyframes is None or len(req.keyframes) != len(ids):
        got = 0 if req.keyframes is None else len(req.keyframes)
        raise bad(f"keyframes: expected exactly one keyframe per object ({len(ids)}), got {got}")
    for i, kf in enumerate(req.keyframes):
        p = kf.prompts
        has_pb = bool(p.points) or p.box is not None
        if p.mask is not None and has_pb:
            raise bad(f"keyframes[{i}]: a keyframe carries points/box or a mask, not both")
        if p.mask is None and not has_pb:
            raise bad(f"keyframes[{i}]: a keyframe needs points, a box or a mask")
    if req.interval is not None and req.interval.start_frame < 0:
        raise bad(f"interval.startFrame: expected >= 0, got {req.interval.start_frame}")
    return ids


def _apply_keyframes(session: Session, req: TrackingRequest, ids: list[int]) -> dict[int, dict[int, dict]]:
    """Add each object's keyframe; the per-frame masks they produce (what ``propagate: false`` answers)."""
    from ..masks import decode_rle

    out: dict[int, dict[int, dict]] = {}
    predictor, state = session.predictor, session.state
    for obj_id, kf in zip(ids, req.keyframes or []):
        p = kf.prompts
        if p.mask is not None:
            mask = decode_rle(p.mask.model_dump())[0]
            if tuple(mask.shape) != (session.height, session.width):
                raise bad(
                    f"keyframes mask: size {list(mask.shape)} differs from the frames' {[session.height, session.width]}"
                )
            tf = predictor.add_new_mask(state, kf.frame_index, obj_id, mask)
        else:
            pts = lbl = box = None
            if p.points:
                pts = np.asarray([[q.x, q.y] for q in p.points], np.float32)
                lbl = np.asarray([q.label for q in p.points], np.int32)
            if p.box is not None:
                b = p.box
                box = np.asarray([b.x, b.y, b.x + b.width, b.y + b.height], np.float32)  # XYWH -> XYXY
            tf = predictor.add_new_points_or_box(state, kf.frame_index, obj_id, pts, lbl, True, True, box)
        rles = masks_to_rles(tf.masks.cpu().numpy())
        out.setdefault(int(tf.frame_idx), {}).update({int(o): r for o, r in zip(tf.obj_ids, rles)})
    return out


def _propagate_body(req: TrackingRequest) -> PropagateRequest:
    iv = req.interval
    if iv is None:
        return PropagateRequest()
    return PropagateRequest(
        start_frame_idx=iv.start_frame,
        max_frame_num_to_track=abs(iv.end_frame - iv.start_frame),
        direction="backward" if iv.direction == "backward" else "forward",
    )


def _output(segments: dict[int, dict[int, dict]]) -> dict:
    frames = [
        {
            "frameIndex": f,
            "objects": [{"trackId": o, "box": None, "score": None, "class": None, "mask": m} for o, m in objs.items()],
        }
        for f, objs in segments.items()
    ]
    return TrackingOutput.model_validate({"frames": frames}).model_dump(mode="json", by_alias=True)


async def track(ctx: Context, loaded: Loaded, req: TrackingRequest, progress: Progress) -> dict:
    """pixano's SAM2 video semantics on a masklet session (bounded, frames decoded lazily, tracked frame
    by frame on the device worker); the session is closed when the request ends."""
    ids = check_tracking(req)
    source = _frames(ctx, req.video)

    def init() -> tuple[VideoPredictor, Any]:
        predictor = VideoPredictor(loaded.model)
        frames = open_frames(source)
        if len(frames) > ctx.settings.max_frames:
            frames.close()
            raise ApiError(
                413, "payload_too_large", f"video: {len(frames)} frames exceed the limit of {ctx.settings.max_frames}"
            )
        if frames.height * frames.width > ctx.settings.max_pixels:
            frames.close()
            raise ApiError(413, "payload_too_large", f"video: {frames.width}x{frames.height} exceeds the pixel limit")
        return predictor, predictor.init_state(frames)

    predictor, state = await ctx.pool.run(loaded, init)
    try:
        session = ctx.sessions.add(lambda sid: Session.for_video(sid, loaded.name, state, predictor))
    except Exception:
        state.frames.close()
        raise
    try:
        async with session.busy:
            segments = await ctx.pool.run(loaded, _apply_keyframes, session, req, ids)
            if req.propagate is False:
                return _output(segments)
            segments = {}
            async for fr in propagate(ctx.pool, loaded, session, _propagate_body(req), progress):
                segments[fr.frame_idx] = dict(zip(fr.obj_ids, fr.masks))
            return _output(segments)
    finally:
        ctx.sessions.close(session.session_id)


# ----------------------------------------------------------------------------- jobs


JobState = Literal["running", "completed", "failed", "canceled"]


@dataclass
class PixanoJob:
    """A tracking request running in the background (kept in the app's job table with masklet's jobs)."""

    job_id: str
    model: str
    session_id: str = ""
    progress: Progress = field(default_factory=Progress)
    status: JobState = "running"
    detail: str | None = None
    data: dict | None = None
    submitted: float = field(default_factory=time.time)
    ended: float | None = None
    task: asyncio.Task | None = None

    def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def status_body(self) -> dict:
        ts = datetime.fromtimestamp(self.ended or self.submitted, timezone.utc).isoformat()
        took = 0.0 if self.ended is None else self.ended - self.submitted
        body = JobStatus(
            job_id=self.job_id,
            status=self.status,
            detail=self.detail,
            data=None if self.data is None else TrackingOutput.model_validate(self.data),
            metadata=model_metadata(self.model, "tracking"),
            timestamp=ts,
            processing_time=took,
            done=self.progress.done,
            total=self.progress.total,
        )
        return body.model_dump(mode="json", by_alias=True)


async def run_job(ctx: Context, loaded: Loaded, req: TrackingRequest, job: PixanoJob) -> None:
    """Run ``track`` for a job, recording its result, failure or cancellation."""
    try:
        job.data = await track(ctx, loaded, req, job.progress)
        job.status = "completed"
    except asyncio.CancelledError:
        job.status, job.detail = "canceled", "canceled by the client"
    except Exception as err:  # noqa: BLE001 (reported in the job's status)
        api = pixano_error(err)
        job.status = "failed"
        job.detail = f"{api.code}: {api.message}" if api else "internal error (see the server log)"
    finally:
        job.ended = time.time()
