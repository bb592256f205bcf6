"""``sam2.sam2_image_predictor`` for masklet: :class:`SAM2ImagePredictor` over :class:`masklet.ImagePredictor`."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..image import ImagePredictor
from ..model import Sam2Model

_PREDICTOR_KWARGS = ("mask_threshold", "max_hole_area", "max_sprinkle_area")


class SAM2ImagePredictor(ImagePredictor):
    """The official image predictor's interface; masks come back as float32 0/1 arrays, as the official's.

    ``sam_model`` is what :func:`masklet.sam2.build_sam.build_sam2` returns (a masklet
    :class:`~masklet.Sam2Model`); it is also :attr:`model`. Extra keyword arguments are ignored.
    """

    def __init__(
        self,
        sam_model: Sam2Model,
        mask_threshold: float = 0.0,
        max_hole_area: float = 0.0,
        max_sprinkle_area: float = 0.0,
        **kwargs: Any,
    ) -> None:
        del kwargs
        super().__init__(
            sam_model, mask_threshold=mask_threshold, max_hole_area=max_hole_area, max_sprinkle_area=max_sprinkle_area
        )

    @classmethod
    def from_pretrained(cls, model_id: str, **kwargs: Any) -> SAM2ImagePredictor:
        """Build from an official hub id (``facebook/sam2.1-hiera-tiny``) via the local hub cache or a download."""
        from .build_sam import build_sam2_hf

        own = {k: kwargs.pop(k) for k in _PREDICTOR_KWARGS if k in kwargs}
        return cls(build_sam2_hf(model_id, **kwargs), **own)

    @property
    def _is_image_set(self) -> bool:
        return self._embeddings is not None

    @property
    def _orig_hw(self) -> list[tuple[int, int]]:
        return list(self._require_image().orig_hw)

    def predict(
        self,
        point_coords: Any = None,
        point_labels: Any = None,
        box: Any = None,
        mask_input: Any = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks (C, H, W) or (B, C, H, W), IoU scores and low-res logits, as the official ``predict``."""
        masks, ious, low = super().predict(
            point_coords, point_labels, box, mask_input, multimask_output, return_logits, normalize_coords
        )
        return masks.astype(np.float32), ious, low

    def predict_batch(
        self,
        point_coords_batch: Any = None,
        point_labels_batch: Any = None,
        box_batch: Any = None,
        mask_input_batch: Any = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """Per-image lists of masks, IoU scores and low-res logits, as the official ``predict_batch``."""
        masks, ious, low = super().predict_batch(
            point_coords_batch,
            point_labels_batch,
            box_batch,
            mask_input_batch,
            multimask_output,
            return_logits,
            normalize_coords,
        )
        return [m.astype(np.float32) for m in masks], ious, low
