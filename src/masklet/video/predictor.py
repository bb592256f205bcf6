"""Interactive video object tracking with the official ``SAM2VideoPredictor``'s methods and semantics.

:class:`VideoPredictor` is the facade: it opens sessions (:class:`~masklet.video.session.VideoState`)
on lazily decoded frames, takes prompts under the official method names, and propagates frame by
frame through the :class:`~masklet.video.engine.TrackingEngine` it extends. Masks match the
official predictor numerically.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from ..checks import is_int
from ..errors import InvalidInputError, PredictorStateError
from ..precision import inference
from .engine import TrackingEngine, check_frame, check_max_frames
from .frames import open_frames
from .health import HealthMonitor
from .session import TrackedFrame, VideoState

__all__ = ["TrackedFrame", "VideoPredictor", "VideoState"]


class VideoPredictor(TrackingEngine):
    """Track objects through a video from clicks, boxes or masks on any frame.

    Options (defaults as ``sam2.build_sam2_video_predictor``): ``fill_hole_area`` fills background
    holes up to that many low-resolution pixels in every output (on CPU; never skipped);
    ``non_overlap_masks`` keeps only the highest-scoring object at each output pixel;
    ``clear_non_cond_mem_around_input`` drops an object's tracked memories near a frame it gets
    new prompts on; ``add_all_frames_to_correct_as_cond`` makes corrected frames conditioning
    frames; ``binarize_mask_from_pts`` encodes prompted frames' masks as hard 0/1 in memory;
    ``progress`` shows a progress bar while propagating.
    """

    # ------------------------------------------------------------------ session

    def init_state(
        self,
        source: Any,
        *,
        offload_video_to_cpu: bool = False,
        offload_state_to_cpu: bool = False,
        feature_cache_size: int = 2,
    ) -> VideoState:
        """Open a video (file, folder of frames, list of arrays or paths) for tracking.

        Frames are decoded when first needed; at most ``feature_cache_size`` frames' features are
        kept. ``offload_state_to_cpu`` keeps per-frame memories in CPU memory when the model runs
        on an accelerator; ``offload_video_to_cpu`` is accepted for compatibility (frames are
        always decoded on the CPU).
        """
        del offload_video_to_cpu  # frames are decoded lazily on the CPU anyway
        if not is_int(feature_cache_size, numpy=False) or feature_cache_size < 1:
            raise InvalidInputError(f"feature_cache_size: expected an int >= 1, got {feature_cache_size!r}")
        frames = open_frames(source)
        device = self.model.device
        return VideoState(
            frames=frames,
            num_frames=len(frames),
            video_height=frames.height,
            video_width=frames.width,
            device=device,
            storage_device=torch.device("cpu") if offload_state_to_cpu else device,
            feature_cache_size=feature_cache_size,
        )

    def add_new_points_or_box(
        self,
        state: VideoState,
        frame_idx: int,
        obj_id: int,
        points: Any = None,
        labels: Any = None,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
        box: Any = None,
    ) -> TrackedFrame:
        """Clicks (``points`` (P, 2) x, y with ``labels`` 1 positive / 0 negative) and/or a ``box``
        (x0, y0, x1, y1) for one object on one frame; returns every object's masks on that frame.

        Coordinates are video pixels, or in [0, 1] when ``normalize_coords`` is False. A frame the
        object was already tracked on is refined (the previous mask is fed back with the clicks);
        otherwise the frame becomes a conditioning frame of the object.
        """
        return self.add_points(state, frame_idx, obj_id, points, labels, clear_old_points, normalize_coords, box)

    def add_new_mask(self, state: VideoState, frame_idx: int, obj_id: int, mask: Any) -> TrackedFrame:
        """A binary mask (H, W) of any size for one object on one frame; returns that frame's masks."""
        return self.add_mask(state, frame_idx, obj_id, mask)

    @inference()
    def propagate_in_video(
        self,
        state: VideoState,
        start_frame_idx: int | None = None,
        max_frame_num_to_track: int | None = None,
        reverse: bool = False,
        health: HealthMonitor | None = None,
    ) -> Iterator[TrackedFrame]:
        """Track every object frame by frame, yielding :class:`TrackedFrame` s.

        Starts at ``start_frame_idx`` (default: the earliest prompted frame) and goes forward, or
        backward with ``reverse``, over at most ``max_frame_num_to_track`` frames after the start.
        Every frame carries each object's presence; ``health`` (a
        :class:`~masklet.video.health.HealthMonitor`, default: a new one with default thresholds)
        turns them into lost / reappeared / low-confidence events on the frames' ``events``.
        """
        if health is not None and not isinstance(health, HealthMonitor):
            raise InvalidInputError(
                f"health: expected a masklet.video.HealthMonitor or None, got {type(health).__name__}"
            )
        if state.num_frames is None:
            raise PredictorStateError("propagate_in_video needs a video session; use StreamTracker.track for streams")
        if start_frame_idx is not None:
            check_frame(state, start_frame_idx, "start_frame_idx")
        check_max_frames(max_frame_num_to_track)
        self.commit(state)  # eagerly, so that bad state raises here rather than at the first frame
        monitor = HealthMonitor() if health is None else health
        return self._propagate(state, start_frame_idx, max_frame_num_to_track, bool(reverse), monitor)

    def _propagate(
        self, state: VideoState, start: int | None, max_frames: int | None, reverse: bool, health: HealthMonitor
    ) -> Iterator[TrackedFrame]:
        if start is None:
            start = state.first_prompted_frame()
        num_frames = state.num_frames
        assert num_frames is not None  # propagate_in_video checked it: a video session
        count = num_frames if max_frames is None else max_frames
        if reverse:
            order = range(start, max(start - count, 0) - 1, -1) if start > 0 else range(0)
        else:
            order = range(start, min(start + count, num_frames - 1) + 1)
        if self.progress:
            from tqdm.auto import tqdm

            order = tqdm(order, desc="tracking", unit="frame")
        for frame_idx in order:
            with inference():
                result = self.track(state, frame_idx, reverse, health)
            yield result

    def clear_all_prompts_in_frame(
        self, state: VideoState, frame_idx: int, obj_id: int, need_output: bool = True
    ) -> TrackedFrame | None:
        """Remove one object's clicks and mask on a frame; its output there becomes a tracked one."""
        return self.clear_prompts(state, frame_idx, obj_id, need_output)

    def remove_object(
        self, state: VideoState, obj_id: int, need_output: bool = True
    ) -> tuple[list[int], list[TrackedFrame]]:
        """Forget an object; returns the remaining ids and the updated masks of its prompted frames."""
        return self.remove(state, obj_id, need_output)

    def reset_state(self, state: VideoState) -> None:
        """Remove every object, prompt and tracking result (decoded features stay cached)."""
        self.reset(state)
