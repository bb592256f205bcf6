"""Point grids and crop boxes of automatic mask generation (the values of the official ``sam2.utils.amg``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import product
from typing import Any

import numpy as np
import torch

from ..errors import InvalidInputError

__all__ = [
    "build_all_layer_point_grids",
    "build_point_grid",
    "check_point_grids",
    "generate_crop_boxes",
    "near_crop_edge",
]

#: Distance (in pixels) under which a box edge counts as touching a crop or image edge.
EDGE_TOLERANCE = 20.0


def build_point_grid(n_per_side: int) -> np.ndarray:
    """(n*n, 2) points evenly spaced in [0, 1]^2, x fastest: the centres of an n x n grid."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One grid per crop layer, with ``n_per_side / scale_per_layer**i`` points per side in layer i."""
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """XYXY crop boxes and their layer: the whole image, then (2**i)**2 overlapping crops in layer i."""
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    boxes, layers = [[0, 0, im_w, im_h]], [0]

    def crop_len(orig_len: int, n_crops: int, overlap: int) -> int:
        return math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops)

    for i_layer in range(n_layers):
        n_crops_per_side = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n_crops_per_side))
        crop_w = crop_len(im_w, n_crops_per_side, overlap)
        crop_h = crop_len(im_h, n_crops_per_side, overlap)
        x0s = [int((crop_w - overlap) * i) for i in range(n_crops_per_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(n_crops_per_side)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(i_layer + 1)
    return boxes, layers


def near_crop_edge(boxes: torch.Tensor, crop_box: Sequence[int], orig_box: Sequence[int]) -> torch.Tensor:
    """(n,) bool: boxes (XYXY, crop frame) touching the crop's edge where that edge is not the image's."""
    x0, y0 = crop_box[0], crop_box[1]
    crop_t = torch.as_tensor(crop_box, dtype=torch.float32, device=boxes.device)
    orig_t = torch.as_tensor(orig_box, dtype=torch.float32, device=boxes.device)
    shifted = (boxes + torch.tensor([x0, y0, x0, y0], device=boxes.device)).float()
    near_crop = torch.isclose(shifted, crop_t[None], atol=EDGE_TOLERANCE, rtol=0)
    near_image = torch.isclose(shifted, orig_t[None], atol=EDGE_TOLERANCE, rtol=0)
    return (near_crop & ~near_image).any(1)


def check_point_grids(point_grids: Any, crop_n_layers: int) -> list[np.ndarray]:
    """``point_grids`` as float64 (N, 2) arrays in [0, 1], one per crop layer; InvalidInputError otherwise."""
    if isinstance(point_grids, (np.ndarray, torch.Tensor)) or not isinstance(point_grids, Sequence):
        raise InvalidInputError(
            f"point_grids: expected a list of (N, 2) arrays (one per crop layer), got {type(point_grids).__name__}"
        )
    if len(point_grids) < crop_n_layers + 1:
        raise InvalidInputError(
            f"point_grids: crop_n_layers={crop_n_layers} needs {crop_n_layers + 1} grids (one per crop layer), "
            f"got {len(point_grids)}"
        )
    grids = []
    for i, grid in enumerate(point_grids):
        try:
            arr = np.asarray(grid.detach().cpu() if isinstance(grid, torch.Tensor) else grid, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"point_grids[{i}]: expected an (N, 2) array of numbers, got {type(grid).__name__}"
            ) from None
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise InvalidInputError(f"point_grids[{i}]: expected shape (N, 2) of normalised (x, y), got {arr.shape}")
        if arr.shape[0] == 0:
            raise InvalidInputError(f"point_grids[{i}]: a grid of zero points; give at least one point")
        if not np.isfinite(arr).all() or (arr < 0).any() or (arr > 1).any():
            raise InvalidInputError(f"point_grids[{i}]: points are normalised to [0, 1]; got values outside")
        grids.append(arr)
    return grids
