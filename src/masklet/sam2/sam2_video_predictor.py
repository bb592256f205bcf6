"""``sam2.sam2_video_predictor`` for masklet: :class:`SAM2VideoPredictor` over :class:`masklet.VideoPredictor`."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

import torch

from ..model import Sam2Model
from ..transforms import preprocess_frame
from ..video.frames import FrameSource
from ..video.predictor import TrackedFrame, VideoPredictor, VideoState


class _ModelFrames:
    """``inference_state["images"]``: the frames as the official loader gives them, (3, S, S) float each, built on access."""

    def __init__(self, frames: FrameSource, size: int, device: torch.device) -> None:
        self._frames, self._size, self._device = frames, size, device

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, index: int) -> torch.Tensor:
        return preprocess_frame(self._frames[index], self._size, self._device, torch.float32)[0]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), 3, self._size, self._size)


@dataclass(eq=False)
class SAM2InferenceState(VideoState):
    """A masklet :class:`VideoState` that also reads like the official ``inference_state`` dict.

    The keys code written for the official predictor reads: ``images``, ``num_frames``,
    ``video_height``, ``video_width``, ``obj_ids``, ``obj_id_to_idx``, ``obj_idx_to_id``, ``device``,
    ``storage_device``, ``offload_video_to_cpu``, ``offload_state_to_cpu``. Read-only: change the
    session through the predictor's methods.
    """

    image_size: int = 1024
    offload_video_to_cpu: bool = False
    offload_state_to_cpu: bool = False

    def _entries(self) -> dict[str, Any]:
        ids = self.obj_ids
        return {
            "images": lambda: _ModelFrames(self.frames, self.image_size, self.device),
            "num_frames": lambda: self.num_frames,
            "video_height": lambda: self.video_height,
            "video_width": lambda: self.video_width,
            "obj_ids": lambda: ids,
            "obj_id_to_idx": lambda: {obj_id: i for i, obj_id in enumerate(ids)},
            "obj_idx_to_id": lambda: dict(enumerate(ids)),
            "device": lambda: self.device,
            "storage_device": lambda: self.storage_device,
            "offload_video_to_cpu": lambda: self.offload_video_to_cpu,
            "offload_state_to_cpu": lambda: self.offload_state_to_cpu,
        }

    def __getitem__(self, key: str) -> Any:
        entries = self._entries()
        if key not in entries:
            raise KeyError(
                f"{key!r}: masklet's inference_state has {', '.join(entries)} (the official internals "
                "such as output_dict_per_obj live in masklet's own session objects)"
            )
        return entries[key]()

    def __contains__(self, key: object) -> bool:
        return key in self._entries()

    def keys(self) -> list[str]:
        return list(self._entries())

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default


class SAM2VideoPredictor(VideoPredictor):
    """The official video predictor's session methods and return shapes.

    ``add_new_points_or_box``, ``add_new_mask``, ``clear_all_prompts_in_frame`` return
    ``(frame_idx, obj_ids, video_res_masks)`` with logits (N, 1, H, W); ``propagate_in_video``
    yields those; ``remove_object`` returns ``(obj_ids, [(frame_idx, video_res_masks), ...])``.
    The session is a :class:`SAM2InferenceState`: masklet's state, also readable as the official dict
    (``inference_state["num_frames"]``, ``["video_height"]``, ``["obj_ids"]``, ``["images"]`` ...). Frames are decoded
    lazily on the CPU, so ``offload_video_to_cpu`` and ``async_loading_frames`` are accepted and
    change nothing; ``offload_state_to_cpu`` keeps memories on the CPU as officially.
    """

    def __init__(
        self,
        model: Sam2Model,
        fill_hole_area: float = 0,
        non_overlap_masks: bool = False,
        clear_non_cond_mem_around_input: bool = False,
        add_all_frames_to_correct_as_cond: bool = False,
        **kwargs: Any,
    ) -> None:
        del kwargs
        super().__init__(
            model,
            fill_hole_area=fill_hole_area,
            non_overlap_masks=non_overlap_masks,
            clear_non_cond_mem_around_input=clear_non_cond_mem_around_input,
            add_all_frames_to_correct_as_cond=add_all_frames_to_correct_as_cond,
            binarize_mask_from_pts=model.config.binarize_mask_from_pts_for_mem_enc,
        )

    @classmethod
    def from_pretrained(cls, model_id: str, **kwargs: Any) -> SAM2VideoPredictor:
        """Build from an official hub id (``facebook/sam2.1-hiera-tiny``) via the local hub cache or a download."""
        from .build_sam import build_sam2_video_predictor_hf

        return build_sam2_video_predictor_hf(model_id, **kwargs)

    def init_state(  # type: ignore[override]  # the official sam2 signature, not masklet's
        self,
        video_path: Any,
        offload_video_to_cpu: bool = False,
        offload_state_to_cpu: bool = False,
        async_loading_frames: bool = False,
    ) -> SAM2InferenceState:
        """Open a video (JPEG folder, video file, or list of frames) for a tracking session."""
        del async_loading_frames  # frames are always decoded lazily
        state = super().init_state(
            video_path, offload_video_to_cpu=offload_video_to_cpu, offload_state_to_cpu=offload_state_to_cpu
        )
        return SAM2InferenceState(
            **{f.name: getattr(state, f.name) for f in fields(state)},
            image_size=self.image_size,
            offload_video_to_cpu=offload_video_to_cpu,
            offload_state_to_cpu=offload_state_to_cpu,
        )

    # The official keyword names (``inference_state``, ``mask``) over masklet's methods.

    def add_new_points_or_box(
        self,
        inference_state: VideoState,
        frame_idx: int,
        obj_id: int,
        points: Any = None,
        labels: Any = None,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
        box: Any = None,
    ) -> TrackedFrame:
        """Clicks and/or a box for one object on one frame: ``(frame_idx, obj_ids, video_res_masks)``."""
        return super().add_new_points_or_box(
            inference_state, frame_idx, obj_id, points, labels, clear_old_points, normalize_coords, box
        )

    def add_new_mask(
        self,
        inference_state: VideoState,
        frame_idx: int,
        obj_id: int,
        mask: Any,
    ) -> TrackedFrame:
        """A binary mask for one object on one frame: ``(frame_idx, obj_ids, video_res_masks)``."""
        return super().add_new_mask(inference_state, frame_idx, obj_id, mask)

    def propagate_in_video(  # type: ignore[override]  # the official sam2 signature, not masklet's
        self,
        inference_state: VideoState,
        start_frame_idx: int | None = None,
        max_frame_num_to_track: int | None = None,
        reverse: bool = False,
    ) -> Iterator[TrackedFrame]:
        """Yield ``(frame_idx, obj_ids, video_res_masks)`` for every tracked frame."""
        return super().propagate_in_video(inference_state, start_frame_idx, max_frame_num_to_track, reverse)

    def clear_all_prompts_in_frame(
        self,
        inference_state: VideoState,
        frame_idx: int,
        obj_id: int,
        need_output: bool = True,
    ) -> TrackedFrame | None:
        """Remove one object's prompts on a frame: ``(frame_idx, obj_ids, video_res_masks)``."""
        return super().clear_all_prompts_in_frame(inference_state, frame_idx, obj_id, need_output)

    def reset_state(self, inference_state: VideoState) -> None:
        """Remove every object, prompt and result of the session."""
        super().reset_state(inference_state)

    def add_new_points(self, *args: Any, **kwargs: Any) -> TrackedFrame:
        """Deprecated official alias of :meth:`add_new_points_or_box`."""
        warnings.warn("add_new_points is deprecated; use add_new_points_or_box", DeprecationWarning, stacklevel=2)
        return self.add_new_points_or_box(*args, **kwargs)

    def remove_object(  # type: ignore[override]  # the official sam2 signature, not masklet's
        self,
        inference_state: VideoState,
        obj_id: int,
        strict: bool = False,
        need_output: bool = True,
    ) -> tuple[list[int], list[tuple[int, torch.Tensor]]]:
        """Forget an object; an unknown id is an error only with ``strict``, as officially."""
        if not strict and obj_id not in inference_state.objects:
            return inference_state.obj_ids, []
        obj_ids, updated = super().remove_object(inference_state, obj_id, need_output=need_output)
        return obj_ids, [(frame.frame_idx, frame.mask_logits) for frame in updated]
