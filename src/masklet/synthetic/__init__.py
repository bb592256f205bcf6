"""Synthetic scenes and video clips with exact instance masks, for training without real data.

:func:`make_scene` draws textured shapes (ellipses, rectangles, triangles, convex polygons,
stars and blobs, rings, crescents, curved strokes) over a varied background and returns the
image with the exact *visible* mask of every instance. :func:`make_clip` moves such objects
over a few frames (smooth motion, occlusion, entering and leaving the frame) with fixed object
identities. Everything is deterministic in ``seed`` (``np.random.default_rng``), independent of
global random state. :func:`scene_stream` / :func:`clip_stream` give endless deterministic
streams; :func:`save_scene_dataset` writes COCO-style and :func:`save_clip_dataset` DAVIS-style
datasets.

Geometry: pixel ``(row, col)`` has its centre at ``(x, y) = (col, row)``. A pixel belongs to a
shape when its centre is inside it (masks are exact, binary); edges are anti-aliased in the
image only. Sizes are ``int`` (square) or ``(height, width)``. Scene instances with fewer than
:func:`min_visible_area` visible pixels are drawn but get no mask; clip masks are exact in every
frame (possibly tiny or empty) and every object is above that threshold in frame 0.

Datasets: item ``i`` of a dataset or stream started from ``seed`` is the item built from
``_child_seed(seed, i)`` (its ``seed`` field). COCO: ``images/000000.png`` ..., one category
(id 1), compressed-RLE segmentations, XYWH boxes as pycocotools computes them. DAVIS:
``JPEGImages/clip00000/00000.jpg`` (JPEG quality 95, no chroma subsampling) and
``Annotations/clip00000/00000.png`` (palette PNG, pixel value = object id, 0 = background).

Modules: ``base`` (constants, results, argument checks), ``style`` (colours, textures),
``shapes`` (signed distance fields, drawing), ``render`` (backgrounds, camera effects),
``scenes``, ``clips``, ``datasets`` (streams, COCO / DAVIS writers), ``examples`` (event clips,
example sets).
"""

from __future__ import annotations

from .base import (
    BACKGROUND_KINDS,
    MULTICOLOR_TEXTURE_KINDS,
    SHAPE_KINDS,
    TEXTURE_KINDS,
    Clip,
    Scene,
    min_visible_area,
)
from .clips import make_clip
from .datasets import clip_stream, save_clip_dataset, save_scene_dataset, scene_stream
from .examples import EVENT_KINDS, ExampleSet, make_event_clip, make_example_set
from .scenes import make_scene

__all__ = [
    "BACKGROUND_KINDS",
    "MULTICOLOR_TEXTURE_KINDS",
    "SHAPE_KINDS",
    "TEXTURE_KINDS",
    "EVENT_KINDS",
    "Clip",
    "ExampleSet",
    "Scene",
    "clip_stream",
    "make_clip",
    "make_event_clip",
    "make_example_set",
    "make_scene",
    "min_visible_area",
    "save_clip_dataset",
    "save_scene_dataset",
    "scene_stream",
]
