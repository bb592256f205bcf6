"""Readable overlays: a contrasting outline around each mask, its label on it, and a legend.

Builds on :func:`masklet.io.overlay_masks` (colour blend + coloured edge) and adds what a person
needs to tell the masks apart: a dark or light ring outside each edge (whichever contrasts with
the mask colour), the label drawn at a point inside the mask, and a legend in the top-left corner.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import InvalidInputError
from .io import overlay_masks, palette

_BLACK = (0, 0, 0)
_WHITE = (255, 255, 255)


def _contrast(color: Sequence[int]) -> tuple[int, int, int]:
    """Black for light colours, white for dark ones (by Rec. 601 luma)."""
    r, g, b = (int(c) for c in color)
    return _BLACK if 0.299 * r + 0.587 * g + 0.114 * b > 128 else _WHITE


def _ring(mask: np.ndarray) -> np.ndarray:
    """Background pixels 4-connected to the mask: a one-pixel ring just outside its edge."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown & ~mask


def _anchor(mask: np.ndarray) -> tuple[int, int] | None:
    """A pixel (x, y) well inside the mask to put its label on: the one farthest from the background."""
    if not mask.any():
        return None
    from scipy.ndimage import distance_transform_edt

    dist = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def annotate_masks(
    image: np.ndarray,
    masks: np.ndarray,
    labels: Sequence[str],
    colors: Sequence[Sequence[int]] | np.ndarray | None = None,
    alpha: float = 0.5,
    legend: bool = True,
) -> np.ndarray:
    """(H, W, 3) uint8: ``image`` with the (N, H, W) bool ``masks`` blended in, each outlined in a
    contrasting colour and tagged with its label, plus a legend of labels and colours."""
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.dtype != bool:
        raise InvalidInputError(f"masks: expected an (N, H, W) bool array, got {masks.dtype} {masks.shape}")
    if len(labels) != masks.shape[0]:
        raise InvalidInputError(f"labels: expected one label per mask ({masks.shape[0]}), got {len(labels)}")
    rgb = palette(masks.shape[0]) if colors is None else np.asarray(colors, dtype=np.uint8)
    out = overlay_masks(image, masks, alpha=alpha, colors=rgb)
    for mask, color in zip(masks, rgb):
        out[_ring(mask)] = _contrast(color)
    picture = Image.fromarray(out)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    for mask, label, color in zip(masks, labels, rgb):
        anchor = _anchor(mask)
        if anchor is not None:
            draw.text(
                anchor,
                str(label),
                fill=tuple(int(c) for c in color),
                font=font,
                anchor="mm",
                stroke_width=2,
                stroke_fill=_contrast(color),
            )
    if legend and len(labels):
        line = 14
        width = 26 + max(int(draw.textlength(str(label), font=font)) for label in labels)
        draw.rectangle([2, 2, 2 + width + 6, 2 + line * len(labels) + 4], fill=_BLACK)
        for i, (label, color) in enumerate(zip(labels, rgb)):
            y = 5 + i * line
            draw.rectangle([6, y, 18, y + 10], fill=tuple(int(c) for c in color), outline=_WHITE)
            draw.text((24, y - 1), str(label), fill=_WHITE, font=font)
    return np.asarray(picture)
