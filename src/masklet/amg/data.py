"""Per-mask data of automatic mask generation: one container, filtered and concatenated as a whole."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["MaskData"]


@dataclass(frozen=True)
class MaskData:
    """Tensors of n masks, row i of every field describing mask i.

    ``filter`` and ``cat`` act on every field at once, so the fields cannot fall out of step."""

    logits: torch.Tensor  # (n, h, w) float32 low-resolution logits of the mask, in its crop
    iou: torch.Tensor  # (n,) predicted IoU
    stability: torch.Tensor  # (n,) stability score
    boxes: torch.Tensor  # (n, 4) int64 XYXY, inclusive pixel bounds (crop frame until moved)
    points: torch.Tensor  # (n, 2) float32 prompt point (same frame as boxes)
    crop_index: torch.Tensor  # (n,) int64 index of the crop the mask came from

    def __post_init__(self) -> None:
        sizes = {f.name: getattr(self, f.name).shape[0] for f in dataclasses.fields(self)}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"MaskData: fields of different lengths {sizes}")

    def __len__(self) -> int:
        return int(self.iou.shape[0])

    def filter(self, keep: torch.Tensor) -> MaskData:
        """The masks selected by ``keep``: a bool mask (n,) or indices (in that order)."""
        return MaskData(**{f.name: getattr(self, f.name)[keep] for f in dataclasses.fields(self)})

    def replace(self, **fields: torch.Tensor) -> MaskData:
        """A copy with some fields replaced (same length)."""
        return dataclasses.replace(self, **fields)

    def shifted(self, x0: int, y0: int) -> MaskData:
        """Boxes and points moved by (x0, y0): from a crop's frame to the image's."""
        offset = torch.tensor([x0, y0, x0, y0], device=self.boxes.device)
        return self.replace(boxes=self.boxes + offset, points=self.points + offset[:2])

    @staticmethod
    def cat(parts: Sequence[MaskData]) -> MaskData:
        """The masks of every part, in order (at least one part)."""
        if not parts:
            raise ValueError("MaskData.cat: no parts")
        names = [f.name for f in dataclasses.fields(MaskData)]
        return MaskData(**{name: torch.cat([getattr(p, name) for p in parts]) for name in names})
