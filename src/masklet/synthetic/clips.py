"""Synthetic clips: objects moving over a few frames (occlusion, entering and leaving) with fixed ids."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError
from .base import (
    _CLIP_SIZE,
    _CROSS_SIZE,
    _SOLID_KINDS,
    _TWO_PI,
    MAX_OBJECTS,
    SHAPE_KINDS,
    Clip,
    _check_count,
    _check_range,
    _check_seed,
    _check_size,
    min_visible_area,
)
from .render import _background, _camera, _finish
from .shapes import _draw, _random_shape, _Shape
from .style import _PLAIN, _Style, _style


def _reflect(value: float, lo: float, hi: float) -> float:
    """Fold ``value`` into [lo, hi] by mirror reflection (a bouncing path)."""
    span = hi - lo
    if span <= 0:
        return lo
    y = (value - lo) % (2 * span)
    return lo + (2 * span - y if y > span else y)


@dataclass(frozen=True)
class _Track:
    """An object's shape and motion: quadratic path, spin, exponential zoom, optional bounce."""

    shape: _Shape
    motion: str
    p0: tuple[float, float]
    vel: tuple[float, float]
    acc: tuple[float, float]
    angle0: float
    spin: float
    zoom: float
    bounds: tuple[float, float, float, float] | None  # x_lo, x_hi, y_lo, y_hi to bounce in

    def pose(self, t: int) -> tuple[float, float, float, float]:
        """(x, y, angle, scale) at frame ``t``."""
        x = self.p0[0] + self.vel[0] * t + 0.5 * self.acc[0] * t * t
        y = self.p0[1] + self.vel[1] * t + 0.5 * self.acc[1] * t * t
        if self.bounds is not None:
            x = _reflect(x, self.bounds[0], self.bounds[1])
            y = _reflect(y, self.bounds[2], self.bounds[3])
        scale = min(max(math.exp(self.zoom * t), 0.6), 1.6)
        return x, y, self.angle0 + self.spin * t, scale


def _free_track(
    rng: np.random.Generator,
    shape: _Shape,
    h: int,
    w: int,
    num_frames: int,
    near: _Track | None,
) -> _Track:
    """A roaming, entering or leaving track; a roaming one starts next to ``near`` if given."""
    r = shape.radius
    roll = rng.random()
    motion = "roam" if roll < 0.6 else ("enter" if roll < 0.8 else "leave")
    max_speed = min(0.12 * r + 0.5, 0.03 * min(h, w))
    spin, zoom = rng.uniform(-0.06, 0.06), rng.uniform(-0.02, 0.02)
    if motion == "roam":
        x, y = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
        if near is not None:  # start partly over / under another object: occlusion changes
            ang, dist = rng.uniform(0, _TWO_PI), rng.uniform(0.5, 1.2) * (r + near.shape.radius)
            x = min(max(near.p0[0] + dist * math.cos(ang), 0.05 * w), 0.95 * w)
            y = min(max(near.p0[1] + dist * math.sin(ang), 0.05 * h), 0.95 * h)
        ang, speed = rng.uniform(0, _TWO_PI), rng.uniform(0.1, 1.0) * max_speed
        vel = (speed * math.cos(ang), speed * math.sin(ang))
        ax, ay = rng.uniform(-0.025, 0.025, 2) * max_speed  # gently curved path
        bounds = (0.0, w - 1.0, 0.0, h - 1.0)
        angle = rng.uniform(0, _TWO_PI)
        return _Track(shape, motion, (x, y), vel, (ax, ay), angle, spin, zoom, bounds)
    edge = int(rng.integers(4))  # 0 left, 1 right, 2 top, 3 bottom
    normal = [(-1.0, 0.0), (1.0, 0.0), (0.0, -1.0), (0.0, 1.0)][edge]  # outward
    if motion == "leave":
        depth = rng.uniform(0.0, 0.7) * r  # centre this far inside the border
        exit_at = rng.uniform(0.4, 1.0) * max(num_frames - 1, 1)
        speed = min((depth + r) / exit_at, max(0.2 * r, 1.0))
        direction = 1.0
    else:
        depth = rng.uniform(-0.35, 0.2) * r
        speed = rng.uniform(0.5, 1.0) * max_speed
        direction = -1.0
    along = rng.uniform(0.2, 0.8)
    x = (depth, w - 1 - depth, along * w, along * w)[edge]
    y = (along * h, along * h, depth, h - 1 - depth)[edge]
    side_speed = rng.uniform(-0.3, 0.3) * speed
    vel = (
        direction * speed * normal[0] + side_speed * normal[1],
        direction * speed * normal[1] + side_speed * normal[0],
    )
    angle = rng.uniform(0, _TWO_PI)
    return _Track(shape, motion, (x, y), vel, (0.0, 0.0), angle, spin, zoom, None)


def _crossing_tracks(
    rng: np.random.Generator,
    h: int,
    w: int,
    num_frames: int,
    avoid: list[np.ndarray],
    style: _Style = _PLAIN,
) -> list[_Track]:
    """Two solid objects on straight paths through one point at the middle frame."""
    side = min(h, w)
    mid = (num_frames - 1) // 2
    for _ in range(100):
        shapes = []
        for _ in range(2):
            shapes.append(_random_shape(rng, side, _CROSS_SIZE, _SOLID_KINDS, avoid, style))
            avoid = avoid + [shapes[-1].texture.c1]
        cx, cy = (0.5 + rng.uniform(-0.1, 0.1)) * w, (0.5 + rng.uniform(-0.1, 0.1)) * h
        ang_a = rng.uniform(0, _TWO_PI)
        ang_b = ang_a + rng.choice([-1.0, 1.0]) * rng.uniform(0.5 * math.pi, math.pi)
        ea = np.array([math.cos(ang_a), math.sin(ang_a)])
        eb = np.array([math.cos(ang_b), math.sin(ang_b)])
        ratio = rng.uniform(0.6, 1.0)
        gap = (shapes[0].radius + shapes[1].radius) * rng.uniform(0.9, 1.15)
        speed_a = gap / (max(mid, 1) * float(np.linalg.norm(ea - ratio * eb)))
        vels = [ea * speed_a, eb * speed_a * ratio]
        starts = [(cx - v[0] * mid, cy - v[1] * mid) for v in vels]
        margins = [0.5 * s.radius for s in shapes]
        if all(m <= x <= w - 1 - m and m <= y <= h - 1 - m for m, (x, y) in zip(margins, starts)):
            break
    tracks = []
    for shape, start, v in zip(shapes, starts, vels):
        angle, spin = rng.uniform(0, _TWO_PI), rng.uniform(-0.03, 0.03)
        zoom = rng.uniform(-0.01, 0.01)
        vel = (float(v[0]), float(v[1]))
        tracks.append(_Track(shape, "cross", start, vel, (0.0, 0.0), angle, spin, zoom, None))
    return tracks


def _new_track(
    rng: np.random.Generator,
    h: int,
    w: int,
    num_frames: int,
    extent: tuple[float, float],
    others: Sequence[_Track],
    avoid: Sequence[np.ndarray],
    style: _Style = _PLAIN,
) -> _Track:
    """A random free (roaming / entering / leaving) object track."""
    colors = list(avoid) + [tr.shape.texture.c1 for tr in others]
    shape = _random_shape(rng, min(h, w), extent, SHAPE_KINDS, colors, style)
    near = others[int(rng.integers(len(others)))] if others and rng.random() < 0.4 else None
    return _free_track(rng, shape, h, w, num_frames, near)


def _render(
    view: np.ndarray, tracks: Sequence[_Track], order: np.ndarray, t: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame ``t`` over background ``view``: float image, labels (-1 = none), amodal areas."""
    image = view.copy()
    h, w = image.shape[:2]
    labels = np.full((h, w), -1, dtype=np.int16)
    amodal = np.zeros(len(tracks), dtype=np.int64)
    for k in order:
        amodal[k] = _draw(image, labels, int(k), tracks[k].shape, tracks[k].pose(t))
    return image, labels, amodal


def _clip_once(
    rng: np.random.Generator,
    h: int,
    w: int,
    num_frames: int,
    objects: tuple[int, int],
    crossing: bool,
    seed: int,
    style: _Style = _PLAIN,
) -> Clip | None:
    """One attempt at a clip; None when frame 0 cannot show every object well enough."""
    side = min(h, w)
    pan = max(2, math.ceil(0.08 * side))
    canvas, bg_kind, bg_colors = _background(rng, h + 2 * pan, w + 2 * pan, style.gray)
    origin = rng.uniform(0, 2 * pan, 2)
    pan_vel = rng.uniform(-1.5, 1.5, 2) if rng.random() < 0.5 else np.zeros(2)
    n = 2 if crossing else int(rng.integers(objects[0], objects[1] + 1))
    shrink = min(1.0, math.sqrt(4.0 / n))  # smaller objects when there are many
    smallest = 2.0 * math.sqrt(min_visible_area(h, w)) / side  # extent well above the threshold
    extent = (max(_CLIP_SIZE[0] * shrink, smallest), max(_CLIP_SIZE[1] * shrink, 1.5 * smallest))
    tracks: list[_Track] = []
    if crossing:
        tracks = _crossing_tracks(rng, h, w, num_frames, bg_colors, style)
    else:
        for _ in range(n):
            tracks.append(_new_track(rng, h, w, num_frames, extent, tracks, bg_colors, style))
    order = rng.permutation(n)  # z-order: order[0] is drawn first (at the back)
    views = []  # the background of each frame: a window sliding over the canvas
    for t in range(num_frames):
        ox = int(np.rint(_reflect(origin[0] + pan_vel[0] * t, 0, 2 * pan)))
        oy = int(np.rint(_reflect(origin[1] + pan_vel[1] * t, 0, 2 * pan)))
        views.append(canvas[oy : oy + h, ox : ox + w])
    min_area = min_visible_area(h, w)
    for _ in range(40):  # re-draw the objects that frame 0 does not show well enough
        image, labels, amodal0 = _render(views[0], tracks, order, 0)
        visible = np.bincount(labels.ravel() + 1, minlength=n + 1)[1:]
        bad = np.flatnonzero(visible < min_area)
        if len(bad) == 0:
            break
        if crossing:
            tracks = _crossing_tracks(rng, h, w, num_frames, bg_colors, style)
            continue
        for k in bad:
            others = [tr for i, tr in enumerate(tracks) if i != k]
            tracks[k] = _new_track(rng, h, w, num_frames, extent, others, bg_colors, style)
    else:
        return None
    noise, blur = _camera(rng)
    frames = np.empty((num_frames, h, w, 3), dtype=np.uint8)
    masks = np.empty((num_frames, n, h, w), dtype=bool)
    amodal = np.zeros((num_frames, n), dtype=np.int64)
    ids = np.arange(n, dtype=np.int16)[:, None, None]
    for t in range(num_frames):
        if t > 0:
            image, labels, amodal0 = _render(views[t], tracks, order, t)
        amodal[t] = amodal0
        masks[t] = labels[None] == ids
        frames[t] = _finish(rng, image, noise, blur, style.gray)
    return _clip(frames, masks, amodal, tracks, bg_kind, seed, style.gray)


def _clip(
    frames: np.ndarray,
    masks: np.ndarray,
    amodal: np.ndarray,
    tracks: Sequence[_Track],
    background: str,
    seed: int,
    grayscale: bool = False,
) -> Clip:
    """The Clip of rendered frames, with ids 1..N and each track's shape, texture and motion."""
    return Clip(
        frames=frames,
        masks=masks,
        object_ids=np.arange(1, len(tracks) + 1, dtype=np.int64),
        amodal_areas=amodal,
        kinds=tuple(tr.shape.kind for tr in tracks),
        textures=tuple(tr.shape.texture.kind for tr in tracks),
        motions=tuple(tr.motion for tr in tracks),
        background=background,
        seed=seed,
        grayscale=grayscale,
    )


def make_clip(
    seed: int,
    num_frames: int = 8,
    size: int | tuple[int, int] = 256,
    num_objects: tuple[int, int] = (2, 4),
    crossing: bool = False,
    grayscale_share: float = 0.0,
    multicolor_share: float = 0.0,
) -> Clip:
    """A clip of moving objects, all visible in frame 0 (``crossing``: exactly two that cross).

    ``grayscale_share``: chance that the clip is drawn in greys; ``multicolor_share``: chance per
    object of a 3-5 colour texture (MULTICOLOR_TEXTURE_KINDS). Both 0 by default, which keeps the
    clips of every seed as they were.
    """
    seed = _check_seed(seed)
    num_frames = _check_count(num_frames, "num_frames", 3 if crossing else 1)
    h, w = _check_size(size)
    objects = _check_range(num_objects, "num_objects", 1, MAX_OBJECTS)
    if not isinstance(crossing, (bool, np.bool_)):
        raise InvalidInputError(f"crossing: expected a bool, got {crossing!r}")
    if objects[0] * min_visible_area(h, w) * 4 > h * w:
        raise InvalidInputError(f"num_objects: {objects[0]} objects cannot all be visible in a {h}x{w} frame")
    style = _style(seed, grayscale_share, multicolor_share)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        clip = _clip_once(rng, h, w, num_frames, objects, bool(crossing), seed, style)
        if clip is not None:
            return clip
    raise InvalidInputError(
        f"num_objects: could not show {objects[0]} objects in frame 0 of a {h}x{w} clip; "
        "use fewer objects or a larger size"
    )
