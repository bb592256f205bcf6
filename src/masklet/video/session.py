"""Session state of video tracking: objects with their prompts and per-frame outputs, and results.

Plain data, no model calls: :class:`VideoState` (one session), :class:`TrackedObject` (one object's
prompts and outputs), :class:`FrameOutput` (one object's output on one frame) and
:class:`TrackedFrame` (every object's masks on a frame, as the predictors return them).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from .frames import FrameSource


class _FrameTuple(NamedTuple):
    frame_idx: int
    obj_ids: list[int]
    mask_logits: torch.Tensor  # (N, 1, H, W) float logits at video resolution


class TrackedFrame(_FrameTuple):
    """Masks of every object on one frame; unpacks like the official ``(frame_idx, obj_ids, masks)``.

    Beyond the three tuple fields: ``object_score_logits`` (N,) (the model's object score per
    object; ``NO_OBJ_SCORE`` where an object has no output on the frame), its sigmoid
    ``presence``, and ``events`` (:class:`~masklet.video.health.TrackEvent` s that began or were
    confirmed on this frame, when a health monitor watched the tracking).
    """

    object_score_logits: torch.Tensor | None
    events: list

    def __new__(
        cls,
        frame_idx: int,
        obj_ids: list[int],
        mask_logits: torch.Tensor,
        object_score_logits: torch.Tensor | None = None,
        events: list | None = None,
    ) -> TrackedFrame:
        self = super().__new__(cls, frame_idx, obj_ids, mask_logits)
        self.object_score_logits = object_score_logits
        self.events = [] if events is None else list(events)
        return self

    @property
    def masks(self) -> torch.Tensor:
        """(N, H, W) bool masks (logit > 0)."""
        return self.mask_logits[:, 0] > 0

    @property
    def presence(self) -> torch.Tensor | None:
        """(N,) probability that each object is visible: sigmoid of its object score logit."""
        if self.object_score_logits is None:
            return None
        return torch.sigmoid(self.object_score_logits.float())


@dataclass(eq=False)
class FrameOutput:
    """One object's output on one frame: what the tracker keeps for its memory and its masks."""

    pred_masks: torch.Tensor  # (1, 1, h, w) low-resolution logits
    obj_ptr: torch.Tensor  # (1, C)
    object_score_logits: torch.Tensor  # (1, 1)
    maskmem_features: torch.Tensor | None = None  # (1, C_mem, h', w') bfloat16; None until encoded


@dataclass(eq=False)
class MemoryEntry:
    """Memory of several objects on one frame, stacked on the batch axis (what the model reads)."""

    maskmem_features: torch.Tensor | None
    maskmem_pos_enc: torch.Tensor | None
    obj_ptr: torch.Tensor


@dataclass(eq=False)
class TrackedObject:
    """One tracked object: its prompts, committed outputs, outputs awaiting memory encoding."""

    obj_id: int
    points: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    mask_inputs: dict[int, torch.Tensor] = field(default_factory=dict)
    cond: dict[int, FrameOutput] = field(default_factory=dict)  # prompted frames (conditioning memory)
    non_cond: dict[int, FrameOutput] = field(default_factory=dict)  # tracked frames
    pending: dict[bool, dict[int, FrameOutput]] = field(default_factory=lambda: {True: {}, False: {}})
    tracked: dict[int, bool] = field(default_factory=dict)  # frame -> tracked in reverse

    def output_at(self, frame_idx: int, is_cond: bool) -> FrameOutput | None:
        """The newest output on a frame: pending of that kind, then conditioning, then tracked."""
        for store in (self.pending[is_cond], self.cond, self.non_cond):
            if frame_idx in store:
                return store[frame_idx]
        return None


@dataclass(eq=False)
class VideoState:
    """An interactive tracking session on one video (create it with :meth:`VideoPredictor.init_state`)."""

    frames: FrameSource
    num_frames: int | None  # None for an open-ended stream
    video_height: int
    video_width: int
    device: torch.device
    storage_device: torch.device
    feature_cache_size: int
    objects: dict[int, TrackedObject] = field(default_factory=dict)
    features: OrderedDict = field(default_factory=OrderedDict)  # frame -> encoded features (LRU)
    maskmem_pos_enc: torch.Tensor | None = None  # the same for every frame and object

    @property
    def obj_ids(self) -> list[int]:
        """Object ids in the order they were added (the order of every mask output)."""
        return list(self.objects)

    def prompted(self, frame_idx: int) -> list[bool]:
        """Whether each object (in state order) holds a prompt on the frame."""
        return [frame_idx in obj.cond for obj in self.objects.values()]

    def first_prompted_frame(self) -> int:
        """The earliest frame any object is conditioned on (where propagation starts by default)."""
        return min(t for obj in self.objects.values() for t in obj.cond)


class StackedOutputs(Mapping):
    """Frame -> memory of several objects stacked on the batch axis, built on access.

    The objects must hold outputs on the same frames wherever the model looks (the engine's
    grouping of objects by memory frames guarantees it).
    """

    def __init__(self, per_object: list[dict[int, FrameOutput]], pos_enc: torch.Tensor | None) -> None:
        self._per_object = per_object
        self._pos_enc = pos_enc
        self._stacked: dict[int, MemoryEntry] = {}

    def __getitem__(self, frame_idx: int) -> MemoryEntry:
        if frame_idx not in self._per_object[0]:
            raise KeyError(frame_idx)
        if frame_idx not in self._stacked:
            outs = [store[frame_idx] for store in self._per_object]
            features = torch.cat([o.maskmem_features for o in outs])  # type: ignore[misc]  # stored frames always carry memory features
            self._stacked[frame_idx] = MemoryEntry(
                maskmem_features=features,
                maskmem_pos_enc=None if self._pos_enc is None else self._pos_enc.expand(features.shape[0], -1, -1, -1),
                obj_ptr=torch.cat([o.obj_ptr for o in outs]),
            )
        return self._stacked[frame_idx]

    def __iter__(self) -> Iterator[int]:
        return iter(self._per_object[0])

    def __len__(self) -> int:
        return len(self._per_object[0])
