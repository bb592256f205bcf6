"""Synthetic scenes: textured shapes over a background with the exact visible mask of each."""

from __future__ import annotations

import math

import numpy as np

from .base import (
    _SCENE_SIZE,
    _TWO_PI,
    MAX_OBJECTS,
    SHAPE_KINDS,
    Scene,
    _check_range,
    _check_seed,
    _check_size,
    min_visible_area,
)
from .render import _background, _camera, _finish
from .shapes import _draw, _random_shape, _Shape
from .style import _PLAIN, _Style, _style


def _scene_once(rng: np.random.Generator, h: int, w: int, lo: int, hi: int, seed: int, style: _Style = _PLAIN) -> Scene:
    """One attempt at a scene (may end with no instance above the visibility threshold)."""
    side = min(h, w)
    image, bg_kind, bg_colors = _background(rng, h, w, style.gray)
    labels = np.full((h, w), -1, dtype=np.int16)
    shapes: list[_Shape] = []
    centres: list[tuple[float, float, float]] = []
    for i in range(int(rng.integers(lo, hi + 1))):
        avoid = bg_colors + [s.texture.c1 for s in shapes]
        shape = _random_shape(rng, side, _SCENE_SIZE, SHAPE_KINDS, avoid, style)
        if centres and rng.random() < 0.4:  # overlap an earlier shape
            px, py, pr = centres[int(rng.integers(len(centres)))]
            ang, dist = rng.uniform(0, _TWO_PI), rng.uniform(0.3, 1.0) * (pr + shape.radius)
            x, y = px + dist * math.cos(ang), py + dist * math.sin(ang)
        else:
            x, y = rng.uniform(0.0, 1.0) * w, rng.uniform(0.0, 1.0) * h
        _draw(image, labels, i, shape, (x, y, rng.uniform(0, _TWO_PI), 1.0))
        shapes.append(shape)
        centres.append((x, y, shape.radius))
    areas = np.bincount(labels.ravel() + 1, minlength=len(shapes) + 1)[1:]
    keep = np.flatnonzero(areas >= min_visible_area(h, w))
    masks = labels[None] == keep.astype(np.int16)[:, None, None]
    noise, blur = _camera(rng)
    return Scene(
        image=_finish(rng, image, noise, blur, style.gray),
        masks=masks,
        kinds=tuple(shapes[i].kind for i in keep),
        textures=tuple(shapes[i].texture.kind for i in keep),
        colors=np.array([np.rint(shapes[i].texture.c1) for i in keep], np.uint8).reshape(-1, 3),
        background=bg_kind,
        seed=seed,
        grayscale=style.gray,
    )


def make_scene(
    seed: int,
    size: int | tuple[int, int] = 256,
    num_shapes: tuple[int, int] = (2, 6),
    grayscale_share: float = 0.0,
    multicolor_share: float = 0.0,
) -> Scene:
    """A random image of ``num_shapes`` (inclusive range) shapes; at least one visible instance.

    ``grayscale_share``: chance that the scene is drawn in greys; ``multicolor_share``: chance per
    shape of a 3-5 colour texture (MULTICOLOR_TEXTURE_KINDS), which changes that shape's colours
    only. Both 0 by default, which keeps the scenes of every seed as they were.
    """
    seed = _check_seed(seed)
    h, w = _check_size(size)
    lo, hi = _check_range(num_shapes, "num_shapes", 1, MAX_OBJECTS)
    style = _style(seed, grayscale_share, multicolor_share)
    rng = np.random.default_rng(seed)
    scene = _scene_once(rng, h, w, lo, hi, seed, style)
    for _ in range(100):
        if len(scene.masks):
            break
        scene = _scene_once(rng, h, w, lo, hi, seed, style)
    return scene
