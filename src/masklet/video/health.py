"""Track health: per-object presence over frames, and the events an annotator wants flagged.

SAM2 predicts an object score logit on every tracked frame; its sigmoid is the probability that
the object is visible there (the model blanks the mask where the logit is <= 0). A
:class:`HealthMonitor` takes frames in the order they are tracked and reports:

- ``"lost"``: presence below ``lost_threshold`` -- or, when mask areas are given and
  ``min_area_ratio`` > 0, a mask smaller than ``min_area_ratio`` times the object's mean area on
  its last ``area_window`` seen frames -- on ``lost_frames`` consecutive frames; the event's
  ``frame_idx`` is the first of those frames, ``confirmed_at`` the last.
- ``"reappeared"``: the first frame after "lost" where neither criterion holds.

The area criterion is there because object scores are only as calibrated as the model's
training: the small ``masklet-nano`` lowers its score when an object leaves but often keeps it
above 0, while its mask collapses to a few pixels.
- ``"low_confidence"``: presence in ``[lost_threshold, low_confidence)`` while not lost, once per
  run of such frames (``frame_idx`` its first frame).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..errors import InvalidInputError

__all__ = ["EVENT_KINDS", "HealthMonitor", "TrackEvent", "presence_from_logits"]

EVENT_KINDS = ("lost", "reappeared", "low_confidence")


def presence_from_logits(object_score_logits: torch.Tensor) -> list[float]:
    """Presence probabilities (sigmoid of the object score logits), one float per object."""
    return [float(p) for p in torch.sigmoid(object_score_logits.detach().float().reshape(-1)).cpu()]


@dataclass(frozen=True)
class TrackEvent:
    """A change in an object's health; ``frame_idx`` is where it began, ``confirmed_at`` where it
    was decided (they differ for "lost", which needs ``lost_frames`` frames)."""

    kind: str
    obj_id: int
    frame_idx: int
    confirmed_at: int
    presence: float  # presence on the frame_idx frame

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass
class _ObjectHealth:
    lost: bool = False
    low_run: bool = False
    absent_since: int | None = None
    absent_presence: float = 0.0
    absent_count: int = 0
    areas: list[float] = field(default_factory=list)  # mask areas of the last seen frames


@dataclass
class HealthMonitor:
    """Turn per-frame presence into lost / reappeared / low-confidence events (see module doc)."""

    lost_threshold: float = 0.5
    lost_frames: int = 2
    low_confidence: float = 0.8
    min_area_ratio: float = 0.25
    area_window: int = 5
    events: list[TrackEvent] = field(default_factory=list)
    _objects: dict[int, _ObjectHealth] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for name in ("lost_threshold", "low_confidence"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
                raise InvalidInputError(f"{name}: expected a probability in [0, 1], got {value!r}")
        ratio = self.min_area_ratio
        if not isinstance(ratio, numbers.Real) or isinstance(ratio, bool) or not 0.0 <= ratio < 1.0:
            raise InvalidInputError(f"min_area_ratio: expected a number in [0, 1) (0 turns the area test off), got {ratio!r}")
        if not isinstance(self.area_window, int) or isinstance(self.area_window, bool) or self.area_window < 1:
            raise InvalidInputError(f"area_window: expected an int >= 1, got {self.area_window!r}")
        if self.low_confidence < self.lost_threshold:
            raise InvalidInputError(
                f"low_confidence: expected >= lost_threshold ({self.lost_threshold}), got {self.low_confidence}"
            )
        if not isinstance(self.lost_frames, int) or isinstance(self.lost_frames, bool) or self.lost_frames < 1:
            raise InvalidInputError(f"lost_frames: expected an int >= 1, got {self.lost_frames!r}")

    def update(
        self, frame_idx: int, obj_ids: list[int], presence: list[float], areas: list[float] | None = None
    ) -> list[TrackEvent]:
        """Take one frame's presence (and mask area in pixels) per object, frames in tracking
        order; returns the frame's new events."""
        if len(obj_ids) != len(presence):
            raise InvalidInputError(f"presence: expected {len(obj_ids)} values, one per object, got {len(presence)}")
        if areas is not None and len(areas) != len(obj_ids):
            raise InvalidInputError(f"areas: expected {len(obj_ids)} values, one per object, got {len(areas)}")
        new: list[TrackEvent] = []
        for k, (obj_id, p) in enumerate(zip(obj_ids, presence)):
            p = float(p)
            if math.isnan(p):
                raise InvalidInputError(f"presence: object {obj_id} has NaN presence on frame {frame_idx}")
            h = self._objects.setdefault(int(obj_id), _ObjectHealth())
            shrunk = False
            if areas is not None and self.min_area_ratio > 0:
                area = float(areas[k])
                shrunk = bool(h.areas) and area < self.min_area_ratio * sum(h.areas) / len(h.areas)
                if not shrunk and p >= self.lost_threshold:
                    h.areas = (h.areas + [area])[-self.area_window :]
            if p < self.lost_threshold or shrunk:
                h.low_run = False
                if h.absent_since is None:
                    h.absent_since, h.absent_presence, h.absent_count = frame_idx, p, 0
                h.absent_count += 1
                if not h.lost and h.absent_count >= self.lost_frames:
                    h.lost = True
                    new.append(TrackEvent("lost", int(obj_id), h.absent_since, frame_idx, h.absent_presence))
                continue
            h.absent_since, h.absent_count = None, 0
            if h.lost:
                h.lost = False
                new.append(TrackEvent("reappeared", int(obj_id), frame_idx, frame_idx, p))
            if p < self.low_confidence:
                if not h.low_run:
                    h.low_run = True
                    new.append(TrackEvent("low_confidence", int(obj_id), frame_idx, frame_idx, p))
            else:
                h.low_run = False
        self.events.extend(new)
        return new

    def is_lost(self, obj_id: int) -> bool:
        """Whether the object is currently lost (a "lost" event with no "reappeared" since)."""
        h = self._objects.get(int(obj_id))
        return h is not None and h.lost

    def forget(self, obj_id: int) -> None:
        """Drop an object's state (after it was removed from tracking)."""
        self._objects.pop(int(obj_id), None)

    def reset(self) -> None:
        """Forget every object and event."""
        self._objects.clear()
        self.events.clear()
