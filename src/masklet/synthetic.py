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
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from masklet.errors import InvalidInputError

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
    """XYXY inclusive boxes of (N, H, W) masks; zeros for empty masks."""
    n, h, w = masks.shape
    rows, cols = np.any(masks, axis=2), np.any(masks, axis=1)
    top, bottom = rows.argmax(axis=1), h - 1 - rows[:, ::-1].argmax(axis=1)
    left, right = cols.argmax(axis=1), w - 1 - cols[:, ::-1].argmax(axis=1)
    boxes = np.stack([left, top, right, bottom], axis=1).astype(np.float32)
    boxes[~np.any(rows, axis=1)] = 0.0
    return boxes.reshape(n, 4)


def min_visible_area(height: int, width: int) -> int:
    """Fewest visible pixels an instance needs (0.4% of the image, at least 40).

    Smaller slivers are drawn as clutter but carry no mask: at SAM2's quarter-resolution mask
    output they cannot be segmented to a meaningful IoU, and would dominate a mean IoU.
    """
    return max(40, math.ceil(0.004 * height * width))


# ---------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    """True for Python / numpy integers, False for bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_seed(seed: object) -> int:
    """Validate a seed: a non-negative int."""
    if not _is_int(seed) or int(seed) < 0:  # type: ignore[call-overload]
        raise InvalidInputError(f"seed: expected a non-negative int, got {seed!r}")
    return int(seed)  # type: ignore[call-overload]


def _check_size(size: object) -> tuple[int, int]:
    """Validate ``size`` (int or (height, width)) and return (height, width)."""
    hw = (size, size) if _is_int(size) else size
    if (
        not isinstance(hw, (tuple, list))
        or len(hw) != 2
        or not all(_is_int(s) and MIN_SIZE <= int(s) <= MAX_SIZE for s in hw)
    ):
        raise InvalidInputError(
            f"size: expected an int or (height, width) of ints in [{MIN_SIZE}, {MAX_SIZE}], "
            f"got {size!r}"
        )
    return int(hw[0]), int(hw[1])


def _check_range(value: object, name: str, low: int, high: int) -> tuple[int, int]:
    """Validate an inclusive (lo, hi) int range with low <= lo <= hi <= high."""
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(_is_int(v) for v in value)
        or not low <= int(value[0]) <= int(value[1]) <= high
    ):
        raise InvalidInputError(
            f"{name}: expected (lo, hi) ints with {low} <= lo <= hi <= {high}, got {value!r}"
        )
    return int(value[0]), int(value[1])


def _check_count(value: object, name: str, low: int = 1) -> int:
    """Validate an int >= low."""
    if not _is_int(value) or int(value) < low:  # type: ignore[call-overload]
        raise InvalidInputError(f"{name}: expected an int >= {low}, got {value!r}")
    return int(value)  # type: ignore[call-overload]


# ---------------------------------------------------------------------------------------------
# colours and textures
# ---------------------------------------------------------------------------------------------


def _random_color(rng: np.random.Generator, gray: bool = False) -> np.ndarray:
    """A random colour (3,) float32 in [0, 255] drawn in HSV (some greys, varied brightness);
    ``gray``: the same draws with no saturation, a grey of that brightness."""
    hue = rng.random() * 6.0
    sat = rng.uniform(0.0, 0.15) if rng.random() < 0.15 else rng.uniform(0.35, 1.0)
    val = rng.uniform(0.15, 1.0)
    if gray:
        sat = 0.0
    i, f = int(hue) % 6, hue - int(hue)
    p, q, t = val * (1 - sat), val * (1 - sat * f), val * (1 - sat * (1 - f))
    rgb = [(val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q)][i]
    return np.array(rgb, dtype=np.float32) * 255.0


def _distinct_color(
    rng: np.random.Generator, avoid: Sequence[np.ndarray], gray: bool = False
) -> np.ndarray:
    """A random colour at least ~60 RGB units away from every colour in ``avoid`` (best effort)."""
    best, best_dist = _random_color(rng, gray), -1.0
    for _ in range(12):
        color = _random_color(rng, gray)
        dist = min((float(np.linalg.norm(color - a)) for a in avoid), default=math.inf)
        if dist >= 60.0:
            return color
        if dist > best_dist:
            best, best_dist = color, dist
    return best


def _second_color(rng: np.random.Generator, c1: np.ndarray, gray: bool = False) -> np.ndarray:
    """The other colour of a two-colour texture: a darker / lighter shade or another hue."""
    roll = rng.random()
    if roll < 0.35:
        return c1 * rng.uniform(0.3, 0.65)
    if roll < 0.6:
        return c1 + (255.0 - c1) * rng.uniform(0.35, 0.7)
    return _random_color(rng, gray)


def _wave_field(rng: np.random.Generator, scale: float, waves: int = 3) -> Field:
    """Smooth random field in [0, 1]: a sum of plane waves with periods ~0.4..1.5 x ``scale``."""
    ang = rng.uniform(0.0, _TWO_PI, waves)
    freq = _TWO_PI / (scale * rng.uniform(0.4, 1.5, waves))
    fx = (freq * np.cos(ang)).astype(np.float32)
    fy = (freq * np.sin(ang)).astype(np.float32)
    phase = rng.uniform(0.0, _TWO_PI, waves).astype(np.float32)
    gain = float(rng.uniform(0.8, 2.0)) / math.sqrt(waves)

    def field(u: FloatArray, v: FloatArray) -> FloatArray:
        acc = np.sin(u * fx[0] + v * fy[0] + phase[0])
        for k in range(1, waves):
            acc += np.sin(u * fx[k] + v * fy[k] + phase[k])
        return 0.5 + 0.5 * np.tanh(acc * gain)

    return field


def _pattern_field(rng: np.random.Generator, kind: str, extent: float, period: float) -> Field:
    """A [0, 1] field: gradient across ``extent``, stripes / checker of ``period``, or noise."""
    ang = rng.uniform(0.0, _TWO_PI)
    ca, sa = math.cos(ang), math.sin(ang)
    if kind == "gradient":
        return lambda u, v: np.clip((u * ca + v * sa) / extent + 0.5, 0.0, 1.0)
    if kind == "stripes":
        sharp, phase = rng.uniform(0.6, 3.0), rng.uniform(0.0, _TWO_PI)
        k = _TWO_PI / period
        return lambda u, v: np.clip(0.5 + sharp * np.sin((u * ca + v * sa) * k + phase), 0.0, 1.0)
    if kind == "checker":
        ox, oy = rng.uniform(0.0, period, 2)
        return lambda u, v: (
            (np.floor((u * ca + v * sa) / period + ox) + np.floor((v * ca - u * sa) / period + oy))
            % 2.0
        )
    return _wave_field(rng, extent)


@dataclass(frozen=True)
class _Texture:
    """Colouring of a shape: ``c1 + field(u, v) * (c2 - c1)`` in the shape's own coordinates."""

    kind: str
    c1: np.ndarray
    c2: np.ndarray
    field: Field | None
    paint: Callable[[FloatArray, FloatArray], np.ndarray] | None = None  # multi-colour: (h, w, 3)

    def colors(self, u: FloatArray, v: FloatArray) -> np.ndarray:
        """(h, w, 3) colours at local coordinates, or (3,) for a flat texture."""
        if self.paint is not None:
            return self.paint(u, v)
        if self.field is None:
            return self.c1
        t = self.field(u, v).astype(np.float32, copy=False)
        return self.c1 + t[..., None] * (self.c2 - self.c1)


def _random_texture(
    rng: np.random.Generator, radius: float, c1: np.ndarray, gray: bool = False
) -> _Texture:
    """A random texture for a shape of bounding ``radius`` (px) with base colour ``c1``."""
    kind = TEXTURE_KINDS[int(rng.integers(len(TEXTURE_KINDS)))]
    if kind == "flat":
        return _Texture(kind, c1, c1, None)
    c2 = np.clip(_second_color(rng, c1, gray), 0.0, 255.0).astype(np.float32)
    period = rng.uniform(max(4.0, 0.15 * radius), max(7.0, 0.8 * radius))
    return _Texture(kind, c1, c2, _pattern_field(rng, kind, 2.0 * radius, period))


def _multicolor_texture(
    rng: np.random.Generator, radius: float, c1: np.ndarray, gray: bool = False
) -> _Texture:
    """3 to 5 mutually distinct colours (``c1`` first) in one shape: Voronoi patches or bands.

    Hard colour borders inside one object: what a model must learn not to split along.
    """
    kind = MULTICOLOR_TEXTURE_KINDS[int(rng.integers(len(MULTICOLOR_TEXTURE_KINDS)))]
    count = int(rng.integers(3, 6))
    colors = [np.asarray(c1, np.float32)]
    for _ in range(count - 1):
        colors.append(_distinct_color(rng, colors, gray))
    palette = np.clip(np.stack(colors), 0.0, 255.0).astype(np.float32)
    if kind == "patches":
        cx = (rng.uniform(-0.7, 0.7, count) * radius).astype(np.float32)
        cy = (rng.uniform(-0.7, 0.7, count) * radius).astype(np.float32)

        def paint(u: FloatArray, v: FloatArray) -> np.ndarray:
            d = (u[..., None] - cx) ** 2 + (v[..., None] - cy) ** 2
            return palette[np.argmin(d, axis=-1)]
    else:
        ang = rng.uniform(0.0, _TWO_PI)
        ca, sa = np.float32(math.cos(ang)), np.float32(math.sin(ang))
        period = np.float32(rng.uniform(0.25, 0.6) * radius)
        phase = np.float32(rng.uniform(0.0, count))

        def paint(u: FloatArray, v: FloatArray) -> np.ndarray:
            band = np.floor((u * ca + v * sa) / period + phase).astype(np.int64) % count
            return palette[band]

    return _Texture(kind, palette[0], palette[1], None, paint)


@dataclass(frozen=True)
class _Style:
    """How a scene or clip is coloured: greys only, and the share of multi-coloured shapes.

    ``rng`` draws the multi-colour choices apart from the geometry's generator, so turning
    multi-colour shapes on changes their colours only, never where shapes are or their masks.
    """

    gray: bool = False
    multicolor_share: float = 0.0
    rng: np.random.Generator | None = None


_PLAIN = _Style()


def _style(seed: int, grayscale_share: float, multicolor_share: float) -> _Style:
    """The style of the scene or clip of ``seed``: deterministic, independent of its geometry."""
    for name, share in (("grayscale_share", grayscale_share), ("multicolor_share", multicolor_share)):
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
            raise InvalidInputError(f"{name}: expected a share in [0, 1], got {share!r}")
    if grayscale_share == 0 and multicolor_share == 0:
        return _PLAIN
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STYLE_STREAM]))
    gray = bool(rng.random() < grayscale_share)
    return _Style(gray, float(multicolor_share), rng)


# ---------------------------------------------------------------------------------------------
# shapes: signed distance (px, negative inside) in local coordinates centred on the shape
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shape:
    """A shape kind, its signed-distance function, bounding radius (px) and texture."""

    kind: str
    sdf: Field
    radius: float
    texture: _Texture


def _ellipse_sdf(a: float, b: float, cx: float = 0.0, cy: float = 0.0) -> Field:
    """Approximate signed distance to an axis-aligned ellipse (exact sign)."""
    eps = 1e-6

    def sdf(u: FloatArray, v: FloatArray) -> FloatArray:
        x, y = (u - cx) / a, (v - cy) / b
        k0 = np.sqrt(x * x + y * y)
        k1 = np.sqrt((x / a) ** 2 + (y / b) ** 2)
        return (k0 - 1.0) * (k0 + eps) / (k1 + eps / min(a, b))

    return sdf


def _rect_sdf(a: float, b: float, corner: float) -> Field:
    """Signed distance to a rectangle of half-sides (a, b) with rounded corners."""

    def sdf(u: FloatArray, v: FloatArray) -> FloatArray:
        qx, qy = np.abs(u) - (a - corner), np.abs(v) - (b - corner)
        outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
        return outside + np.minimum(np.maximum(qx, qy), 0.0) - corner

    return sdf


def _polygon_sdf(vx: np.ndarray, vy: np.ndarray) -> Field:
    """Signed edge distance for a polygon star-shaped around the origin (exact sign)."""
    ang = np.mod(np.arctan2(vy, vx), _TWO_PI)
    order = np.argsort(ang)
    vx, vy, ang = vx[order], vy[order], ang[order].astype(np.float32)
    ex, ey = np.roll(vx, -1) - vx, np.roll(vy, -1) - vy
    length = np.hypot(ex, ey)
    nx, ny = (ey / length).astype(np.float32), (-ex / length).astype(np.float32)
    c = (nx * vx + ny * vy).astype(np.float32)

    def sdf(u: FloatArray, v: FloatArray) -> FloatArray:
        theta = np.mod(np.arctan2(v, u), np.float32(_TWO_PI))
        k = np.searchsorted(ang, theta, side="right") - 1  # -1 wraps to the last edge
        return nx[k] * u + ny[k] * v - c[k]

    return sdf


def _arc_sdf(r: float, half: float, thick: float) -> Field:
    """Signed distance to a round-capped arc stroke, origin at the arc's centroid."""
    shift = r * math.sin(half) / half
    ex, ey = r * math.cos(half), r * math.sin(half)

    def sdf(u: FloatArray, v: FloatArray) -> FloatArray:
        x, y = u + shift, np.abs(v)
        body = np.abs(np.hypot(x, y) - r)
        cap = np.hypot(x - ex, y - ey)
        return np.where(np.arctan2(y, x) <= half, body, cap) - thick

    return sdf


def _wave_sdf(length: float, amp: float, k: float, phase: float, thick: float) -> Field:
    """Approximate signed distance to a round-capped sine-wave stroke along u."""

    def sdf(u: FloatArray, v: FloatArray) -> FloatArray:
        uc = np.clip(u, -length, length)
        arg = uc * k + phase
        y = amp * np.sin(arg)
        body = np.abs(v - y) / np.sqrt(1.0 + (amp * k * np.cos(arg)) ** 2)
        cap = np.hypot(u - uc, v - y)
        return np.where(np.abs(u) <= length, body, cap) - thick

    return sdf


def _geometry(rng: np.random.Generator, kind: str, r: float) -> tuple[Field, float]:
    """Random geometry of ``kind`` whose bounding radius is about ``r`` px."""
    if kind == "ellipse":
        b = r if rng.random() < 0.35 else r * rng.uniform(0.35, 0.9)
        return _ellipse_sdf(r, b), r
    if kind == "rectangle":
        q = 1.0 if rng.random() < 0.2 else rng.uniform(0.25, 1.0)
        a = r / math.sqrt(1.0 + q * q)
        b = q * a
        corner = min(a, b) * rng.uniform(0.1, 0.5) if rng.random() < 0.3 else 0.0
        return _rect_sdf(a, b, corner), r
    if kind in ("triangle", "polygon", "star"):
        ang: np.ndarray
        rad: np.ndarray
        if kind == "triangle":
            n = 3
            ang = rng.uniform(0, _TWO_PI) + _TWO_PI / 3 * np.arange(3) + rng.uniform(-0.4, 0.4, 3)
            rad = r * rng.uniform(0.7, 1.0, 3)
        elif kind == "polygon":  # convex: vertices on an ellipse
            n = int(rng.integers(4, 9))
            jitter = rng.uniform(-0.3, 0.3, n) * math.pi / n
            ang = rng.uniform(0, _TWO_PI) + _TWO_PI / n * np.arange(n) + jitter
            rad = np.full(n, r)
        elif rng.random() < 0.6:  # regular-ish star
            n = 2 * int(rng.integers(4, 8))
            ang = rng.uniform(0, _TWO_PI) + _TWO_PI / n * np.arange(n)
            ang += rng.uniform(-0.15, 0.15, n) * math.pi / n
            rad = np.where(np.arange(n) % 2 == 0, r, r * rng.uniform(0.35, 0.65))
        else:  # irregular star-shaped blob
            n = int(rng.integers(6, 12))
            ang = rng.uniform(0, _TWO_PI) + _TWO_PI / n * np.arange(n)
            ang += rng.uniform(-0.3, 0.3, n) * math.pi / n
            rad = r * rng.uniform(0.4, 1.0, n)
        vx, vy = rad * np.cos(ang), rad * np.sin(ang)
        if kind == "polygon":
            vy = vy * rng.uniform(0.55, 1.0)
        return _polygon_sdf(vx, vy), r
    if kind == "ring":
        b = r * rng.uniform(0.6, 1.0)
        k = rng.uniform(0.35, 0.7)
        slack = (1.0 - k) * b * 0.35
        ox, oy = rng.uniform(-slack, slack, 2)
        outer, inner = _ellipse_sdf(r, b), _ellipse_sdf(k * r, k * b, ox, oy)
        return (lambda u, v: np.maximum(outer(u, v), -inner(u, v))), r
    if kind == "crescent":
        r2, off = r * rng.uniform(0.75, 1.05), r * rng.uniform(0.35, 0.8)

        def crescent(u: FloatArray, v: FloatArray) -> FloatArray:
            return np.maximum(np.hypot(u, v) - r, r2 - np.hypot(u - off, v))

        return crescent, r
    # stroke: thick arc or sine wave, scaled so its bounding radius is r
    thick_frac = rng.uniform(0.12, 0.25)
    if rng.random() < 0.6:
        half = rng.uniform(0.5, 2.5)
        m = math.sin(half) / half  # centroid offset per unit radius
        bound = math.sqrt(1.0 - 2.0 * m * math.cos(half) + m * m) + thick_frac
        radius = r / bound
        thick = max(2.5, radius * thick_frac)
        return _arc_sdf(radius, half, thick), r
    amp_frac, waves = rng.uniform(0.1, 0.35), int(rng.integers(1, 4))
    length = r / (math.sqrt(1.0 + amp_frac**2) + thick_frac)
    thick = max(2.5, length * thick_frac)
    k = math.pi * waves / (2.0 * length)
    return _wave_sdf(length, amp_frac * length, k, rng.uniform(0, _TWO_PI), thick), r


def _random_shape(
    rng: np.random.Generator,
    side: int,
    extent: tuple[float, float],
    kinds: Sequence[str],
    avoid: Sequence[np.ndarray],
    style: _Style = _PLAIN,
) -> _Shape:
    """A random textured shape whose extent (diameter) is a uniform fraction of ``side``."""
    kind = kinds[int(rng.integers(len(kinds)))]
    r = 0.5 * side * rng.uniform(extent[0], extent[1])
    sdf, radius = _geometry(rng, kind, r)
    c1 = _distinct_color(rng, avoid, style.gray)
    texture = _random_texture(rng, radius, c1, style.gray)
    if style.rng is not None and style.multicolor_share > 0 and style.rng.random() < style.multicolor_share:
        texture = _multicolor_texture(style.rng, radius, c1, style.gray)
    return _Shape(kind, sdf, radius, texture)


def _draw(
    image: np.ndarray,
    labels: np.ndarray,
    label: int,
    shape: _Shape,
    pose: tuple[float, float, float, float],
) -> int:
    """Composite ``shape`` at pose (x, y, angle, scale) into image / labels; return its area."""
    x, y, angle, scale = pose
    h, w = labels.shape
    reach = shape.radius * scale + 1.5
    x0, x1 = max(math.floor(x - reach), 0), min(math.ceil(x + reach) + 1, w)
    y0, y1 = max(math.floor(y - reach), 0), min(math.ceil(y + reach) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return 0
    dx = (np.arange(x0, x1, dtype=np.float32) - np.float32(x))[None, :]
    dy = (np.arange(y0, y1, dtype=np.float32) - np.float32(y))[:, None]
    cos_s, sin_s = np.float32(math.cos(angle) / scale), np.float32(math.sin(angle) / scale)
    u = dx * cos_s + dy * sin_s
    v = dy * cos_s - dx * sin_s
    dist = shape.sdf(u, v) * np.float32(scale)
    inside = dist < 0.0
    area = int(np.count_nonzero(inside))
    if area == 0:
        return 0
    alpha = np.clip(0.5 - dist, 0.0, 1.0)[..., None]
    region = image[y0:y1, x0:x1]
    region += alpha * (shape.texture.colors(u, v) - region)
    labels[y0:y1, x0:x1][inside] = label
    return area


# ---------------------------------------------------------------------------------------------
# backgrounds and camera effects
# ---------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise (h, w) in [0, 1]: a coarse random grid, smoothstep-interpolated."""
    gy = max(1, round(cells * h / max(h, w)))
    gx = max(1, round(cells * w / max(h, w)))
    grid = rng.random((gy + 1, gx + 1), dtype=np.float32)
    fy = np.arange(h, dtype=np.float32) * np.float32(gy / h)
    fx = np.arange(w, dtype=np.float32) * np.float32(gx / w)
    iy, ix = fy.astype(np.int64), fx.astype(np.int64)
    ty, tx = fy - iy, fx - ix
    ty, tx = (ty * ty * (3 - 2 * ty))[:, None], (tx * tx * (3 - 2 * tx))[None, :]
    top = grid[iy][:, ix] * (1 - tx) + grid[iy][:, ix + 1] * tx
    bottom = grid[iy + 1][:, ix] * (1 - tx) + grid[iy + 1][:, ix + 1] * tx
    out = top * (1 - ty) + bottom * ty
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) * np.float32(1.0 / max(hi - lo, 1e-6))


def _specks(rng: np.random.Generator, image: np.ndarray, density: float, gray: bool = False) -> None:
    """Scatter tiny random-coloured dots (radius <= 2.5 px) over ``image`` in place."""
    h, w, _ = image.shape
    count = int(density * h * w)
    if count == 0:
        return
    cy, cx = rng.integers(0, h, count), rng.integers(0, w, count)
    radius = rng.uniform(0.6, 2.5, count)
    colors = np.stack([_random_color(rng, gray) for _ in range(count)])
    off = np.arange(-2, 3)
    oy, ox = np.meshgrid(off, off, indexing="ij")
    hit = (oy**2 + ox**2)[None] <= (radius**2)[:, None, None]  # (count, 5, 5)
    yy, xx = cy[:, None, None] + oy[None], cx[:, None, None] + ox[None]
    hit &= (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    which = np.broadcast_to(np.arange(count)[:, None, None], hit.shape)[hit]
    image[yy[hit], xx[hit]] = colors[which]


def _background(
    rng: np.random.Generator, h: int, w: int, gray: bool = False
) -> tuple[np.ndarray, str, list[np.ndarray]]:
    """A random (h, w, 3) float32 background, its kind and its main colours."""
    kind = BACKGROUND_KINDS[int(rng.integers(len(BACKGROUND_KINDS)))]
    c1 = _random_color(rng, gray)
    c2 = c1 + (_random_color(rng, gray) - c1) * np.float32(rng.uniform(0.3, 1.0))
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    base = kind
    if kind == "clutter":  # a calm base under many specks
        base = ("flat", "gradient", "noise")[int(rng.integers(3))]
        c2 = c1 + (c2 - c1) * np.float32(0.5)
    colors = [c1, c2]
    if base == "flat":
        image = np.empty((h, w, 3), dtype=np.float32)
        image[:] = c1
    else:
        if base == "noise":
            t = _smooth_noise(rng, h, w, int(rng.integers(2, 8)))
        elif base == "gradient":
            t = _pattern_field(rng, "gradient", float(math.hypot(h, w)), 1.0)(
                xs - w / 2, ys - h / 2
            )
        else:
            period = rng.uniform(6.0, 48.0) if base == "stripes" else rng.uniform(8.0, 56.0)
            t = _pattern_field(rng, base, 1.0, period)(xs, ys)
        image = c1 + np.broadcast_to(t, (h, w))[..., None] * (c2 - c1)
        if base == "noise" and rng.random() < 0.5:  # a third colour in another noise field
            c3 = _random_color(rng, gray)
            colors.append(c3)
            t3 = _smooth_noise(rng, h, w, int(rng.integers(2, 6)))[..., None]
            image += (t3 * t3) * (c3 - image)
    if kind == "clutter":
        _specks(rng, image, rng.uniform(0.0015, 0.004), gray)
    elif rng.random() < 0.2:
        _specks(rng, image, rng.uniform(0.0002, 0.001), gray)
    return image.astype(np.float32, copy=False), kind, colors


def _blur(image: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur of an (H, W, 3) float image (edges replicated)."""
    p = np.concatenate([image[:1], image, image[-1:]], axis=0)
    image = (p[:-2] + 2 * p[1:-1] + p[2:]) * np.float32(0.25)
    p = np.concatenate([image[:, :1], image, image[:, -1:]], axis=1)
    return (p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]) * np.float32(0.25)


def _finish(
    rng: np.random.Generator, image: np.ndarray, noise: float, blur: bool, gray: bool = False
) -> np.ndarray:
    """Optional blur, uniform per-pixel noise of std ``noise``, rounding to uint8 (``gray``: the
    channels averaged, so the noise is grey too)."""
    if blur:
        image = _blur(image)
    if noise > 0:
        jitter = rng.random(image.shape, dtype=np.float32)
        jitter -= np.float32(0.5)
        jitter *= np.float32(noise * math.sqrt(12.0))
        image = image + jitter
    if gray:
        image = np.repeat(image.mean(axis=2, keepdims=True, dtype=np.float32), 3, axis=2)
    image += np.float32(0.5)
    return np.clip(image, 0.0, 255.0, out=image).astype(np.uint8)


def _camera(rng: np.random.Generator) -> tuple[float, bool]:
    """Per-image (or per-clip) noise std and whether to blur."""
    return float(rng.uniform(0.0, 6.0)), bool(rng.random() < 0.3)


# ---------------------------------------------------------------------------------------------
# scenes
# ---------------------------------------------------------------------------------------------


def _scene_once(
    rng: np.random.Generator, h: int, w: int, lo: int, hi: int, seed: int, style: _Style = _PLAIN
) -> Scene:
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


# ---------------------------------------------------------------------------------------------
# clips
# ---------------------------------------------------------------------------------------------


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
        if all(
            m <= x <= w - 1 - m and m <= y <= h - 1 - m for m, (x, y) in zip(margins, starts)
        ):
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
    return Clip(
        frames=frames,
        masks=masks,
        object_ids=np.arange(1, n + 1, dtype=np.int64),
        amodal_areas=amodal,
        kinds=tuple(tr.shape.kind for tr in tracks),
        textures=tuple(tr.shape.texture.kind for tr in tracks),
        motions=tuple(tr.motion for tr in tracks),
        background=bg_kind,
        seed=seed,
        grayscale=style.gray,
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
        raise InvalidInputError(
            f"num_objects: {objects[0]} objects cannot all be visible in a {h}x{w} frame"
        )
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


# ---------------------------------------------------------------------------------------------
# streams and datasets
# ---------------------------------------------------------------------------------------------


def _child_seed(seed: int, index: int) -> int:
    """The seed of item ``index`` of a stream started from ``seed``."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


def _stream(make: Callable[..., Any], seed: int, kwargs: dict[str, Any]) -> Iterator[Any]:
    """Validate eagerly (the first item is built now), then yield items 0, 1, 2, ... forever."""
    seed = _check_seed(seed)
    first = make(_child_seed(seed, 0), **kwargs)

    def items() -> Iterator[Any]:
        yield first
        index = 1
        while True:
            yield make(_child_seed(seed, index), **kwargs)
            index += 1

    return items()


def scene_stream(seed: int, **kwargs: Any) -> Iterator[Scene]:
    """Endless deterministic scenes; item i is ``make_scene(child_seed(seed, i), **kwargs)``."""
    return _stream(make_scene, seed, kwargs)


def clip_stream(seed: int, **kwargs: Any) -> Iterator[Clip]:
    """Endless deterministic clips; item i is ``make_clip(child_seed(seed, i), **kwargs)``."""
    return _stream(make_clip, seed, kwargs)


def save_scene_dataset(
    root: str | os.PathLike, count: int, seed: int, size: int | tuple[int, int] = 256
) -> Path:
    """Write ``count`` scenes COCO-style: ``root/images/*.png`` and ``root/annotations.json``."""
    from PIL import Image

    from masklet.masks import encode_rle, rle_to_bbox

    count = _check_count(count, "count")
    stream = scene_stream(seed, size=size)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index in range(count):
        scene = next(stream)
        name = f"{index:06d}.png"
        Image.fromarray(scene.image).save(root / "images" / name)
        h, w = scene.image.shape[:2]
        images.append(
            {"id": index + 1, "file_name": name, "height": h, "width": w, "seed": scene.seed}
        )
        for mask, rle, kind in zip(scene.masks, encode_rle(scene.masks), scene.kinds):
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": index + 1,
                "category_id": 1,
                "segmentation": rle,
                "area": int(np.count_nonzero(mask)),
                "bbox": rle_to_bbox(rle),
                "iscrowd": 0,
                "shape": kind,
            })
    dataset = {
        "info": {"description": "masklet synthetic scenes", "seed": int(seed)},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "object", "supercategory": "object"}],
    }
    (root / "annotations.json").write_text(json.dumps(dataset))
    return root


def save_clip_dataset(
    root: str | os.PathLike,
    count: int,
    seed: int,
    num_frames: int = 8,
    size: int | tuple[int, int] = 256,
) -> Path:
    """Write ``count`` clips DAVIS-style: ``JPEGImages/<clip>/`` and ``Annotations/<clip>/``."""
    from PIL import Image

    from masklet.io import palette

    count = _check_count(count, "count")
    stream = clip_stream(seed, num_frames=num_frames, size=size)
    root = Path(root)
    colors = np.concatenate([np.zeros((1, 3), np.uint8), palette(255)]).ravel().tolist()
    for index in range(count):
        clip = next(stream)
        name = f"clip{index:05d}"
        frame_dir, mask_dir = root / "JPEGImages" / name, root / "Annotations" / name
        frame_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        t_count, _, h, w = clip.masks.shape
        for t in range(t_count):
            Image.fromarray(clip.frames[t]).save(
                frame_dir / f"{t:05d}.jpg", quality=95, subsampling=0
            )
            ids = np.zeros((h, w), dtype=np.uint8)
            for obj_id, mask in zip(clip.object_ids, clip.masks[t]):
                ids[mask] = obj_id
            label = Image.frombytes("P", (w, h), ids.tobytes())
            label.putpalette(colors)
            label.save(mask_dir / f"{t:05d}.png")
    return root


# ---------------------------------------------------------------------------------------------
# clips with a known disappearance, and example / query scene sets
# ---------------------------------------------------------------------------------------------

EVENT_KINDS = ("exit", "occlusion")


def make_event_clip(
    seed: int, event: str = "exit", num_frames: int = 24, size: int | tuple[int, int] = 128
) -> Clip:
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
        tracks = [_Track(target, "exit", (start, 0.5 * h), (speed, 0.0), (0.0, 0.0), 0.0, 0.0, 0.0,
                         (0.5 * w, x_hi, -1e9, 1e9))]
    else:
        target = _random_shape(rng, side, (0.18, 0.22), ("ellipse", "rectangle"), bg_colors)
        r = target.radius
        speed = 0.7 * r
        a, b = r + 0.5 * speed * gone, 1.4 * r  # half sides of the cover: it hides the target `gone` frames
        color = _distinct_color(rng, bg_colors + [target.texture.c1])
        cover = _Shape("rectangle", _rect_sdf(a, b, 0.0), math.hypot(a, b), _random_texture(rng, math.hypot(a, b), color))
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
    return Clip(
        frames=frames, masks=masks, object_ids=np.arange(1, n + 1, dtype=np.int64), amodal_areas=amodal,
        kinds=tuple(tr.shape.kind for tr in tracks), textures=tuple(tr.shape.texture.kind for tr in tracks),
        motions=tuple(tr.motion for tr in tracks), background=bg_kind, seed=seed,
    )


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
            _draw(image, labels, num_objects, distractor, (rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, _TWO_PI), 1.0))
            for n, shape in enumerate(shapes):
                if not present[n]:
                    continue
                scale = rng.uniform(0.75, 1.3) if query else rng.uniform(0.9, 1.1)
                margin = 0.6 * shape.radius * scale
                pose = (rng.uniform(margin, w - margin), rng.uniform(margin, h - margin),
                        rng.uniform(0, _TWO_PI) if query else rng.uniform(-0.3, 0.3), scale)
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
