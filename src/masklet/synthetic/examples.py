"""Clips with a known disappearance (exit, occlusion) and example / query scene sets."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError
from .base import _SOLID_KINDS, _TWO_PI, SHAPE_KINDS, Clip, _check_count, _check_seed, _check_size, min_visible_area
from .clips import _clip, _render, _Track
from .render import _background, _camera, _finish
from .shapes import _draw, _random_shape, _rect_sdf, _Shape
from .style import _distinct_color, _random_texture

EVENT_KINDS = ("exit", "occlusion")


def make_event_clip(seed: int, event: str = "exit", num_frames: int = 24, size: int | tuple[int, int] = 128) -> Clip:
    """A clip whose object 1 disappears for several frames and comes back, fast enough that its
    visible area drops from whole to nothing within about two frames.

    ``event="exit"``: object 1 moves out over the right border and returns, bouncing between the
    middle of the frame and a turning point out of view (``motions`` "exit").
    ``event="occlusion"``: object 1 stays near the centre while a larger object 2 passes over it
    and covers it completely (``motions`` "occluded", "occluder"). The exact visible masks tell
    on which frames the object is seen.
    """
    seed = _check_seed(seed)
    num_frames = _check_count(num_frames, "num_frames", 16)
    h, w = _check_size(size)
    if event not in EVENT_KINDS:
        raise InvalidInputError(f"event: expected one of {EVENT_KINDS}, got {event!r}")
    rng = np.random.default_rng(seed)
    side = min(h, w)
    image_bg, bg_kind, bg_colors = _background(rng, h, w)
    gone = num_frames // 3  # frames spent out of sight
    hide_at = num_frames // 4  # about the first frame the object is out of sight
    if event == "exit":
        target = _random_shape(rng, side, (0.22, 0.28), ("ellipse", "rectangle"), bg_colors)
        r = target.radius
        speed = r  # from wholly in to wholly out in about two frames
        x_hi = w - 1 + r + 0.5 * speed * gone  # reflect out of view: the object turns back
        start = w - 1 + r - speed * hide_at
        tracks = [
            _Track(
                target, "exit", (start, 0.5 * h), (speed, 0.0), (0.0, 0.0), 0.0, 0.0, 0.0, (0.5 * w, x_hi, -1e9, 1e9)
            )
        ]
    else:
        target = _random_shape(rng, side, (0.18, 0.22), ("ellipse", "rectangle"), bg_colors)
        r = target.radius
        speed = 0.7 * r
        a, b = r + 0.5 * speed * gone, 1.4 * r  # half sides of the cover: it hides the target `gone` frames
        color = _distinct_color(rng, bg_colors + [target.texture.c1])
        cover = _Shape(
            "rectangle", _rect_sdf(a, b, 0.0), math.hypot(a, b), _random_texture(rng, math.hypot(a, b), color)
        )
        cx, cy = 0.5 * w, 0.5 * h
        x0 = cx + r - a - speed * hide_at  # the cover's left edge reaches the target's at hide_at
        tracks = [
            _Track(target, "occluded", (cx, cy), (0.0, 0.0), (0.0, 0.0), 0.0, 0.0, 0.0, None),
            _Track(cover, "occluder", (x0, cy), (speed, 0.0), (0.0, 0.0), 0.0, 0.0, 0.0, None),
        ]
    n = len(tracks)
    order = np.arange(n)  # the cover is drawn last, in front
    noise, blur = _camera(rng)
    frames = np.empty((num_frames, h, w, 3), dtype=np.uint8)
    masks = np.empty((num_frames, n, h, w), dtype=bool)
    amodal = np.zeros((num_frames, n), dtype=np.int64)
    ids = np.arange(n, dtype=np.int16)[:, None, None]
    for t in range(num_frames):
        image, labels, amodal[t] = _render(image_bg, tracks, order, t)
        masks[t] = labels[None] == ids
        frames[t] = _finish(rng, image, noise, min(blur, False))
    return _clip(frames, masks, amodal, tracks, bg_kind, seed)


@dataclass(frozen=True, eq=False)
class ExampleSet:
    """The same objects on support scenes and on query scenes (moved, scaled, partly hidden).

    ``masks[k][n]`` is object n's visible mask on image k (all False where it is absent); images
    ``0 .. num_support - 1`` are the support images, the rest the queries.
    """

    images: np.ndarray  # (K, H, W, 3) uint8
    masks: np.ndarray  # (K, N, H, W) bool
    num_support: int
    seed: int


def make_example_set(
    seed: int,
    num_objects: int = 2,
    num_support: int = 2,
    num_query: int = 20,
    size: int | tuple[int, int] = 256,
    absent_share: float = 0.2,
) -> ExampleSet:
    """Objects drawn on every support scene and, in each query scene, each present with
    probability ``1 - absent_share`` at a new position, angle and scale (0.75..1.3), with a
    random distractor shape and a chance of a shape partly covering it."""
    seed = _check_seed(seed)
    num_objects = _check_count(num_objects, "num_objects")
    num_support = _check_count(num_support, "num_support")
    num_query = _check_count(num_query, "num_query", 0)
    h, w = _check_size(size)
    if not 0.0 <= float(absent_share) < 1.0:
        raise InvalidInputError(f"absent_share: expected a number in [0, 1), got {absent_share!r}")
    rng = np.random.default_rng(seed)
    side = min(h, w)
    _, _, first_colors = _background(rng, h, w)
    shapes: list[_Shape] = []
    for _ in range(num_objects):
        shapes.append(_random_shape(rng, side, (0.2, 0.3), _SOLID_KINDS, first_colors + [s.texture.c1 for s in shapes]))
    count = num_support + num_query
    images = np.empty((count, h, w, 3), np.uint8)
    masks = np.zeros((count, num_objects, h, w), bool)
    min_area = min_visible_area(h, w)
    for k in range(count):
        for _ in range(50):
            bg, _, bg_colors = _background(rng, h, w)
            labels = np.full((h, w), -1, np.int16)
            image = bg.copy()
            query = k >= num_support
            present = [not query or rng.random() >= absent_share for _ in shapes]
            avoid = bg_colors + [s.texture.c1 for s in shapes]
            distractor = _random_shape(rng, side, (0.15, 0.25), SHAPE_KINDS, avoid)
            _draw(
                image,
                labels,
                num_objects,
                distractor,
                (rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, _TWO_PI), 1.0),
            )
            for n, shape in enumerate(shapes):
                if not present[n]:
                    continue
                scale = rng.uniform(0.75, 1.3) if query else rng.uniform(0.9, 1.1)
                margin = 0.6 * shape.radius * scale
                pose = (
                    rng.uniform(margin, w - margin),
                    rng.uniform(margin, h - margin),
                    rng.uniform(0, _TWO_PI) if query else rng.uniform(-0.3, 0.3),
                    scale,
                )
                _draw(image, labels, n, shape, pose)
            if query and rng.random() < 0.5:  # a shape over part of one object
                n = int(rng.integers(num_objects))
                ys, xs = np.nonzero(labels == n)
                if len(ys):
                    cover = _random_shape(rng, side, (0.1, 0.16), _SOLID_KINDS, avoid)
                    i = int(rng.integers(len(ys)))
                    _draw(image, labels, num_objects + 1, cover, (float(xs[i]), float(ys[i]), 0.0, 1.0))
            visible = np.bincount(labels.ravel() + 1, minlength=num_objects + 3)[1 : num_objects + 1]
            if all(visible[n] >= 4 * min_area for n in range(num_objects) if present[n]):
                break
        masks[k] = labels[None] == np.arange(num_objects, dtype=np.int16)[:, None, None]
        noise, _ = _camera(rng)
        images[k] = _finish(rng, image, min(noise, 3.0), False)
    return ExampleSet(images=images, masks=masks, num_support=num_support, seed=seed)
