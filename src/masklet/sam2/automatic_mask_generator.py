"""``sam2.automatic_mask_generator`` for masklet: :class:`SAM2AutomaticMaskGenerator` over :class:`masklet.MaskGenerator`."""

from __future__ import annotations

from typing import Any

from ..amg import MaskGenerator
from ..model import Sam2Model


class SAM2AutomaticMaskGenerator(MaskGenerator):
    """The official generator's options, defaults and records (see :class:`masklet.MaskGenerator`).

    ``model`` is what :func:`masklet.sam2.build_sam.build_sam2` returns. Extra keyword arguments
    (e.g. the official ``vos_optimized``) are ignored. As officially, ``min_mask_region_area`` only
    cleans the low-resolution masks (holes and specks, as the predictor's ``max_hole_area`` /
    ``max_sprinkle_area``); :class:`masklet.MaskGenerator` also cleans the full-resolution ones.
    """

    full_resolution_cleanup = False

    def __init__(
        self,
        model: Sam2Model,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        mask_threshold: float = 0.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Any = None,
        min_mask_region_area: float = 0,
        output_mode: str = "binary_mask",
        use_m2m: bool = False,
        multimask_output: bool = True,
        **kwargs: Any,
    ) -> None:
        del kwargs
        super().__init__(
            model,
            points_per_side=points_per_side,
            points_per_batch=points_per_batch,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            stability_score_offset=stability_score_offset,
            mask_threshold=mask_threshold,
            box_nms_thresh=box_nms_thresh,
            crop_n_layers=crop_n_layers,
            crop_nms_thresh=crop_nms_thresh,
            crop_overlap_ratio=crop_overlap_ratio,
            crop_n_points_downscale_factor=crop_n_points_downscale_factor,
            point_grids=point_grids,
            min_mask_region_area=min_mask_region_area,
            output_mode=output_mode,
            use_m2m=use_m2m,
            multimask_output=multimask_output,
        )

    @classmethod
    def from_pretrained(cls, model_id: str, **kwargs: Any) -> SAM2AutomaticMaskGenerator:
        """Build from an official hub id via the local hub cache or a download; kwargs go to both, as officially."""
        from .build_sam import build_sam2_hf

        build = {
            k: kwargs[k] for k in ("device", "mode", "hydra_overrides_extra", "apply_postprocessing") if k in kwargs
        }
        gen = {k: v for k, v in kwargs.items() if k not in build}
        return cls(build_sam2_hf(model_id, **build), **gen)
