"""Live tracking: frames arrive one at a time, prompts land on the newest frame, memory stays flat.

:class:`StreamTracker` drives the same :class:`~masklet.video.engine.TrackingEngine` as
:class:`~masklet.video.VideoPredictor`, so it gives the same masks as an offline session fed the same frames and prompts. After each frame it
drops what the model can no longer look at (tracked memories older than the memory window, old
features and prompts), so resident memory does not grow with the number of frames.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InvalidInputError, PredictorStateError
from ..io import load_image
from ..model import Sam2Model
from ..precision import inference
from .engine import TrackingEngine
from .frames import FrameSource
from .health import HealthMonitor
from .session import TrackedFrame, VideoState


class _LatestFrame(FrameSource):
    """A frame source that only holds the newest frame of a stream."""

    def __init__(self, frame: np.ndarray) -> None:
        self._index, self._latest = 0, frame
        self._size = (int(frame.shape[0]), int(frame.shape[1]))

    def push(self, index: int, frame: np.ndarray) -> None:
        self._index, self._latest = index, frame

    def __len__(self) -> int:
        return self._index + 1

    def _frame(self, index: int) -> np.ndarray:
        if index != self._index:
            raise PredictorStateError(f"frame {index} of the stream is gone; only frame {self._index} is held")
        return self._latest


class StreamTracker:
    """Track objects through an unbounded stream of frames.

    ``track(frame)`` returns the masks of every object on that frame. ``add_points`` /
    ``add_box`` / ``add_mask`` prompt an object (new or tracked) on the newest frame and return
    that frame's masks; tracking continues from the next frame. Options are those of
    :class:`~masklet.video.VideoPredictor`. Every tracked frame carries each object's presence and
    the events of ``health`` (a :class:`~masklet.video.health.HealthMonitor`; default: one with
    default thresholds), whose ``events`` list keeps the whole history.
    """

    def __init__(
        self,
        model: Sam2Model,
        *,
        offload_state_to_cpu: bool = False,
        health: HealthMonitor | None = None,
        **options: Any,
    ) -> None:
        if health is not None and not isinstance(health, HealthMonitor):
            raise InvalidInputError(
                f"health: expected a masklet.video.HealthMonitor or None, got {type(health).__name__}"
            )
        self.health = HealthMonitor() if health is None else health
        self.engine = TrackingEngine(model, **options)
        self._offload = bool(offload_state_to_cpu)
        self._state: VideoState | None = None
        self.frame_idx = -1  # index of the newest frame; -1 before the first

    @property
    def obj_ids(self) -> list[int]:
        return [] if self._state is None else self._state.obj_ids

    def track(self, frame: Any) -> TrackedFrame:
        """Take the next frame (path, array, PIL image...) and return every object's masks on it."""
        image = load_image(frame)
        state = self._state
        if state is None:
            device = self.engine.model.device
            self._state = state = VideoState(
                frames=_LatestFrame(image),
                num_frames=None,
                video_height=image.shape[0],
                video_width=image.shape[1],
                device=device,
                storage_device=torch.device("cpu") if self._offload else device,
                feature_cache_size=1,
            )
        elif image.shape[:2] != (state.video_height, state.video_width):
            raise InvalidInputError(
                f"frame: every frame of a stream must be {state.video_height}x{state.video_width}, "
                f"got {image.shape[0]}x{image.shape[1]}"
            )
        else:
            state.frames.push(self.frame_idx + 1, image)  # type: ignore[attr-defined]  # a stream's frames are a StreamFrames
        self.frame_idx += 1
        if not state.objects:
            empty = torch.zeros(0, 1, state.video_height, state.video_width, device=state.device)
            return TrackedFrame(self.frame_idx, [], empty, torch.zeros(0))
        with inference():
            self.engine.commit(state)
            result = self.engine.track(state, self.frame_idx, reverse=False, health=self.health)
        self._forget_old(state)
        return result

    def add_points(
        self, obj_id: int, points: Any, labels: Any, *, clear_old_points: bool = True, normalize_coords: bool = True
    ) -> TrackedFrame:
        """Clicks ((P, 2) x, y; labels 1 positive / 0 negative) for an object on the newest frame."""
        return self.engine.add_points(
            self._require_frame(),
            self.frame_idx,
            obj_id,
            points,
            labels,
            clear_old_points=clear_old_points,
            normalize_coords=normalize_coords,
        )

    def add_box(
        self, obj_id: int, box: Any, points: Any = None, labels: Any = None, *, normalize_coords: bool = True
    ) -> TrackedFrame:
        """A box (x0, y0, x1, y1), optionally with clicks, for an object on the newest frame."""
        return self.engine.add_points(
            self._require_frame(),
            self.frame_idx,
            obj_id,
            points,
            labels,
            normalize_coords=normalize_coords,
            box=box,
        )

    def add_mask(self, obj_id: int, mask: Any) -> TrackedFrame:
        """A binary mask (H, W) for an object on the newest frame."""
        return self.engine.add_mask(self._require_frame(), self.frame_idx, obj_id, mask)

    def remove_object(self, obj_id: int) -> list[int]:
        """Stop tracking an object; returns the remaining object ids."""
        ids, _ = self.engine.remove(self._require_frame(), obj_id, need_output=False)
        self.health.forget(obj_id)
        return ids

    def reset(self) -> None:
        """Forget every object (the stream itself continues)."""
        if self._state is not None:
            self.engine.reset(self._state)
        self.health.reset()

    def _require_frame(self) -> VideoState:
        if self._state is None:
            raise PredictorStateError("no frame yet: call track(frame) before giving prompts")
        return self._state

    def _forget_old(self, state: VideoState) -> None:
        """Drop tracked memories the model can no longer reach, and per-frame bookkeeping."""
        oldest = self.frame_idx - self.engine.memory_window()
        for obj in state.objects.values():
            for t in [t for t in obj.non_cond if t < oldest]:
                del obj.non_cond[t]
            for store in (obj.tracked, obj.points, obj.mask_inputs):
                for t in [t for t in store if t < self.frame_idx]:
                    del store[t]
