"""Track health: per-object presence over frames, and the events an annotator wants flagged.

SAM2 predicts an object score logit on every tracked frame; its sigmoid is the probability that
the object is visible there (the model blanks the mask where the logit is <= 0). A
:class:`HealthMonitor` takes frames in the order they are tracked and reports:

- ``"lost"``: presence below ``lost_threshold`` -- or, when mask areas are given and
  ``min_area_ratio`` > 0, a mask smaller than ``min_area_ratio`` times the object's mean area on
  its last ``area_window`` seen frames -- on ``lost_frames`` consecutive frames; the event's
  ``frame_idx`` is the first of those frames, ``confirmed_at`` the last.
  -- or, when ``score_drop`` > 0, an object score logit more than ``score_drop`` below the median
  of the object's logits on its last ``area_window`` seen, unprompted frames.
- ``"reappeared"``: the first frame after "lost" where none of these criteria holds.

The area criterion is there because object scores are only as calibrated as the model's
training: the small ``masklet-nano`` lowers its score when an object leaves but often keeps it
above 0, while its mask collapses to a few pixels, or, when another object covers it, keeps a part of the
cover as its mask; its score then still falls sharply (by 1.4 to 10 logits on the generated
occlusion clips, against changes under 0.5 from one visible frame to the next). Reference areas
and scores are taken on frames where the object is seen (absent by no criterion); prompted
frames (decoded from the prompt, with higher scores) are left out of the score reference. An
object whose score stays ``score_drop`` below its reference stays lost until the score comes back.
- ``"low_confidence"``: presence in ``[lost_threshold, low_confidence)`` while not lost, once per
  run of such frames (``frame_idx`` its first frame).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..checks import is_int, is_real
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
    scores: list[float] = field(default_factory=list)  # object score logits of the last seen, unprompted frames
    started: bool = False  # the object has had a frame


@dataclass
class HealthMonitor:
    """Turn per-frame presence into lost / reappeared / low-confidence events (see module doc)."""

    lost_threshold: float = 0.5
    lost_frames: int = 2
    low_confidence: float = 0.8
    min_area_ratio: float = 0.25
    area_window: int = 5
    score_drop: float = 1.5
    events: list[TrackEvent] = field(default_factory=list)
    _objects: dict[int, _ObjectHealth] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for name in ("lost_threshold", "low_confidence"):
            value = getattr(self, name)
            if not is_real(value) or not 0.0 <= value <= 1.0:
                raise InvalidInputError(f"{name}: expected a probability in [0, 1], got {value!r}")
        ratio = self.min_area_ratio
        if not is_real(ratio) or not 0.0 <= ratio < 1.0:
            raise InvalidInputError(
                f"min_area_ratio: expected a number in [0, 1) (0 turns the area test off), got {ratio!r}"
            )
        drop = self.score_drop
        if not is_real(drop) or not 0.0 <= drop < math.inf:
            raise InvalidInputError(
                f"score_drop: expected a number of logits >= 0 (0 turns the score test off), got {drop!r}"
            )
        if not is_int(self.area_window, numpy=False) or self.area_window < 1:
            raise InvalidInputError(f"area_window: expected an int >= 1, got {self.area_window!r}")
        if self.low_confidence < self.lost_threshold:
            raise InvalidInputError(
                f"low_confidence: expected >= lost_threshold ({self.lost_threshold}), got {self.low_confidence}"
            )
        if not is_int(self.lost_frames, numpy=False) or self.lost_frames < 1:
            raise InvalidInputError(f"lost_frames: expected an int >= 1, got {self.lost_frames!r}")

    def update(
        self,
        frame_idx: int,
        obj_ids: list[int],
        presence: list[float],
        areas: list[float] | None = None,
        *,
        logits: list[float] | None = None,
        prompted: list[bool] | None = None,
    ) -> list[TrackEvent]:
        """Take one frame's presence (and mask area in pixels, object score logit, whether the
        frame holds a prompt) per object, frames in tracking order; returns the frame's new events.
        Logits default to those of the presence values; without ``prompted``, an object's first
        frame is taken as its only prompted one."""
        if len(obj_ids) != len(presence):
            raise InvalidInputError(f"presence: expected {len(obj_ids)} values, one per object, got {len(presence)}")
        if areas is not None and len(areas) != len(obj_ids):
            raise InvalidInputError(f"areas: expected {len(obj_ids)} values, one per object, got {len(areas)}")
        for name, values in (("logits", logits), ("prompted", prompted)):
            if values is not None and len(values) != len(obj_ids):
                raise InvalidInputError(f"{name}: expected {len(obj_ids)} values, one per object, got {len(values)}")
        new: list[TrackEvent] = []
        for k, (obj_id, p) in enumerate(zip(obj_ids, presence)):
            p = float(p)
            if math.isnan(p):
                raise InvalidInputError(f"presence: object {obj_id} has NaN presence on frame {frame_idx}")
            h = self._objects.setdefault(int(obj_id), _ObjectHealth())
            logit = _logit(p) if logits is None else float(logits[k])
            # unknown prompts: an object's first frame is taken as its prompt frame
            is_prompted = not h.started if prompted is None else bool(prompted[k])
            h.started = True
            shrunk = dropped = False
            area = None
            if areas is not None and self.min_area_ratio > 0:
                area = float(areas[k])
                shrunk = bool(h.areas) and area < self.min_area_ratio * sum(h.areas) / len(h.areas)
            if self.score_drop > 0 and h.scores and not is_prompted:
                dropped = logit < _median(h.scores) - self.score_drop
            if not (shrunk or dropped) and p >= self.lost_threshold:  # seen: update the references
                if area is not None:
                    h.areas = (h.areas + [area])[-self.area_window :]
                if not is_prompted:
                    h.scores = (h.scores + [logit])[-self.area_window :]
            if p < self.lost_threshold or shrunk or dropped:
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


def _logit(p: float) -> float:
    q = min(max(p, 1e-7), 1.0 - 1e-7)
    return math.log(q / (1.0 - q))


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])
