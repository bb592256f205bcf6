"""Video session logic apart from the routes: frame results, propagation as an async iterator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import torch

from ..video import HealthMonitor, TrackedFrame
from ..video.engine import check_frame
from ..video.health import presence_from_logits
from .codec import masks_to_rles, pack_array
from .pool import Loaded, ModelPool
from .schemas import FrameResult, PackedArray, PropagateRequest
from .store import Session


def frame_result(tf: TrackedFrame, logits: bool) -> FrameResult:
    """A TrackedFrame as COCO RLEs (and the float logits, exactly, on request)."""
    masks = tf.masks.cpu().numpy()
    out = FrameResult(frame_idx=int(tf.frame_idx), obj_ids=[int(i) for i in tf.obj_ids], masks=masks_to_rles(masks))
    if logits:
        out.mask_logits = PackedArray(**pack_array(tf.mask_logits.float().cpu().numpy()))
    if tf.object_score_logits is not None:
        out.object_score_logits = [float(v) for v in tf.object_score_logits.float().cpu()]
        out.presence = presence_from_logits(tf.object_score_logits)
    out.events = [e.to_dict() for e in tf.events]
    return out


def plan(session: Session, body: PropagateRequest) -> list[tuple[int, bool, int]]:
    """Legs (start, reverse, frame count) of a propagation, validated like the predictor does."""
    state, predictor = session.state, session.predictor
    if body.health is not None:
        HealthMonitor(**body.health.model_dump())  # thresholds that contradict each other: a 400 before the stream
    if body.start_frame_idx is not None:
        check_frame(state, body.start_frame_idx, "start_frame_idx")
    with torch.inference_mode():
        predictor.commit(state)
    start = body.start_frame_idx
    if start is None:
        start = state.first_prompted_frame()
    n, count = session.num_frames, body.max_frame_num_to_track
    count = n if count is None else count
    forward = min(start + count, n - 1) - start + 1
    backward = (start - max(start - count, 0) + 1) if start > 0 else 0
    legs = []
    if body.direction in ("forward", "both"):
        legs.append((start, False, forward))
    if body.direction in ("backward", "both"):
        legs.append((start, True, backward))
    return legs


@dataclass
class Progress:
    done: int = 0
    total: int = 0


async def propagate(
    pool: ModelPool,
    loaded: Loaded,
    session: Session,
    body: PropagateRequest,
    progress: Progress,
    legs: list[tuple[int, bool, int]] | None = None,
) -> AsyncGenerator[FrameResult, None]:
    """Track frame by frame on the device worker, one frame per model call, so other requests
    interleave and a cancellation (client gone, job deleted) stops after the current frame. One
    health monitor (``body.health`` thresholds) watches every leg, as one local call would."""
    if legs is None:
        legs = await pool.run(loaded, plan, session, body)
    progress.total = sum(c for _, _, c in legs)
    done_per_leg: list[int] = []
    monitor = HealthMonitor(**(body.health.model_dump() if body.health is not None else {}))
    try:
        for start, reverse, _count in legs:
            gen = await pool.run(
                loaded,
                lambda s=start, r=reverse: session.predictor.propagate_in_video(
                    session.state, s, body.max_frame_num_to_track, r, health=monitor
                ),
            )
            done_per_leg.append(0)
            while True:
                tf = await pool.run(loaded, _next_result, gen, body.logits)
                if tf is None:
                    break
                session.results[tf.frame_idx] = (tf.obj_ids, tf.masks)  # ids and COCO RLEs
                done_per_leg[-1] += 1
                progress.done += 1
                yield tf
    finally:
        session.log.append({"op": "propagate", "args": {**body.model_dump(), "framesDone": done_per_leg}})


def _next_result(gen: Any, logits: bool) -> FrameResult | None:
    tf = next(gen, None)
    return None if tf is None else frame_result(tf, logits)


@dataclass
class Job:
    """A propagation running in the background, polled by id."""

    job_id: str
    session_id: str
    progress: Progress = field(default_factory=Progress)
    status: str = "running"
    error: dict | None = None
    task: asyncio.Task | None = None

    def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
