"""The options of automatic mask generation: their checks, and the progress reporter."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..checks import check_sam2_model, is_int, is_real
from ..errors import InvalidInputError
from .grids import build_all_layer_point_grids, check_point_grids

__all__ = ["OUTPUT_MODES", "Progress", "check_options"]

#: Accepted values of ``output_mode``.
OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


def check_options(
    model: Any,
    points_per_side: Any,
    points_per_batch: Any,
    pred_iou_thresh: Any,
    stability_score_thresh: Any,
    stability_score_offset: Any,
    mask_threshold: Any,
    box_nms_thresh: Any,
    crop_n_layers: Any,
    crop_nms_thresh: Any,
    crop_overlap_ratio: Any,
    crop_n_points_downscale_factor: Any,
    point_grids: Any,
    min_mask_region_area: Any,
    output_mode: Any,
    use_m2m: Any,
    multimask_output: Any,
    progress: Any,
    mask_nms_thresh: Any,
) -> list[np.ndarray]:
    """Check every :class:`~masklet.amg.MaskGenerator` option (InvalidInputError naming the first bad
    one) and return the point grid of each crop layer."""
    check_sam2_model(model)
    _check_int(crop_n_layers, "crop_n_layers", 0)
    _check_int(crop_n_points_downscale_factor, "crop_n_points_downscale_factor", 1)
    _check_int(points_per_batch, "points_per_batch", 1)
    if (points_per_side is None) == (point_grids is None):
        raise InvalidInputError(
            "points_per_side, point_grids: give exactly one of them (points_per_side="
            f"{points_per_side!r}, point_grids={'None' if point_grids is None else 'given'}); "
            "to use point_grids, pass points_per_side=None"
        )
    if points_per_side is not None:
        _check_int(points_per_side, "points_per_side", None)
        if points_per_side < 1:
            raise InvalidInputError(
                f"points_per_side: expected an int >= 1, got {points_per_side!r} (a grid of zero points)"
            )
        for i in range(crop_n_layers + 1):
            if int(points_per_side / (crop_n_points_downscale_factor**i)) == 0:
                raise InvalidInputError(
                    f"crop_n_layers={crop_n_layers}, crop_n_points_downscale_factor="
                    f"{crop_n_points_downscale_factor}: crop layer {i} gets "
                    f"int({points_per_side} / {crop_n_points_downscale_factor}**{i}) = 0 points per side; "
                    "use fewer crop layers, a smaller factor or more points_per_side"
                )
        grids = build_all_layer_point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor)
    else:
        grids = check_point_grids(point_grids, crop_n_layers)
    for name, value in (
        ("pred_iou_thresh", pred_iou_thresh),
        ("stability_score_thresh", stability_score_thresh),
        ("box_nms_thresh", box_nms_thresh),
        ("crop_nms_thresh", crop_nms_thresh),
        ("crop_overlap_ratio", crop_overlap_ratio),
    ):
        if not is_real(value) or not 0.0 <= value <= 1.0:
            raise InvalidInputError(f"{name}: expected a number in [0, 1], got {value!r}")
    for name, value in (("stability_score_offset", stability_score_offset), ("mask_threshold", mask_threshold)):
        if not is_real(value) or not math.isfinite(value):
            raise InvalidInputError(f"{name}: expected a finite number, got {value!r}")
    if not is_real(min_mask_region_area) or not min_mask_region_area >= 0 or math.isinf(min_mask_region_area):
        raise InvalidInputError(f"min_mask_region_area: expected a number >= 0, got {min_mask_region_area!r}")
    if not is_real(mask_nms_thresh) or not 0.0 <= mask_nms_thresh <= 1.0:
        raise InvalidInputError(f"mask_nms_thresh: expected a number in [0, 1] (0: off), got {mask_nms_thresh!r}")
    if output_mode not in OUTPUT_MODES:
        raise InvalidInputError(f"output_mode: expected one of {', '.join(OUTPUT_MODES)}, got {output_mode!r}")
    for name, value in (("use_m2m", use_m2m), ("multimask_output", multimask_output)):
        if not isinstance(value, (bool, np.bool_)):
            raise InvalidInputError(f"{name}: expected True or False, got {value!r}")
    if not (isinstance(progress, (bool, np.bool_)) or callable(progress)):
        raise InvalidInputError(f"progress: expected True, False or a callable progress(done, total), got {progress!r}")
    if progress is True:
        try:
            import tqdm  # noqa: F401
        except ImportError:
            raise InvalidInputError(
                "progress=True draws a tqdm bar, but tqdm is not installed (pip install tqdm); "
                "or pass a callable progress(done, total)"
            ) from None
    return grids


class Progress:
    """Prompts decoded so far, reported to a callback or a tqdm bar."""

    def __init__(self, progress: bool | Callable[[int, int], Any], total: int) -> None:
        self.total, self.done = total, 0
        self.callback: Callable[[int, int], Any] | None = None
        self.bar: Any = None
        if progress is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="prompt", desc="masklet amg")
        elif callable(progress):
            self.callback = progress

    def advance(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        if self.callback is not None:
            self.callback(self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _check_int(value: Any, name: str, minimum: int | None) -> None:
    if not is_int(value):
        raise InvalidInputError(f"{name}: expected an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise InvalidInputError(f"{name}: expected an int >= {minimum}, got {value!r}")
