"""Remove near-duplicate automatic masks by non-maximum suppression on mask IoU.

Box NMS (the official de-duplication) misses copies of one shape whose boxes a few stray pixels
stretch apart; comparing the masks themselves catches them. Opt-in: the default keeps the
official results.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .errors import InvalidInputError
from .masks import decode_rle


def _dense(segmentation: Any) -> np.ndarray:
    """An (H, W) bool mask from any MaskGenerator output mode."""
    if isinstance(segmentation, np.ndarray):
        return segmentation.astype(bool, copy=False)
    if isinstance(segmentation, dict) and "counts" in segmentation:
        return decode_rle(segmentation)[0].numpy().astype(bool, copy=False)
    raise InvalidInputError(f"segmentation: expected an (H, W) array or an RLE dict, got {type(segmentation).__name__}")


def mask_iou_nms(records: list[dict[str, Any]], iou_thresh: float) -> list[dict[str, Any]]:
    """Keep, of every group of masks whose pairwise mask IoU exceeds ``iou_thresh``, the one with
    the highest ``predicted_iou``; the kept records stay in their given order."""
    if isinstance(iou_thresh, bool) or not isinstance(iou_thresh, (int, float)) or not 0.0 < iou_thresh <= 1.0:
        raise InvalidInputError(f"iou_thresh: expected a number in (0, 1], got {iou_thresh!r}")
    if len(records) < 2:
        return list(records)
    masks = [torch.from_numpy(np.ascontiguousarray(_dense(r["segmentation"]))) for r in records]
    areas = [int(m.sum()) for m in masks]
    boxes = []  # inclusive XYXY of the mask pixels, or None for an empty mask
    for m in masks:
        ys, xs = torch.nonzero(m, as_tuple=True)
        boxes.append(None if len(xs) == 0 else (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())))
    order = sorted(range(len(records)), key=lambda i: -float(records[i]["predicted_iou"]))
    kept: list[int] = []
    for i in order:
        duplicate = False
        for j in kept:
            a, b = boxes[i], boxes[j]
            if a is None or b is None:
                continue
            x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
            if x0 > x1 or y0 > y1:
                continue  # disjoint boxes: no overlap
            inter = int((masks[i][y0 : y1 + 1, x0 : x1 + 1] & masks[j][y0 : y1 + 1, x0 : x1 + 1]).sum())
            union = areas[i] + areas[j] - inter
            if union > 0 and inter / union > iou_thresh:
                duplicate = True
                break
        if not duplicate:
            kept.append(i)
    keep = set(kept)
    return [r for i, r in enumerate(records) if i in keep]
