"""The two dataset formats masklet writes, spelled once: COCO instance documents and DAVIS index PNGs.

COCO (the CLI's ``masklet amg``, the synthetic scene datasets): one category, ``object`` (id 1).
DAVIS (the video writers, the synthetic clip datasets): an 8-bit palette PNG whose pixel value is
the object id (0 = background), coloured with the PASCAL VOC / DAVIS colormap.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .io import palette

#: The single COCO category of class-agnostic masks.
OBJECT_CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}


def coco_document(
    info: dict[str, Any], images: list[dict[str, Any]], annotations: list[dict[str, Any]]
) -> dict[str, Any]:
    """A COCO instances document with the one ``object`` category (pycocotools reads it as is)."""
    return {"info": info, "images": images, "annotations": annotations, "categories": [dict(OBJECT_CATEGORY)]}


def davis_colormap() -> np.ndarray:
    """(256, 3) uint8 colours of a DAVIS index PNG: entry 0 (background) black, then :func:`palette`."""
    return np.concatenate([np.zeros((1, 3), np.uint8), palette(255)])


def save_davis_png(ids: np.ndarray, path: str | os.PathLike) -> None:
    """Save an (H, W) uint8 map of object ids (0 = background) as a DAVIS palette PNG."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(ids, dtype=np.uint8))
    image.putpalette(davis_colormap().tobytes())  # "L" -> "P"
    image.save(path)
