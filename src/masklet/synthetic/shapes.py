"""Shapes as signed distance fields in local coordinates, and drawing them into an image."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .base import _TWO_PI, Field, FloatArray
from .style import _PLAIN, _distinct_color, _multicolor_texture, _random_texture, _Style, _Texture


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
