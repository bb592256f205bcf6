"""Prompts: the one place that validates and transforms points, labels, boxes and mask inputs.

Shared by :class:`~masklet.ImagePredictor`, :class:`~masklet.VideoPredictor` (and their remote
twins) and training, so a bad prompt fails the same way everywhere. Coordinates come in image
pixels (or in [0, 1] with ``normalize_coords=False``) and leave in the model's input frame; a box
becomes two corner points labelled :data:`BOX_LABELS`, placed before the clicks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import InvalidInputError
from .model.prompt_encoder import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, NEGATIVE, PAD_LABEL, POSITIVE
from .transforms import to_model_coords

__all__ = [
    "ACCEPTED_LABELS",
    "BOX_BOTTOM_RIGHT",
    "BOX_LABELS",
    "BOX_TOP_LEFT",
    "NEGATIVE",
    "PAD_LABEL",
    "POSITIVE",
    "Prompts",
    "as_float_tensor",
    "as_label_tensor",
    "box_corner_labels",
    "boxes_to_corners",
    "image_prompts",
    "video_prompt",
]

#: Labels of a box's two corner points (top-left, bottom-right), as the prompt encoder reads them.
BOX_LABELS = (BOX_TOP_LEFT, BOX_BOTTOM_RIGHT)
#: Every label the prompt encoder understands (padding, negative, positive, box corners).
ACCEPTED_LABELS = (PAD_LABEL, NEGATIVE, POSITIVE, *BOX_LABELS)


@dataclass
class Prompts:
    """Validated prompts of B objects in the model frame: points (B, N, 2) float32 with labels
    (B, N) int32, or None; mask logits (B, 1, 4h, 4w), or None."""

    points: tuple[torch.Tensor, torch.Tensor] | None
    mask: torch.Tensor | None

    def to(self, device: torch.device) -> Prompts:
        """The same prompts on ``device``."""
        points = None if self.points is None else (self.points[0].to(device), self.points[1].to(device))
        return Prompts(points, None if self.mask is None else self.mask.to(device))


def as_float_tensor(value: Any, name: str) -> torch.Tensor:
    """``value`` (array-like or tensor) as a finite float32 CPU tensor; InvalidInputError naming ``name``."""
    try:
        tensor = torch.as_tensor(
            np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float32)
        )
    except (TypeError, ValueError) as err:
        raise InvalidInputError(f"{name}: expected an array of numbers, got {type(value).__name__} ({err})") from None
    if not torch.isfinite(tensor).all():
        raise InvalidInputError(f"{name}: contains NaN or infinite values")
    return tensor


def as_label_tensor(value: Any) -> torch.Tensor:
    """Point labels as an int32 tensor; every value must be one of :data:`ACCEPTED_LABELS`."""
    labels = as_float_tensor(value, "point_labels")
    if (
        not (labels == labels.round()).all()
        or not torch.isin(labels, torch.tensor(ACCEPTED_LABELS, dtype=labels.dtype)).all()
    ):
        found = sorted(set(labels.flatten().tolist()) - set(ACCEPTED_LABELS))
        raise InvalidInputError(
            f"point_labels: values {found} are not accepted; use 1 (positive), 0 (negative), -1 (padding), "
            "2 / 3 (box top-left / bottom-right)"
        )
    return labels.to(torch.int32)


def box_corner_labels(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, 2) int32 labels of n boxes' corner points."""
    return torch.tensor([BOX_LABELS], dtype=torch.int32, device=device).expand(n, 2)


def boxes_to_corners(boxes: torch.Tensor) -> torch.Tensor:
    """XYXY boxes (B, 4) -> corner points (B, 2, 2): top-left, bottom-right."""
    return boxes.reshape(-1, 2, 2)


def _check_boxes(box: Any) -> torch.Tensor:
    """``box`` as (B, 4) XYXY with x0 <= x1 and y0 <= y1."""
    boxes = as_float_tensor(box, "box")
    if boxes.ndim == 1:
        boxes = boxes.unsqueeze(0)
    if boxes.ndim != 2 or boxes.shape[-1] != 4 or boxes.shape[0] == 0:
        raise InvalidInputError(f"box: expected shape (4,) or (B, 4) in XYXY order, got {tuple(np.shape(box))}")
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise InvalidInputError(
            f"box: box {i} = {boxes[i].tolist()} has x1 < x0 or y1 < y0; boxes are [x0, y0, x1, y1] with x0 <= x1, y0 <= y1"
        )
    return boxes


def _check_mask_input(mask_input: Any, side: int, objects: int | None) -> torch.Tensor:
    """``mask_input`` as (B, 1, side, side) low-resolution logits, one per object."""
    mask = as_float_tensor(mask_input, "mask_input")
    if mask.ndim == 2:
        mask = mask[None, None]
    elif mask.ndim == 3:
        mask = mask.unsqueeze(1)  # (B, h, w) -> (B, 1, h, w)
    if mask.ndim != 4 or mask.shape[1:] != (1, side, side):
        raise InvalidInputError(
            f"mask_input: expected low-resolution logits of shape (1, {side}, {side}) or "
            f"(B, 1, {side}, {side}) (the low_res output of a previous predict), got {tuple(np.shape(mask_input))}"
        )
    objects = mask.shape[0] if objects is None else objects
    if mask.shape[0] != objects:
        raise InvalidInputError(f"mask_input: {mask.shape[0]} masks for {objects} objects; give one mask per object")
    return mask


def image_prompts(
    point_coords: Any,
    point_labels: Any,
    box: Any,
    mask_input: Any,
    orig_hw: tuple[int, int],
    image_size: int,
    mask_side: int,
    normalize_coords: bool = True,
) -> Prompts:
    """Prompts of an image predictor call (CPU tensors): (N, 2) or (B, N, 2) points with labels,
    (4,) or (B, 4) boxes, (1 | B, 1, mask_side, mask_side) mask logits; box corners come first."""
    coords = labels = None
    if point_coords is not None or point_labels is not None:
        if point_coords is None or point_labels is None:
            raise InvalidInputError("point_coords and point_labels must be given together")
        coords = as_float_tensor(point_coords, "point_coords")
        labels = as_label_tensor(point_labels)
        if coords.ndim not in (2, 3) or coords.shape[-1] != 2:
            raise InvalidInputError(f"point_coords: expected shape (N, 2) or (B, N, 2), got {tuple(coords.shape)}")
        if coords.ndim == 2:
            coords = coords.unsqueeze(0)
        if labels.ndim == 1:
            labels = labels.unsqueeze(0)
        if labels.ndim != 2 or labels.shape != coords.shape[:2]:
            raise InvalidInputError(
                f"point_labels: expected shape {tuple(coords.shape[:2])} to match point_coords, got "
                f"{tuple(np.shape(point_labels))}"
            )
        if coords.shape[1] == 0:
            raise InvalidInputError("point_coords: expected at least one point, got zero")
        coords = to_model_coords(coords, orig_hw, image_size, normalize_coords)
    if box is not None:
        boxes = _check_boxes(box)
        corners = to_model_coords(boxes_to_corners(boxes), orig_hw, image_size, normalize_coords)
        corner_labels = box_corner_labels(corners.shape[0])
        if coords is not None and labels is not None:
            if coords.shape[0] != corners.shape[0]:
                raise InvalidInputError(
                    f"box and point_coords describe different numbers of objects ({corners.shape[0]} boxes, "
                    f"{coords.shape[0]} point sets); give one point set per box as (B, N, 2)"
                )
            coords, labels = torch.cat((corners, coords), dim=1), torch.cat((corner_labels, labels), dim=1)
        else:
            coords, labels = corners, corner_labels
    mask = None
    if mask_input is not None:
        mask = _check_mask_input(mask_input, mask_side, None if coords is None else coords.shape[0])
    points = None if coords is None or labels is None else (coords, labels)
    return Prompts(points, mask)


def video_prompt(
    points: Any,
    labels: Any,
    box: Any,
    clear_old_points: bool,
    orig_hw: tuple[int, int],
    image_size: int,
    normalize_coords: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clicks and box of one object on one video frame: (1, P, 2) model-frame coordinates and
    (1, P) int32 labels (CPU), the box corners first."""
    if (points is None) != (labels is None):
        raise InvalidInputError("points and labels must be given together")
    if points is None and box is None:
        raise InvalidInputError("give points with labels, a box, or both")
    if box is not None and not clear_old_points:
        raise InvalidInputError("a box must come first: use clear_old_points=True when giving a box")
    coords = torch.zeros(1, 0, 2)
    point_labels = torch.zeros(1, 0, dtype=torch.int32)
    if points is not None:
        coords = as_float_tensor(points, "points")
        point_labels = as_label_tensor(labels)
        if coords.ndim == 2:
            coords = coords[None]
        if point_labels.ndim == 1:
            point_labels = point_labels[None]
        if coords.ndim != 3 or coords.shape[0] != 1 or coords.shape[-1] != 2 or coords.shape[1] == 0:
            raise InvalidInputError(f"points: expected shape (P, 2) with P >= 1, got {tuple(np.shape(points))}")
        if point_labels.shape != coords.shape[:2]:
            raise InvalidInputError(
                f"labels: expected shape ({coords.shape[1]},) to match points, got {tuple(np.shape(labels))}"
            )
    if box is not None:
        corners = as_float_tensor(box, "box")
        if corners.numel() != 4:
            raise InvalidInputError(f"box: expected 4 numbers (x0, y0, x1, y1), got shape {tuple(np.shape(box))}")
        coords = torch.cat([boxes_to_corners(corners.reshape(1, 4)), coords], dim=1)
        point_labels = torch.cat([box_corner_labels(1), point_labels], dim=1)
    return to_model_coords(coords, orig_hw, image_size, normalize_coords), point_labels
