"""The tracking engine: prompts, memory encoding and frame-by-frame tracking over a :class:`VideoState`.

:class:`TrackingEngine` holds the model and the tracking options, and its public methods are what
the offline :class:`~masklet.video.VideoPredictor`, the live :class:`~masklet.video.StreamTracker`
and the server drive. All objects of a frame whose memories have the same layout are tracked in one
batched model call. Conditioning, memory selection, refinement and removal follow
``sam2.SAM2VideoPredictor``; masks match it numerically.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..checks import check_obj_id, check_sam2_model, is_int, is_real
from ..errors import InvalidInputError, PredictorStateError
from ..masks import fill_small_holes
from ..model import MemoryBank, Sam2Model
from ..model.common import to_maps, to_sequence
from ..model.sam2 import NO_OBJ_SCORE, non_overlapping
from ..precision import inference
from ..prompts import video_prompt
from ..transforms import preprocess_frame, upscale_masks
from .health import HealthMonitor, presence_from_logits
from .session import FrameOutput, StackedOutputs, TrackedFrame, TrackedObject, VideoState

#: Previous logits fed back with refinement clicks are clamped to this range (as the official does).
_PREV_LOGIT_CLAMP = 32.0
_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def check_frame(state: Any, frame_idx: Any, name: str = "frame_idx") -> None:
    """Raise unless ``frame_idx`` is a frame of the session (streams, ``num_frames=None``, check their own)."""
    if state.num_frames is None:
        return
    valid = is_int(frame_idx)
    if not valid or not 0 <= int(frame_idx) < state.num_frames:
        raise InvalidInputError(f"{name}: expected an int in [0, {state.num_frames - 1}], got {frame_idx!r}")


def check_max_frames(max_frame_num_to_track: Any) -> None:
    """Raise unless ``max_frame_num_to_track`` is None or an int >= 0."""
    if max_frame_num_to_track is not None and (
        not is_int(max_frame_num_to_track, numpy=False) or max_frame_num_to_track < 0
    ):
        raise InvalidInputError(f"max_frame_num_to_track: expected an int >= 0, got {max_frame_num_to_track!r}")


def watch(health: HealthMonitor | None, frame: TrackedFrame, prompted: list[bool] | None = None) -> TrackedFrame:
    """Feed a frame's presence (with mask areas, logits, prompted flags) to a health monitor and
    attach the events it reports; returns the frame."""
    if health is not None and frame.object_score_logits is not None:
        presence = presence_from_logits(frame.object_score_logits)
        areas = [float(a) for a in frame.masks.flatten(1).sum(1).cpu()]
        logits = [float(x) for x in frame.object_score_logits.detach().float().reshape(-1).cpu()]
        frame.events.extend(
            health.update(frame.frame_idx, frame.obj_ids, presence, areas, logits=logits, prompted=prompted)
        )
    return frame


class TrackingEngine:
    """SAM2 memory tracking over a :class:`VideoState`: the model and the tracking options.

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
        check_sam2_model(model, memory_for="track video")
        if not is_real(fill_hole_area) or not fill_hole_area >= 0:  # NaN too
            raise InvalidInputError(
                f"fill_hole_area: expected a number >= 0 (pixels at 1/4 model resolution), got {fill_hole_area!r}"
            )
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

    # ------------------------------------------------------------------ prompts

    @inference()
    def add_points(
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
        """Clicks and/or a box for one object on one frame (see ``VideoPredictor.add_new_points_or_box``);
        returns every object's masks on that frame."""
        check_frame(state, frame_idx)
        check_obj_id(obj_id)
        coords, point_labels = video_prompt(
            points,
            labels,
            box,
            clear_old_points,
            (state.video_height, state.video_width),
            self.image_size,
            normalize_coords,
        )
        coords, point_labels = coords.to(state.device), point_labels.to(state.device)
        obj = state.objects.get(obj_id) or TrackedObject(obj_id)
        if not clear_old_points and frame_idx in obj.points:
            old = obj.points[frame_idx]
            coords = torch.cat([old["point_coords"], coords], dim=1)
            point_labels = torch.cat([old["point_labels"], point_labels], dim=1)
        state.objects[obj_id] = obj
        obj.points[frame_idx] = {"point_coords": coords, "point_labels": point_labels}
        obj.mask_inputs.pop(frame_idx, None)
        return self._run_prompt(state, obj, frame_idx, point_inputs=obj.points[frame_idx], mask_inputs=None)

    @inference()
    def add_mask(self, state: VideoState, frame_idx: int, obj_id: int, mask: Any) -> TrackedFrame:
        """A binary mask (H, W) of any size for one object on one frame; returns that frame's masks."""
        check_frame(state, frame_idx)
        check_obj_id(obj_id)
        m = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask))
        if (
            m.ndim != 2
            or m.numel() == 0
            or m.is_complex()
            or not (m.dtype == torch.bool or m.dtype.is_floating_point or m.dtype in _INT_DTYPES)
        ):
            raise InvalidInputError(
                f"mask: expected a 2-D (H, W) binary mask (bool or 0/1 numbers), got {m.dtype} of shape {tuple(m.shape)}"
            )
        m = m.to(state.device).float()[None, None]
        size = self.image_size
        if m.shape[-2:] != (size, size):
            m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            m = (m >= 0.5).float()
        obj = state.objects.setdefault(obj_id, TrackedObject(obj_id))
        obj.mask_inputs[frame_idx] = m
        obj.points.pop(frame_idx, None)
        return self._run_prompt(state, obj, frame_idx, point_inputs=None, mask_inputs=m)

    @inference()
    def clear_prompts(
        self, state: VideoState, frame_idx: int, obj_id: int, need_output: bool = True
    ) -> TrackedFrame | None:
        """Remove one object's clicks and mask on a frame; its output there becomes a tracked one."""
        check_frame(state, frame_idx)
        obj = self._get_object(state, obj_id)
        self._clear_prompts(obj, frame_idx)
        if not need_output:
            return None
        is_cond = any(frame_idx in o.pending[True] for o in state.objects.values())
        return self._consolidated(state, frame_idx, is_cond)

    @inference()
    def remove(self, state: VideoState, obj_id: int, need_output: bool = True) -> tuple[list[int], list[TrackedFrame]]:
        """Forget an object; returns the remaining ids and the updated masks of its prompted frames."""
        obj = self._get_object(state, obj_id)
        if len(state.objects) == 1:
            self.reset(state)
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

    @staticmethod
    def reset(state: VideoState) -> None:
        """Remove every object, prompt and tracking result (decoded features stay cached)."""
        state.objects.clear()

    # ----------------------------------------------------------------- tracking

    def commit(self, state: VideoState) -> None:
        """Encode the memory of newly prompted frames (batched per frame) and make them usable.

        Raises :class:`PredictorStateError` when there is nothing to track."""
        if not state.objects:
            raise PredictorStateError("no objects to track: add points, a box or a mask first")
        missing = [o.obj_id for o in state.objects.values() if not o.cond and not o.pending[True]]
        if missing:
            raise PredictorStateError(
                f"objects {missing} have no prompted frame left; add points, a box or a mask for them, or remove them"
            )
        todo: dict[int, list[FrameOutput]] = defaultdict(list)
        for obj in state.objects.values():
            for is_cond in (False, True):
                for frame_idx, out in obj.pending[is_cond].items():
                    if out.maskmem_features is None:
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

    def track(self, state: VideoState, frame_idx: int, reverse: bool, health: HealthMonitor | None) -> TrackedFrame:
        """Every object's masks on a frame at video resolution, tracking it where not prompted
        (call :meth:`commit` first); ``health`` watches the result."""
        low_res = self._track_low_res(state, frame_idx, reverse)
        return watch(health, self._video_output(state, frame_idx, low_res), state.prompted(frame_idx))

    def memory_window(self) -> int:
        """How far (in frames) the model looks back or ahead for memories and object pointers."""
        c = self.model.config
        return max(c.num_maskmem * c.memory_temporal_stride_for_eval + 2, c.max_obj_ptrs_in_encoder)

    # -------------------------------------------------------------------- model

    @staticmethod
    def _get_object(state: VideoState, obj_id: Any) -> TrackedObject:
        if obj_id not in state.objects:
            raise InvalidInputError(f"obj_id: unknown object {obj_id!r}; known objects: {state.obj_ids}")
        return state.objects[obj_id]

    def _features(self, state: VideoState, frame_idx: int) -> tuple[list, list, list]:
        """Sequence-first (hw, 1, C) features, positions and sizes of a frame (LRU cached)."""
        cache = state.features
        if frame_idx in cache:
            cache.move_to_end(frame_idx)
            return cache[frame_idx]
        model = self.model
        pixels = preprocess_frame(state.frames[frame_idx], self.image_size, state.device, model.encoder_dtype)
        encoded = model.encode_image(pixels)
        feats = [to_sequence(f) for f in encoded.levels]
        pos = [to_sequence(p) for p in encoded.positions]
        sizes = [tuple(f.shape[-2:]) for f in encoded.levels]
        cache[frame_idx] = (feats, pos, sizes)
        while len(cache) > state.feature_cache_size:
            cache.popitem(last=False)
        return cache[frame_idx]

    def _run(
        self,
        state: VideoState,
        frame_idx: int,
        objects: list[TrackedObject],
        is_init_cond_frame: bool,
        point_inputs: dict | None,
        mask_inputs: torch.Tensor | None,
        reverse: bool,
        run_mem_encoder: bool,
        prev_logits: torch.Tensor | None = None,
    ) -> tuple[list[FrameOutput], torch.Tensor]:
        """One model step for a batch of objects; returns compact per-object outputs and masks."""
        feats, pos, sizes = self._features(state, frame_idx)
        batch = len(objects)
        pos_enc = state.maskmem_pos_enc
        bank = MemoryBank(
            cond=StackedOutputs([o.cond for o in objects], pos_enc),
            non_cond=StackedOutputs([o.non_cond for o in objects], pos_enc),
        )
        out = self.model.track_step(
            frame_idx,
            is_init_cond_frame,
            [f.expand(-1, batch, -1) for f in feats],
            [p.expand(-1, batch, -1) for p in pos],
            sizes,
            point_inputs,
            mask_inputs,
            bank,
            state.num_frames,
            reverse,
            run_mem_encoder,
            prev_logits,
            binarize_mask_from_pts=self.binarize_mask_from_pts,
            non_overlap_memory=False,
        )
        pred_masks = out.pred_masks.float()
        if self.fill_hole_area > 0:
            pred_masks = fill_small_holes(pred_masks, self.fill_hole_area)
        memory = out.maskmem_features
        if memory is not None:
            assert out.maskmem_pos_enc is not None  # encoded together with the features
            self._remember_pos_enc(state, out.maskmem_pos_enc)
        stored = pred_masks.to(state.storage_device)
        compact = [
            FrameOutput(
                maskmem_features=None
                if memory is None
                else memory[i : i + 1].to(torch.bfloat16).to(state.storage_device),
                pred_masks=stored[i : i + 1],
                obj_ptr=out.obj_ptr[i : i + 1],
                object_score_logits=out.object_score_logits[i : i + 1],
            )
            for i in range(batch)
        ]
        return compact, pred_masks

    @staticmethod
    def _remember_pos_enc(state: VideoState, pos_enc: torch.Tensor) -> None:
        if state.maskmem_pos_enc is None:
            state.maskmem_pos_enc = pos_enc[:1].clone()

    def _run_prompt(
        self,
        state: VideoState,
        obj: TrackedObject,
        frame_idx: int,
        point_inputs: dict | None,
        mask_inputs: torch.Tensor | None,
    ) -> TrackedFrame:
        """Decode one object's prompts on a frame (no memory encoding yet) and consolidate the frame."""
        is_init = frame_idx not in obj.tracked
        reverse = obj.tracked.get(frame_idx, False)
        is_cond = is_init or self.add_all_frames_to_correct_as_cond
        prev_logits = None
        if point_inputs is not None:
            prev = obj.output_at(frame_idx, is_cond)
            if prev is not None:
                prev_logits = prev.pred_masks.to(state.device).clamp(-_PREV_LOGIT_CLAMP, _PREV_LOGIT_CLAMP)
        (out,), _ = self._run(
            state,
            frame_idx,
            [obj],
            is_init,
            point_inputs,
            mask_inputs,
            reverse,
            run_mem_encoder=False,
            prev_logits=prev_logits,
        )
        obj.pending[is_cond][frame_idx] = out
        return self._consolidated(state, frame_idx, is_cond)

    def _encode_memory(self, state: VideoState, frame_idx: int, outs: list[FrameOutput]) -> None:
        """Memory features for prompted outputs on one frame, as masks from user prompts."""
        feats, _, sizes = self._features(state, frame_idx)
        batch = len(outs)
        size = self.image_size
        pix_feat = to_maps(feats[-1], sizes[-1]).expand(batch, -1, -1, -1)
        low_res = torch.cat([o.pred_masks for o in outs]).to(state.device)
        high_res = upscale_masks(low_res, size, dtype=None)
        scores = torch.cat([o.object_score_logits for o in outs]).to(state.device)
        features, pos_enc = self.model.encode_memory(
            pix_feat,
            high_res.to(pix_feat.dtype),
            scores,
            is_mask_from_pts=True,
            binarize_mask_from_pts=self.binarize_mask_from_pts,
            non_overlap=False,
        )
        self._remember_pos_enc(state, pos_enc)
        for i, out in enumerate(outs):
            out.maskmem_features = features[i : i + 1].to(torch.bfloat16).to(state.storage_device)

    def _track_low_res(self, state: VideoState, frame_idx: int, reverse: bool) -> torch.Tensor:
        """Low-resolution logits (N, 1, h, w) of every object on a frame, tracking where not prompted."""
        objects = list(state.objects.values())
        results: list[torch.Tensor | None] = [None] * len(objects)
        window = self.memory_window()
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, obj in enumerate(objects):
            if frame_idx in obj.cond:
                results[i] = obj.cond[frame_idx].pred_masks.to(state.device)
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
        return torch.cat(results)  # type: ignore[arg-type]  # every slot is set by the groups above

    def _clear_memory_around(self, obj: TrackedObject, frame_idx: int) -> None:
        c = self.model.config
        reach = c.memory_temporal_stride_for_eval * c.num_maskmem
        for t in range(frame_idx - reach, frame_idx + reach + 1):
            obj.non_cond.pop(t, None)

    @staticmethod
    def _clear_prompts(obj: TrackedObject, frame_idx: int) -> None:
        obj.points.pop(frame_idx, None)
        obj.mask_inputs.pop(frame_idx, None)
        obj.pending[True].pop(frame_idx, None)
        obj.pending[False].pop(frame_idx, None)
        out = obj.cond.pop(frame_idx, None)
        if out is not None:  # no longer prompted: the output stays, as a tracked frame's
            obj.non_cond[frame_idx] = out
            obj.tracked.pop(frame_idx, None)

    # ------------------------------------------------------------------ outputs

    def _consolidated(self, state: VideoState, frame_idx: int, is_cond: bool) -> TrackedFrame:
        """Every object's newest mask on a frame at video resolution (absent ones: NO_OBJ_SCORE)."""
        hw = (state.video_height, state.video_width)
        masks = torch.full((len(state.objects), 1, *hw), NO_OBJ_SCORE, dtype=torch.float32, device=state.device)
        scores = torch.full((len(state.objects),), NO_OBJ_SCORE, dtype=torch.float32)
        for i, obj in enumerate(state.objects.values()):
            out = obj.output_at(frame_idx, is_cond)
            if out is not None:
                masks[i : i + 1] = upscale_masks(out.pred_masks.to(state.device), hw, dtype=None)
                scores[i] = out.object_score_logits.float().reshape(-1)[0].cpu()
        if self.non_overlap_masks:
            masks = non_overlapping(masks)
        return TrackedFrame(frame_idx, state.obj_ids, masks, scores)

    def _video_output(self, state: VideoState, frame_idx: int, low_res: torch.Tensor) -> TrackedFrame:
        hw = (state.video_height, state.video_width)
        masks = upscale_masks(low_res, hw)
        if self.non_overlap_masks:
            masks = non_overlapping(masks)
        return TrackedFrame(frame_idx, state.obj_ids, masks, self._frame_scores(state, frame_idx))

    @staticmethod
    def _frame_scores(state: VideoState, frame_idx: int) -> torch.Tensor:
        """(N,) object score logits of every object's output on a just-tracked frame (CPU float)."""
        scores = []
        for obj in state.objects.values():
            out = obj.cond.get(frame_idx) or obj.non_cond.get(frame_idx)
            scores.append(NO_OBJ_SCORE if out is None else float(out.object_score_logits.float().reshape(-1)[0]))
        return torch.tensor(scores, dtype=torch.float32)
