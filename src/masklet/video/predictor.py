"""Interactive video object tracking through SAM2 memory, with the official predictor's semantics.

A session (:class:`VideoState`) holds each object's prompts and per-frame outputs. Frames are
decoded lazily from a :class:`~masklet.video.frames.FrameSource` and their encoded features are
kept in a small LRU cache, so a long video never has to fit in memory. All objects of a frame whose
memories have the same layout are tracked in one batched model call. Conditioning, memory
selection, refinement and removal follow ``sam2.SAM2VideoPredictor``; masks match it numerically.
"""

from __future__ import annotations

import numbers
from collections import OrderedDict, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidInputError, PredictorStateError
from ..masks import fill_small_holes
from ..model import MemoryBank, Sam2Model
from ..model.sam2 import NO_OBJ_SCORE, non_overlapping
from ..precision import inference
from ..prompts import video_prompt
from ..transforms import preprocess_frame
from .frames import FrameSource, open_frames
from .health import HealthMonitor, presence_from_logits

#: Previous logits fed back with refinement clicks are clamped to this range (as the official does).
_PREV_LOGIT_CLAMP = 32.0
_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


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
        cls, frame_idx: int, obj_ids: list[int], mask_logits: torch.Tensor,
        object_score_logits: torch.Tensor | None = None, events: list | None = None,
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
class _Object:
    """One tracked object: its prompts, committed outputs, outputs awaiting memory encoding."""

    obj_id: int
    points: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    mask_inputs: dict[int, torch.Tensor] = field(default_factory=dict)
    cond: dict[int, dict] = field(default_factory=dict)  # prompted frames (conditioning memory)
    non_cond: dict[int, dict] = field(default_factory=dict)  # tracked frames
    pending: dict[bool, dict[int, dict]] = field(default_factory=lambda: {True: {}, False: {}})
    tracked: dict[int, bool] = field(default_factory=dict)  # frame -> tracked in reverse

    def output_at(self, frame_idx: int, is_cond: bool) -> dict | None:
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
    objects: dict[int, _Object] = field(default_factory=dict)
    features: OrderedDict = field(default_factory=OrderedDict)  # frame -> encoded features (LRU)
    maskmem_pos_enc: torch.Tensor | None = None  # the same for every frame and object

    @property
    def obj_ids(self) -> list[int]:
        """Object ids in the order they were added (the order of every mask output)."""
        return list(self.objects)


class _StackedOutputs(Mapping):
    """Frame -> memory entries of several objects stacked on the batch axis, built on access.

    The objects must hold outputs on the same frames wherever the model looks (the grouping in
    :meth:`VideoPredictor._track_frame` guarantees it).
    """

    def __init__(self, per_object: list[dict[int, dict]], pos_enc: torch.Tensor | None) -> None:
        self._per_object = per_object
        self._pos_enc = pos_enc
        self._stacked: dict[int, dict] = {}

    def __getitem__(self, frame_idx: int) -> dict:
        if frame_idx not in self._per_object[0]:
            raise KeyError(frame_idx)
        if frame_idx not in self._stacked:
            outs = [store[frame_idx] for store in self._per_object]
            features = torch.cat([o["maskmem_features"] for o in outs])
            self._stacked[frame_idx] = {
                "maskmem_features": features,
                "maskmem_pos_enc": None if self._pos_enc is None else self._pos_enc.expand(features.shape[0], -1, -1, -1),
                "obj_ptr": torch.cat([o["obj_ptr"] for o in outs]),
            }
        return self._stacked[frame_idx]

    def __iter__(self) -> Iterator[int]:
        return iter(self._per_object[0])

    def __len__(self) -> int:
        return len(self._per_object[0])


class VideoPredictor:
    """Track objects through a video from clicks, boxes or masks on any frame.

    Options (defaults as ``sam2.build_sam2_video_predictor``): ``fill_hole_area`` fills background
    holes up to that many low-resolution pixels in every output (on CPU; never skipped);
    ``non_overlap_masks`` keeps only the highest-scoring object at each output pixel;
    ``clear_non_cond_mem_around_input`` drops an object's tracked memories near a frame it gets
    new prompts on; ``add_all_frames_to_correct_as_cond`` makes corrected frames conditioning
    frames; ``binarize_mask_from_pts`` encodes prompted frames' masks as hard 0/1 in memory.
    """

    def __init__(
        self,
        model: Sam2Model,
        *,
        fill_hole_area: float = 8,
        non_overlap_masks: bool = False,
        clear_non_cond_mem_around_input: bool = False,
        add_all_frames_to_correct_as_cond: bool = False,
        binarize_mask_from_pts: bool = True,
        progress: bool = False,
    ) -> None:
        if not isinstance(model, Sam2Model):
            raise InvalidInputError(f"model: expected a masklet Sam2Model (see masklet.load_model), got {type(model).__name__}")
        if model.config.num_maskmem == 0:
            raise InvalidInputError("model: this config has no memory (num_maskmem=0) and cannot track video")
        if not isinstance(fill_hole_area, numbers.Real) or isinstance(fill_hole_area, bool) or fill_hole_area < 0:
            raise InvalidInputError(f"fill_hole_area: expected a number >= 0 (pixels at 1/4 model resolution), got {fill_hole_area!r}")
        self.model: Sam2Model = model.eval()
        self.fill_hole_area: float = fill_hole_area
        self.non_overlap_masks: bool = bool(non_overlap_masks)
        self.clear_non_cond_mem_around_input: bool = bool(clear_non_cond_mem_around_input)
        self.add_all_frames_to_correct_as_cond: bool = bool(add_all_frames_to_correct_as_cond)
        self.binarize_mask_from_pts: bool = bool(binarize_mask_from_pts)
        self.progress: bool = bool(progress)

    @property
    def image_size(self) -> int:
        return self.model.image_size

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
        if not isinstance(feature_cache_size, int) or isinstance(feature_cache_size, bool) or feature_cache_size < 1:
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

    @inference()
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
        self._check_frame(state, frame_idx)
        self._check_obj_id(obj_id)
        coords, point_labels = self._prompt_points(state, points, labels, box, clear_old_points, normalize_coords)
        obj = state.objects.get(obj_id) or _Object(obj_id)
        if not clear_old_points and frame_idx in obj.points:
            old = obj.points[frame_idx]
            coords = torch.cat([old["point_coords"], coords], dim=1)
            point_labels = torch.cat([old["point_labels"], point_labels], dim=1)
        state.objects[obj_id] = obj
        obj.points[frame_idx] = {"point_coords": coords, "point_labels": point_labels}
        obj.mask_inputs.pop(frame_idx, None)
        return self._run_prompt(state, obj, frame_idx, point_inputs=obj.points[frame_idx], mask_inputs=None)

    @inference()
    def add_new_mask(self, state: VideoState, frame_idx: int, obj_id: int, mask: Any) -> TrackedFrame:
        """A binary mask (H, W) of any size for one object on one frame; returns that frame's masks."""
        self._check_frame(state, frame_idx)
        self._check_obj_id(obj_id)
        m = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask))
        if m.ndim != 2 or m.numel() == 0 or m.is_complex() or not (m.dtype == torch.bool or m.dtype.is_floating_point or m.dtype in _INT_DTYPES):
            raise InvalidInputError(f"mask: expected a 2-D (H, W) binary mask (bool or 0/1 numbers), got {m.dtype} of shape {tuple(m.shape)}")
        m = m.to(state.device).float()[None, None]
        size = self.image_size
        if m.shape[-2:] != (size, size):
            m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            m = (m >= 0.5).float()
        obj = state.objects.setdefault(obj_id, _Object(obj_id))
        obj.mask_inputs[frame_idx] = m
        obj.points.pop(frame_idx, None)
        return self._run_prompt(state, obj, frame_idx, point_inputs=None, mask_inputs=m)

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
            raise InvalidInputError(f"health: expected a masklet.video.HealthMonitor or None, got {type(health).__name__}")
        if state.num_frames is None:
            raise PredictorStateError("propagate_in_video needs a video session; use StreamTracker.track for streams")
        if start_frame_idx is not None:
            self._check_frame(state, start_frame_idx, "start_frame_idx")
        if max_frame_num_to_track is not None and (
            not isinstance(max_frame_num_to_track, int) or isinstance(max_frame_num_to_track, bool) or max_frame_num_to_track < 0
        ):
            raise InvalidInputError(f"max_frame_num_to_track: expected an int >= 0, got {max_frame_num_to_track!r}")
        self._commit(state)  # eagerly, so that bad state raises here rather than at the first frame
        monitor = HealthMonitor() if health is None else health
        return self._propagate(state, start_frame_idx, max_frame_num_to_track, bool(reverse), monitor)

    def _propagate(
        self, state: VideoState, start: int | None, max_frames: int | None, reverse: bool, health: HealthMonitor
    ) -> Iterator[TrackedFrame]:
        if start is None:
            start = min(t for obj in state.objects.values() for t in obj.cond)
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
                low_res = self._track_frame(state, frame_idx, reverse)
                result = self._watch(health, self._video_output(state, frame_idx, low_res), _prompted(state, frame_idx))
            yield result

    @inference()
    def clear_all_prompts_in_frame(
        self, state: VideoState, frame_idx: int, obj_id: int, need_output: bool = True
    ) -> TrackedFrame | None:
        """Remove one object's clicks and mask on a frame; its output there becomes a tracked one."""
        self._check_frame(state, frame_idx)
        obj = self._get_object(state, obj_id)
        self._clear_prompts(obj, frame_idx)
        if not need_output:
            return None
        is_cond = any(frame_idx in o.pending[True] for o in state.objects.values())
        return self._consolidated(state, frame_idx, is_cond)

    @inference()
    def remove_object(
        self, state: VideoState, obj_id: int, need_output: bool = True
    ) -> tuple[list[int], list[TrackedFrame]]:
        """Forget an object; returns the remaining ids and the updated masks of its prompted frames."""
        obj = self._get_object(state, obj_id)
        if len(state.objects) == 1:
            self.reset_state(state)
            return [], []
        prompted = sorted(set(obj.points) | set(obj.mask_inputs))
        for frame_idx in prompted:
            self._clear_prompts(obj, frame_idx)
        del state.objects[obj_id]
        updated: list[TrackedFrame] = []
        if need_output:
            for frame_idx in prompted:
                is_cond = any(frame_idx in o.pending[True] for o in state.objects.values())
                updated.append(self._consolidated(state, frame_idx, is_cond))
        return state.obj_ids, updated

    def reset_state(self, state: VideoState) -> None:
        """Remove every object, prompt and tracking result (decoded features stay cached)."""
        state.objects.clear()

    # ------------------------------------------------------------- validation

    @staticmethod
    def _check_frame(state: VideoState, frame_idx: Any, name: str = "frame_idx") -> None:
        if state.num_frames is None:
            return  # streams check their own frame indices
        valid = isinstance(frame_idx, (int, np.integer)) and not isinstance(frame_idx, bool)
        if not valid or not 0 <= int(frame_idx) < state.num_frames:
            raise InvalidInputError(f"{name}: expected an int in [0, {state.num_frames - 1}], got {frame_idx!r}")

    @staticmethod
    def _check_obj_id(obj_id: Any) -> None:
        if not isinstance(obj_id, (int, np.integer)) or isinstance(obj_id, bool):
            raise InvalidInputError(f"obj_id: expected an int, got {obj_id!r}")

    @staticmethod
    def _get_object(state: VideoState, obj_id: Any) -> _Object:
        if obj_id not in state.objects:
            raise InvalidInputError(f"obj_id: unknown object {obj_id!r}; known objects: {state.obj_ids}")
        return state.objects[obj_id]

    def _prompt_points(
        self, state: VideoState, points: Any, labels: Any, box: Any, clear_old_points: bool, normalize_coords: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validated clicks and box as (1, P, 2) model-frame coordinates and (1, P) int labels."""
        coords, point_labels = video_prompt(
            points, labels, box, clear_old_points, (state.video_height, state.video_width), self.image_size,
            normalize_coords,
        )
        return coords.to(state.device), point_labels.to(state.device)

    # ------------------------------------------------------------------- model

    def _features(self, state: VideoState, frame_idx: int) -> tuple[list, list, list]:
        """Sequence-first (hw, 1, C) features, positions and sizes of a frame (LRU cached)."""
        cache = state.features
        if frame_idx in cache:
            cache.move_to_end(frame_idx)
            return cache[frame_idx]
        model = self.model
        pixels = preprocess_frame(state.frames[frame_idx], self.image_size, state.device, model.encoder_dtype)
        encoded = model.encode_image(pixels)
        feats = [f.flatten(2).permute(2, 0, 1) for f in encoded.levels]
        pos = [p.flatten(2).permute(2, 0, 1) for p in encoded.positions]
        sizes = [tuple(f.shape[-2:]) for f in encoded.levels]
        cache[frame_idx] = (feats, pos, sizes)
        while len(cache) > state.feature_cache_size:
            cache.popitem(last=False)
        return cache[frame_idx]

    def _run(
        self,
        state: VideoState,
        frame_idx: int,
        objects: list[_Object],
        is_init_cond_frame: bool,
        point_inputs: dict | None,
        mask_inputs: torch.Tensor | None,
        reverse: bool,
        run_mem_encoder: bool,
        prev_logits: torch.Tensor | None = None,
    ) -> tuple[list[dict], torch.Tensor]:
        """One model step for a batch of objects; returns compact per-object outputs and masks."""
        feats, pos, sizes = self._features(state, frame_idx)
        batch = len(objects)
        pos_enc = state.maskmem_pos_enc
        bank = MemoryBank(
            cond=_StackedOutputs([o.cond for o in objects], pos_enc),
            non_cond=_StackedOutputs([o.non_cond for o in objects], pos_enc),
        )
        out = self.model.track_step(
            frame_idx, is_init_cond_frame,
            [f.expand(-1, batch, -1) for f in feats], [p.expand(-1, batch, -1) for p in pos], sizes,
            point_inputs, mask_inputs, bank, state.num_frames, reverse, run_mem_encoder, prev_logits,
            binarize_mask_from_pts=self.binarize_mask_from_pts, non_overlap_memory=False,
        )
        pred_masks = out["pred_masks"].float()
        if self.fill_hole_area > 0:
            pred_masks = fill_small_holes(pred_masks, self.fill_hole_area)
        memory = out["maskmem_features"]
        if memory is not None:
            self._remember_pos_enc(state, out["maskmem_pos_enc"])
        stored = pred_masks.to(state.storage_device)
        compact = [
            {
                "maskmem_features": None if memory is None else memory[i : i + 1].to(torch.bfloat16).to(state.storage_device),
                "pred_masks": stored[i : i + 1],
                "obj_ptr": out["obj_ptr"][i : i + 1],
                "object_score_logits": out["object_score_logits"][i : i + 1],
            }
            for i in range(batch)
        ]
        return compact, pred_masks

    @staticmethod
    def _remember_pos_enc(state: VideoState, pos_enc: torch.Tensor) -> None:
        if state.maskmem_pos_enc is None:
            state.maskmem_pos_enc = pos_enc[:1].clone()

    def _run_prompt(
        self, state: VideoState, obj: _Object, frame_idx: int, point_inputs: dict | None, mask_inputs: torch.Tensor | None
    ) -> TrackedFrame:
        """Decode one object's prompts on a frame (no memory encoding yet) and consolidate the frame."""
        is_init = frame_idx not in obj.tracked
        reverse = obj.tracked.get(frame_idx, False)
        is_cond = is_init or self.add_all_frames_to_correct_as_cond
        prev_logits = None
        if point_inputs is not None:
            prev = obj.output_at(frame_idx, is_cond)
            if prev is not None:
                prev_logits = prev["pred_masks"].to(state.device).clamp(-_PREV_LOGIT_CLAMP, _PREV_LOGIT_CLAMP)
        (out,), _ = self._run(
            state, frame_idx, [obj], is_init, point_inputs, mask_inputs, reverse, run_mem_encoder=False,
            prev_logits=prev_logits,
        )
        obj.pending[is_cond][frame_idx] = out
        return self._consolidated(state, frame_idx, is_cond)

    def _commit(self, state: VideoState) -> None:
        """Encode the memory of newly prompted frames (batched per frame) and make them usable."""
        if not state.objects:
            raise PredictorStateError("no objects to track: add points, a box or a mask first")
        missing = [o.obj_id for o in state.objects.values() if not o.cond and not o.pending[True]]
        if missing:
            raise PredictorStateError(
                f"objects {missing} have no prompted frame left; add points, a box or a mask for them, or remove them"
            )
        todo: dict[int, list[dict]] = defaultdict(list)
        for obj in state.objects.values():
            for is_cond in (False, True):
                for frame_idx, out in obj.pending[is_cond].items():
                    if out["maskmem_features"] is None:
                        todo[frame_idx].append(out)
        for frame_idx, outs in todo.items():
            self._encode_memory(state, frame_idx, outs)
        for obj in state.objects.values():
            for is_cond in (False, True):
                for frame_idx, out in obj.pending[is_cond].items():
                    (obj.cond if is_cond else obj.non_cond)[frame_idx] = out
                    if self.clear_non_cond_mem_around_input:
                        self._clear_memory_around(obj, frame_idx)
                obj.pending[is_cond].clear()
            for frame_idx in obj.cond:
                obj.non_cond.pop(frame_idx, None)

    def _encode_memory(self, state: VideoState, frame_idx: int, outs: list[dict]) -> None:
        """Memory features for prompted outputs on one frame, as masks from user prompts."""
        feats, _, sizes = self._features(state, frame_idx)
        batch = len(outs)
        size = self.image_size
        pix_feat = feats[-1].permute(1, 2, 0).reshape(1, -1, *sizes[-1]).expand(batch, -1, -1, -1)
        low_res = torch.cat([o["pred_masks"] for o in outs]).to(state.device)
        high_res = F.interpolate(low_res, size=(size, size), mode="bilinear", align_corners=False)
        scores = torch.cat([o["object_score_logits"] for o in outs]).to(state.device)
        features, pos_enc = self.model.encode_memory(
            pix_feat, high_res.to(pix_feat.dtype), scores, is_mask_from_pts=True,
            binarize_mask_from_pts=self.binarize_mask_from_pts, non_overlap=False,
        )
        self._remember_pos_enc(state, pos_enc)
        for i, out in enumerate(outs):
            out["maskmem_features"] = features[i : i + 1].to(torch.bfloat16).to(state.storage_device)

    def _memory_window(self) -> int:
        """How far (in frames) the model looks back or ahead for memories and object pointers."""
        c = self.model.config
        return max(c.num_maskmem * c.memory_temporal_stride_for_eval + 2, c.max_obj_ptrs_in_encoder)

    def _track_frame(self, state: VideoState, frame_idx: int, reverse: bool) -> torch.Tensor:
        """Low-resolution logits (N, 1, h, w) of every object on a frame, tracking where not prompted."""
        objects = list(state.objects.values())
        results: list[torch.Tensor | None] = [None] * len(objects)
        window = self._memory_window()
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, obj in enumerate(objects):
            if frame_idx in obj.cond:
                results[i] = obj.cond[frame_idx]["pred_masks"].to(state.device)
                if self.clear_non_cond_mem_around_input:
                    self._clear_memory_around(obj, frame_idx)
                continue
            # Objects batch together when the model sees memories on the same frames for them.
            nearby = tuple(sorted(t for t in obj.non_cond if abs(t - frame_idx) <= window))
            groups[(tuple(sorted(obj.cond)), nearby)].append(i)
        for members in groups.values():
            group = [objects[i] for i in members]
            outs, masks = self._run(state, frame_idx, group, False, None, None, reverse, run_mem_encoder=True)
            for j, (i, obj) in enumerate(zip(members, group)):
                obj.non_cond[frame_idx] = outs[j]
                results[i] = masks[j : j + 1]
        for obj in objects:
            obj.tracked[frame_idx] = reverse
        return torch.cat(results)  # type: ignore[arg-type]

    def _clear_memory_around(self, obj: _Object, frame_idx: int) -> None:
        c = self.model.config
        reach = c.memory_temporal_stride_for_eval * c.num_maskmem
        for t in range(frame_idx - reach, frame_idx + reach + 1):
            obj.non_cond.pop(t, None)

    @staticmethod
    def _clear_prompts(obj: _Object, frame_idx: int) -> None:
        obj.points.pop(frame_idx, None)
        obj.mask_inputs.pop(frame_idx, None)
        obj.pending[True].pop(frame_idx, None)
        obj.pending[False].pop(frame_idx, None)
        out = obj.cond.pop(frame_idx, None)
        if out is not None:  # no longer prompted: the output stays, as a tracked frame's
            obj.non_cond[frame_idx] = out
            obj.tracked.pop(frame_idx, None)

    # ----------------------------------------------------------------- outputs

    def _consolidated(self, state: VideoState, frame_idx: int, is_cond: bool) -> TrackedFrame:
        """Every object's newest mask on a frame at video resolution (absent ones: NO_OBJ_SCORE)."""
        hw = (state.video_height, state.video_width)
        masks = torch.full((len(state.objects), 1, *hw), NO_OBJ_SCORE, dtype=torch.float32, device=state.device)
        scores = torch.full((len(state.objects),), NO_OBJ_SCORE, dtype=torch.float32)
        for i, obj in enumerate(state.objects.values()):
            out = obj.output_at(frame_idx, is_cond)
            if out is not None:
                masks[i : i + 1] = F.interpolate(
                    out["pred_masks"].to(state.device), size=hw, mode="bilinear", align_corners=False
                )
                scores[i] = out["object_score_logits"].float().reshape(-1)[0].cpu()
        if self.non_overlap_masks:
            masks = non_overlapping(masks)
        return TrackedFrame(frame_idx, state.obj_ids, masks, scores)

    def _video_output(self, state: VideoState, frame_idx: int, low_res: torch.Tensor) -> TrackedFrame:
        hw = (state.video_height, state.video_width)
        masks = F.interpolate(low_res.float(), size=hw, mode="bilinear", align_corners=False)
        if self.non_overlap_masks:
            masks = non_overlapping(masks)
        return TrackedFrame(frame_idx, state.obj_ids, masks, self._frame_scores(state, frame_idx))

    @staticmethod
    def _frame_scores(state: VideoState, frame_idx: int) -> torch.Tensor:
        """(N,) object score logits of every object's output on a just-tracked frame (CPU float)."""
        scores = []
        for obj in state.objects.values():
            out = obj.cond.get(frame_idx) or obj.non_cond.get(frame_idx)
            scores.append(NO_OBJ_SCORE if out is None else float(out["object_score_logits"].float().reshape(-1)[0]))
        return torch.tensor(scores, dtype=torch.float32)

    @staticmethod
    def _watch(health: HealthMonitor | None, frame: TrackedFrame, prompted: list[bool] | None = None) -> TrackedFrame:
        """Feed a frame's presence (with mask areas, logits, prompted flags) to a health monitor
        and attach the events it reports."""
        if health is not None and frame.object_score_logits is not None:
            presence = presence_from_logits(frame.object_score_logits)
            areas = [float(a) for a in frame.masks.flatten(1).sum(1).cpu()]
            logits = [float(x) for x in frame.object_score_logits.detach().float().reshape(-1).cpu()]
            frame.events.extend(
                health.update(frame.frame_idx, frame.obj_ids, presence, areas, logits=logits, prompted=prompted)
            )
        return frame


def _prompted(state: VideoState, frame_idx: int) -> list[bool]:
    """Whether each object (in state order) holds a prompt on the frame."""
    return [frame_idx in obj.cond for obj in state.objects.values()]
