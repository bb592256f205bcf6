"""``ToTensor``, ``Resize`` and ``Normalize`` with torchvision's tensor semantics (test stand-in)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Normalize", "Resize", "ToTensor"]


class ToTensor:
    """PIL image or HWC ndarray -> CHW tensor; uint8 is scaled to [0, 1], other dtypes are kept."""

    def __call__(self, pic: Any) -> torch.Tensor:
        if isinstance(pic, np.ndarray):
            arr = pic
        else:  # PIL image: torchvision scales mode "1" to 0/255 before dividing
            arr = np.array(pic, copy=True)
            if arr.dtype == np.bool_:
                arr = arr.astype(np.uint8) * 255
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3:
            raise TypeError(f"pic should be 2 or 3 dimensional, got {arr.ndim} dimensions")
        img = torch.from_numpy(np.ascontiguousarray(arr.transpose((2, 0, 1)))).contiguous()
        if img.dtype == torch.uint8:
            return img.to(dtype=torch.get_default_dtype()).div(255)
        return img

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}()"


def _output_size(size: list[int], h: int, w: int) -> list[int]:
    """torchvision's rule: [h, w] is used as is; a single int sets the shorter edge."""
    if len(size) == 2:
        return [size[0], size[1]]
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size[0], int(size[0] * long / short)
    return [new_long, new_short] if w <= h else [new_short, new_long]


class Resize(nn.Module):
    """Tensor resize: bilinear, ``antialias=True``, ``align_corners=False`` (torchvision defaults)."""

    def __init__(self, size: int | Sequence[int], antialias: bool = True) -> None:
        super().__init__()
        self.size: list[int] = [int(size)] if isinstance(size, int) else [int(s) for s in size]
        if len(self.size) not in (1, 2):
            raise ValueError("size must be an int or a sequence of one or two ints")
        self.antialias = antialias

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2], img.shape[-1]
        out_hw = _output_size(self.size, h, w)
        lead = img.shape[:-2]
        x = img.reshape(-1, 1, h, w) if img.dim() != 4 else img
        in_dtype = x.dtype
        if not x.is_floating_point():
            x = x.to(torch.float32)
        y = F.interpolate(x, size=out_hw, mode="bilinear", align_corners=False, antialias=self.antialias)
        if not torch.is_floating_point(img):  # torchvision rounds integer images back
            y = y.round().clamp(0, 255).to(in_dtype)
        if img.dim() != 4:
            y = y.reshape(lead + (out_hw[0], out_hw[1]))
        return y


class Normalize(nn.Module):
    """(x - mean) / std per channel on (..., C, H, W) float tensors; never in place."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.mean: list[float] = [float(m) for m in mean]
        self.std: list[float] = [float(s) for s in std]

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        if bool((std == 0).any()):
            raise ValueError("std evaluated to zero, leading to division by zero.")
        return (tensor - mean) / std
