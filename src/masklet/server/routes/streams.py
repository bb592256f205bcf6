"""Live streams over WebSocket: binary messages are frames, text messages are JSON prompts."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from ...errors import InvalidInputError
from ...masks import decode_rle
from ...video import HealthMonitor, StreamTracker
from ..codec import decode_image
from ..deps import check_key
from ..errors import ApiError, to_api_error
from ..schemas import HealthOptions
from ..video_ops import frame_result

router = APIRouter()
#: StreamTracker options a client may set (those of VideoPredictor plus state offloading).
STREAM_OPTIONS = (
    "fill_hole_area",
    "non_overlap_masks",
    "clear_non_cond_mem_around_input",
    "add_all_frames_to_correct_as_cond",
    "binarize_mask_from_pts",
    "offload_state_to_cpu",
    "health",
)


def _apply(tracker: StreamTracker, msg: dict) -> dict:
    op = msg.get("op")
    logits = bool(msg.get("logits", False))
    obj_id: Any = msg.get("objId")  # JSON as sent: the tracker checks it
    mask: Any = msg.get("mask")
    if op == "add_points":
        tf = tracker.add_points(
            obj_id,
            msg.get("points"),
            msg.get("labels"),
            clear_old_points=msg.get("clearOldPoints", True),
            normalize_coords=msg.get("normalizeCoords", True),
        )
    elif op == "add_box":
        tf = tracker.add_box(
            obj_id,
            msg.get("box"),
            msg.get("points"),
            msg.get("labels"),
            normalize_coords=msg.get("normalizeCoords", True),
        )
    elif op == "add_mask":
        tf = tracker.add_mask(obj_id, decode_rle(mask)[0])
    elif op == "remove_object":
        return {"type": "objects", "objIds": tracker.remove_object(obj_id)}
    elif op == "reset":
        tracker.reset()
        return {"type": "objects", "objIds": []}
    else:
        raise InvalidInputError(
            f"op: expected add_points, add_box, add_mask, remove_object, reset or close, got {op!r}"
        )
    return {"type": "frame", **frame_result(tf, logits).model_dump(by_alias=True)}


@router.websocket("/v1/streams")
async def stream(ws: WebSocket, model: str | None = None, options: str | None = None) -> None:
    """One StreamTracker per connection (options: its own, plus ``health`` thresholds); every frame event
    carries each object's presence and track health events. First ``{"type": "ready"}`` (or an error event and a close, for a
    bad key, model or options); errors later answer ``{"type": "error"}`` and keep the stream open."""
    await ws.accept()
    rid = ws.scope.get("state", {}).get("request_id", "")
    ctx = ws.app.state.ctx

    async def send_error(err: Exception) -> None:
        api = to_api_error(err) or ApiError(500, "internal_error", "internal error")
        await ws.send_text(
            json.dumps(
                {
                    "type": "error",
                    "status": api.status,
                    "error": {"code": api.code, "message": api.message, "requestId": rid},
                }
            )
        )

    try:
        check_key(ws)
        loaded = ctx.pool.get(model)
        try:
            opts = json.loads(options) if options else {}
        except ValueError:
            raise ApiError(400, "malformed_json", "options: not valid JSON") from None
        if not isinstance(opts, dict) or set(opts) - set(STREAM_OPTIONS):
            raise InvalidInputError(f"options: accepted keys are {', '.join(STREAM_OPTIONS)}, got {opts!r}")
        if "health" in opts:  # thresholds of the track health events on every frame
            health = opts["health"]
            if not isinstance(health, dict):
                raise InvalidInputError(
                    f"options.health: expected an object of HealthMonitor thresholds, got {health!r}"
                )
            try:
                opts["health"] = HealthMonitor(**HealthOptions(**health).model_dump())
            except ValidationError as err:
                raise InvalidInputError(
                    f"options.health: {err.errors()[0].get('msg')} ({err.errors()[0].get('loc')})"
                ) from None
        tracker = StreamTracker(loaded.model, **opts)
    except Exception as err:  # noqa: BLE001 (answered as an error event, then closed)
        await send_error(err)
        await ws.close(code=1008)
        return
    await ws.send_text(json.dumps({"type": "ready", "model": loaded.name}))
    try:
        while not ctx.shutting_down:
            try:
                message = await asyncio.wait_for(ws.receive(), timeout=0.5)
            except asyncio.TimeoutError:
                continue  # look at ctx.shutting_down again
            if message["type"] == "websocket.disconnect":
                return
            try:
                if message.get("bytes") is not None:
                    frame = decode_image(message["bytes"], ctx.settings.max_pixels)
                    tf = await ctx.pool.run(loaded, tracker.track, frame)
                    reply: Any = {"type": "frame", **frame_result(tf, False).model_dump(by_alias=True)}
                else:
                    try:
                        msg = json.loads(message.get("text") or "")
                    except ValueError:
                        raise ApiError(400, "malformed_json", "message: not valid JSON") from None
                    if not isinstance(msg, dict):
                        raise InvalidInputError("message: expected a JSON object with an 'op'")
                    if msg.get("op") == "close":
                        break
                    reply = await ctx.pool.run(loaded, _apply, tracker, msg)
                await ws.send_text(json.dumps(reply))
            except Exception as err:  # noqa: BLE001 (answered as an error event; the stream goes on)
                await send_error(err)
        reason = "shutdown" if ctx.shutting_down else "closed"
        await ws.send_text(json.dumps({"type": "end", "reason": reason, "frames": tracker.frame_idx + 1}))
        await ws.close(code=1001 if ctx.shutting_down else 1000)
    except WebSocketDisconnect:
        return
