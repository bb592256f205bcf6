"""Box ops used by ``sam2.automatic_mask_generator`` (test stand-in)."""

from __future__ import annotations

from .boxes import batched_nms, box_area, box_iou, nms

__all__ = ["batched_nms", "box_area", "box_iou", "nms"]
