"""Video sessions: create, prompt any frame, remove, clear, reset, propagate (NDJSON), results."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from ...errors import InvalidInputError
from ...video import (
    ArrayFrames,
    CocoRleWriter,
    DavisPngWriter,
    VideoPredictor,
    open_frames,
)
from ..codec import NPY_MAGIC, check_encoded_size, data_uri_bytes, decode_image
from ..deps import Context, Ctx, media_path, require_key
from ..errors import ApiError, request_id, to_api_error
from ..schemas import (
    ClearRequest,
    FrameResult,
    MaskRequest,
    PointsRequest,
    PropagateRequest,
    RemoveResponse,
    VideoInfo,
)
from ..store import Session
from ..video_ops import Progress, frame_result, plan, propagate

router = APIRouter(prefix="/v1/videos", dependencies=[Depends(require_key)])
_OPTIONS = (
    "fill_hole_area",
    "non_overlap_masks",
    "clear_non_cond_mem_around_input",
    "add_all_frames_to_correct_as_cond",
    "binarize_mask_from_pts",
)


def _frames_from_parts(parts: list[bytes], ctx: Context) -> ArrayFrames:
    limit = ctx.settings.max_frames
    if len(parts) > limit:
        raise InvalidInputError(f"frames: {len(parts)} frames exceed the limit of {limit}")
    if not parts:
        raise InvalidInputError("frames: expected at least one frame, got none")
    items: list[Any] = []
    for data in parts:
        check_encoded_size(data, ctx.settings.max_pixels)
        # .npy frames as arrays (already raw); encoded images stay bytes, decoded lazily one at a time
        items.append(decode_image(data, ctx.settings.max_pixels) if data.startswith(NPY_MAGIC) else data)
    return ArrayFrames(items)


async def _source(request: Request, ctx: Context) -> tuple[Any, str | None, dict, Any]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    tmp = None
    options: dict = {}
    model = None
    if ctype == "multipart/form-data":
        form = await request.form()
        if "options" in form:
            options = json.loads(str(form["options"]))
        frames = [await f.read() for f in form.getlist("frames") if not isinstance(f, str)]
        video = form.get("video")
        if video is not None and not isinstance(video, str):
            tmp = tempfile.TemporaryDirectory(prefix="masklet-video-")
            path = Path(tmp.name) / (Path(video.filename or "video.mp4").name or "video.mp4")
            path.write_bytes(await video.read())
            return path, model, options, tmp
        return _frames_from_parts(frames, ctx), model, options, None
    try:
        doc = json.loads(await request.body())
    except ValueError as err:
        raise ApiError(400, "malformed_json", f"body: not valid JSON ({err})") from None
    if not isinstance(doc, dict):
        raise InvalidInputError('body: expected {"path": ...} or {"frames": [data URIs]}')
    model, options = doc.get("model"), doc.get("options") or {}
    if isinstance(doc.get("path"), str):
        return media_path(ctx.settings, doc["path"]), model, options, None
    if isinstance(doc.get("frames"), list) and all(isinstance(f, str) for f in doc["frames"]):
        return _frames_from_parts([data_uri_bytes(f) for f in doc["frames"]], ctx), model, options, None
    raise InvalidInputError('body: expected {"path": "under a media root"} or {"frames": [data URIs]}')


@router.post("", status_code=201)
async def create_session(request: Request, ctx: Ctx, model: Annotated[str | None, Query()] = None) -> VideoInfo:
    """A session from uploaded frames (multipart ``frames``), a video file (``video``), data URIs or a path."""
    source, json_model, options, tmp = await _source(request, ctx)
    loaded = ctx.pool.get(model or json_model)
    if not isinstance(options, dict) or set(options) - set(_OPTIONS):
        raise InvalidInputError(f"options: accepted keys are {', '.join(_OPTIONS)}, got {options!r}")

    def init() -> tuple[VideoPredictor, Any]:
        predictor = VideoPredictor(loaded.model, **options)
        frames = open_frames(source)
        if len(frames) > ctx.settings.max_frames:
            frames.close()
            raise InvalidInputError(f"frames: {len(frames)} frames exceed the limit of {ctx.settings.max_frames}")
        if frames.height * frames.width > ctx.settings.max_pixels:
            raise InvalidInputError(
                f"frames: {frames.width}x{frames.height} exceeds the limit of {ctx.settings.max_pixels} pixels"
            )
        return predictor, predictor.init_state(frames)

    try:
        predictor, state = await ctx.pool.run(loaded, init)
    except Exception:
        if tmp is not None:
            tmp.cleanup()
        raise
    session = ctx.sessions.add(lambda sid: Session.for_video(sid, loaded.name, state, predictor, tmp))
    return _info(session)


def _info(s: Session) -> VideoInfo:
    return VideoInfo(
        session_id=s.session_id,
        model=s.model,
        num_frames=s.num_frames,
        height=s.height,
        width=s.width,
        obj_ids=s.state.obj_ids,
        log_length=len(s.log),
    )


@router.get("/{sid}")
async def session_info(sid: str, ctx: Ctx) -> VideoInfo:
    return _info(ctx.sessions.get(sid))


@router.get("/{sid}/log")
async def session_log(sid: str, ctx: Ctx) -> list[dict]:
    """The session's prompt log, in order (what a client replays into a new session)."""
    return ctx.sessions.get(sid).log


@router.delete("/{sid}")
async def close_session(sid: str, ctx: Ctx) -> dict:
    """Close a session and free its memory."""
    session = ctx.sessions.get(sid)
    async with session.busy:
        ctx.sessions.close(sid)
    return {"closed": sid}


async def _op(ctx: Context, sid: str, name: str, args: dict, fn: Any) -> Any:
    session = ctx.sessions.get(sid)
    loaded = ctx.pool.get(session.model)
    async with session.busy:
        result = await ctx.pool.run(loaded, fn, session)
        session.log.append({"op": name, "args": args})
    ctx.sessions.enforce_budget(sid)
    return result


@router.post("/{sid}/points")
async def add_points(sid: str, body: PointsRequest, ctx: Ctx) -> FrameResult:
    """Clicks and/or a box for one object on any frame; answers that frame's masks."""

    def run(s: Session) -> FrameResult:
        tf = s.predictor.add_new_points_or_box(
            s.state,
            body.frame_idx,
            body.obj_id,
            body.points,
            body.labels,
            body.clear_old_points,
            body.normalize_coords,
            body.box,
        )
        return frame_result(tf, body.logits)

    return await _op(ctx, sid, "add_new_points_or_box", body.model_dump(exclude={"logits"}), run)


@router.post("/{sid}/mask")
async def add_mask(sid: str, body: MaskRequest, ctx: Ctx) -> FrameResult:
    """A binary mask (COCO RLE, any size) for one object on one frame."""
    from ...masks import decode_rle

    mask = decode_rle(body.mask)[0]

    def run(s: Session) -> FrameResult:
        return frame_result(s.predictor.add_new_mask(s.state, body.frame_idx, body.obj_id, mask), body.logits)

    return await _op(ctx, sid, "add_new_mask", body.model_dump(exclude={"logits"}), run)


@router.post("/{sid}/clear")
async def clear_prompts(sid: str, body: ClearRequest, ctx: Ctx) -> FrameResult | None:
    """Remove one object's prompts on a frame."""

    def run(s: Session) -> FrameResult | None:
        tf = s.predictor.clear_all_prompts_in_frame(s.state, body.frame_idx, body.obj_id, body.need_output)
        return None if tf is None else frame_result(tf, body.logits)

    return await _op(ctx, sid, "clear_all_prompts_in_frame", body.model_dump(exclude={"logits"}), run)


@router.delete("/{sid}/objects/{obj_id}")
async def remove_object(
    sid: str, obj_id: int, ctx: Ctx, need_output: bool = True, logits: bool = False
) -> RemoveResponse:
    """Forget an object; answers the remaining ids and its prompted frames' new masks."""

    def run(s: Session) -> RemoveResponse:
        ids, updated = s.predictor.remove_object(s.state, obj_id, need_output)
        return RemoveResponse(obj_ids=ids, updated=[frame_result(tf, logits) for tf in updated])

    return await _op(ctx, sid, "remove_object", {"obj_id": obj_id, "need_output": need_output}, run)


@router.post("/{sid}/reset")
async def reset(sid: str, ctx: Ctx) -> VideoInfo:
    """Remove every object, prompt and result."""

    def run(s: Session) -> None:
        s.predictor.reset_state(s.state)
        s.results.clear()

    await _op(ctx, sid, "reset_state", {}, run)
    return _info(ctx.sessions.get(sid))


@router.post("/{sid}/propagate")
async def propagate_stream(sid: str, body: PropagateRequest, request: Request, ctx: Ctx) -> StreamingResponse:
    """Track frame by frame, streamed as NDJSON lines ``{"type": "frame", ..., "done", "total"}`` (or as
    server-sent events with ``Accept: text/event-stream``), always ending with one final event:
    ``{"type": "end", "reason": "completed" | "shutdown", "frames", "total"}`` or ``{"type": "error",
    "error": envelope}``. Each frame carries every object's presence and its track health events.
    Closing the connection stops the work; a server shutting down ends the stream after the frame in
    progress (reason "shutdown"; the frames so far are kept in the session and its log)."""
    session = ctx.sessions.get(sid)
    loaded = ctx.pool.get(session.model)
    rid = request_id(request)
    sse = "text/event-stream" in request.headers.get("accept", "")
    async with session.busy:  # bad arguments and state answer a 4xx here, before the stream starts
        legs = await ctx.pool.run(loaded, plan, session, body)

    def event(doc: dict) -> str:
        text = json.dumps(doc)
        return f"event: {doc['type']}\ndata: {text}\n\n" if sse else text + "\n"

    async def lines() -> Any:
        progress = Progress()
        async with session.busy:
            try:
                reason = "completed"
                async with contextlib.aclosing(propagate(ctx.pool, loaded, session, body, progress, legs)) as frames:
                    async for fr in frames:
                        yield event(
                            {
                                "type": "frame",
                                **fr.model_dump(by_alias=True),
                                "done": progress.done,
                                "total": progress.total,
                            }
                        )
                        if ctx.shutting_down:
                            reason = "shutdown"
                            break
                yield event({"type": "end", "reason": reason, "frames": progress.done, "total": progress.total})
                ctx.sessions.enforce_budget(sid)
            except Exception as err:  # noqa: BLE001 (the stream has started: answered as an error line)
                api = to_api_error(err)
                code, msg = (api.code, api.message) if api else ("internal_error", "internal error")
                yield event({"type": "error", "error": {"code": code, "message": msg, "requestId": rid}})

    return StreamingResponse(
        lines(),
        media_type="text/event-stream" if sse else "application/x-ndjson",
        headers={"Cache-Control": "no-cache"},
    )


@router.get("/{sid}/results")
async def results(sid: str, ctx: Ctx, format: Annotated[str, Query(pattern="^(coco|davis)$")] = "coco") -> Response:
    """The latest propagated masks: COCO RLE JSON or a zip of DAVIS palette PNGs."""
    session = ctx.sessions.get(sid)
    with tempfile.TemporaryDirectory(prefix="masklet-results-") as tmp:
        if format == "coco":
            path = Path(tmp) / "masks.json"
            with CocoRleWriter(path, video_name=sid) as writer:
                for idx in sorted(session.results):
                    writer.write(idx, *_decoded(session, idx))
            return Response(path.read_bytes(), media_type="application/json")
        with DavisPngWriter(tmp) as writer:
            for idx in sorted(session.results):
                writer.write(idx, *_decoded(session, idx))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for png in sorted(Path(tmp).glob("*.png")):
                zf.write(png, png.name)
        return Response(buf.getvalue(), media_type="application/zip")


def _decoded(session: Session, idx: int) -> tuple[list[int], np.ndarray]:
    from ..codec import rles_to_masks

    ids, rles = session.results[idx]
    return ids, rles_to_masks(rles, [len(rles)], (session.height, session.width))
