"""Constants, the Scene and Clip results and the argument checks every generator shares."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..checks import is_int
from ..errors import InvalidInputError
from ..masks import masks_to_boxes

SHAPE_KINDS = ("ellipse", "rectangle", "triangle", "polygon", "star", "ring", "crescent", "stroke")
TEXTURE_KINDS = ("flat", "gradient", "stripes", "checker", "noise")
BACKGROUND_KINDS = ("flat", "gradient", "noise", "stripes", "checker", "clutter")
MULTICOLOR_TEXTURE_KINDS = ("patches", "bands")  # 3-5 distinct colours in one shape (opt-in)

MIN_SIZE = 32  # smallest image side accepted
MAX_SIZE = 8192  # largest image side accepted
MAX_OBJECTS = 255  # DAVIS palette PNGs hold ids 1..255

_SOLID_KINDS = ("ellipse", "rectangle", "triangle", "polygon", "star")  # contain their centre
_SCENE_SIZE = (0.08, 0.40)  # object extent as a fraction of the shorter image side
_CLIP_SIZE = (0.10, 0.35)
_CROSS_SIZE = (0.12, 0.22)
_TWO_PI = 2.0 * math.pi
_STYLE_STREAM = 0x5C0105  # tags the style generator's seed: independent of the geometry's

FloatArray = np.ndarray
Field = Callable[[FloatArray, FloatArray], FloatArray]


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Scene:
    """One image with the exact visible mask of each instance (drawing order = list order)."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    masks: np.ndarray  # (N, H, W) bool, disjoint
    kinds: tuple[str, ...]  # shape kind of each instance (SHAPE_KINDS)
    textures: tuple[str, ...]  # texture kind of each instance (TEXTURE_KINDS)
    colors: np.ndarray  # (N, 3) uint8 base colour of each instance
    background: str  # background kind (BACKGROUND_KINDS)
    seed: int
    grayscale: bool = False  # drawn in greys only (the three channels are equal)

    @property
    def boxes(self) -> np.ndarray:
        """(N, 4) float32 XYXY boxes of the masks, inclusive pixel bounds (as SAM2's)."""
        return _mask_boxes(self.masks)


@dataclass(frozen=True, eq=False)
class Clip:
    """A short video with per-frame visible masks of objects whose identity is fixed."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    masks: np.ndarray  # (T, N, H, W) bool; masks[t, n] all False when object n is unseen at t
    object_ids: np.ndarray  # (N,) int64, 1..N (DAVIS ids)
    amodal_areas: np.ndarray  # (T, N) int64 in-image pixels of each object ignoring occlusion
    kinds: tuple[str, ...]
    textures: tuple[str, ...]
    motions: tuple[str, ...]  # "roam", "enter", "leave" or "cross" per object
    background: str
    seed: int
    grayscale: bool = False

    @property
    def boxes(self) -> np.ndarray:
        """(T, N, 4) float32 XYXY boxes (inclusive bounds; zeros where the mask is empty)."""
        t, n, h, w = self.masks.shape
        return _mask_boxes(self.masks.reshape(t * n, h, w)).reshape(t, n, 4)


def _mask_boxes(masks: np.ndarray) -> np.ndarray:
    """XYXY inclusive boxes of (N, H, W) masks as float32; zeros for empty masks."""
    return (
        masks_to_boxes(torch.from_numpy(np.ascontiguousarray(masks))).numpy().astype(np.float32).reshape(len(masks), 4)
    )


def min_visible_area(height: int, width: int) -> int:
    """Fewest visible pixels an instance needs (0.4% of the image, at least 40).

    Smaller slivers are drawn as clutter but carry no mask: at SAM2's quarter-resolution mask
    output they cannot be segmented to a meaningful IoU, and would dominate a mean IoU.
    """
    return max(40, math.ceil(0.004 * height * width))


# ---------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------


def _check_seed(seed: object) -> int:
    """Validate a seed: a non-negative int."""
    if not is_int(seed) or int(seed) < 0:
        raise InvalidInputError(f"seed: expected a non-negative int, got {seed!r}")
    return int(seed)


def _check_size(size: object) -> tuple[int, int]:
    """Validate ``size`` (int or (height, width)) and return (height, width)."""
    hw = (size, size) if is_int(size) else size
    if (
        not isinstance(hw, (tuple, list))
        or len(hw) != 2
        or not all(is_int(s) and MIN_SIZE <= int(s) <= MAX_SIZE for s in hw)
    ):
        raise InvalidInputError(
            f"size: expected an int or (height, width) of ints in [{MIN_SIZE}, {MAX_SIZE}], got {size!r}"
        )
    return int(hw[0]), int(hw[1])


def _check_range(value: object, name: str, low: int, high: int) -> tuple[int, int]:
    """Validate an inclusive (lo, hi) int range with low <= lo <= hi <= high."""
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(is_int(v) for v in value)
        or not low <= int(value[0]) <= int(value[1]) <= high
    ):
        raise InvalidInputError(f"{name}: expected (lo, hi) ints with {low} <= lo <= hi <= {high}, got {value!r}")
    return int(value[0]), int(value[1])


def _check_count(value: object, name: str, low: int = 1) -> int:
    """Validate an int >= low."""
    if not is_int(value) or int(value) < low:
        raise InvalidInputError(f"{name}: expected an int >= {low}, got {value!r}")
    return int(value)
